#!/usr/bin/env bash
# Installs the Debian packages Shardwise needs (only those missing), then configures and
# builds Release into build/. Idempotent: a second run only rebuilds what changed.
# Env: BUILD_DIR (default build), SHARDWISE_CUDA (AUTO|ON|OFF), JOBS (default nproc),
#      CMAKE_ARGS (extra configure flags), SKIP_BUILD=1 (packages only),
#      BUILD_TARGETS (space-separated targets to build, e.g. "shardwise"; default: all),
#      EXTRA_PACKAGES (more Debian packages, e.g. "clang-14 libclang-rt-14-dev" for fuzz/).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin
  libzmq3-dev cppzmq-dev
  libyaml-cpp-dev libopenblas-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libonig-dev libutf8proc-dev libicu-dev libpython3-dev python3-jinja2 libboost1.81-dev
  clang-format python3 gnuplot-nox
)
# shellcheck disable=SC2206
packages+=(${EXTRA_PACKAGES:-})
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[ "${SKIP_BUILD:-0}" = 1 ] && exit 0

# CUDA toolkit: preinstalled outside the package manager; make nvcc findable if it is there.
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi
if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then export PATH="$CUDA_HOME/bin:$PATH"; fi

build_dir="${BUILD_DIR:-build}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac
jobs="${JOBS:-$(nproc)}"
# shellcheck disable=SC2086  # CMAKE_ARGS holds several flags
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSHARDWISE_CUDA="${SHARDWISE_CUDA:-AUTO}" \
  -DMPIEXEC_PREFLAGS="--allow-run-as-root;--oversubscribe" ${CMAKE_ARGS:-} >/dev/null  # split on purpose
targets=()
# shellcheck disable=SC2206
[ -n "${BUILD_TARGETS:-}" ] && targets=(--target ${BUILD_TARGETS})
cmake --build "$build_dir" -j "$jobs" "${targets[@]}"

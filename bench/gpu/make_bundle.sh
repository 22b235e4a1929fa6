#!/usr/bin/env bash
# Builds here what the lent GPU machine runs and packs it into one tar.gz: a Release build with
# CUDA (90a;80-virtual), the stripped binaries bench/gpu/device_check.sh needs (shardwise,
# test_backend_ops, test_hf_fixtures, test_cli, kernel_bench) and the non-CUDA shared
# libraries they load (from ldd; that machine has none of our Debian packages). CUDA
# libraries are not packed: device_check.sh finds the device's own CUDA 13 ones.
#
# Env: BUILD_DIR (build-gpu-bundle), BUNDLE_DIR (gpu-bundle; both git-ignored), JOBS (nproc),
#      CMAKE_ARGS (extra configure flags), SKIP_BUILD=1 (pack what BUILD_DIR already holds).
# Output: $BUNDLE_DIR/shardwise-gpu.tar.gz with shardwise-gpu/{bin,lib,lib/fallback,MANIFEST}.
# Extend: a new binary for the device goes into `targets` below (and device_check.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
build_dir="${BUILD_DIR:-build-gpu-bundle}"
bundle_dir="${BUNDLE_DIR:-gpu-bundle}"
case "$build_dir" in /*) ;; *) build_dir="$root/$build_dir" ;; esac
case "$bundle_dir" in /*) ;; *) bundle_dir="$root/$bundle_dir" ;; esac
jobs="${JOBS:-$(nproc)}"
max_mib=48  # the bundle travels with the working tree: 64 MiB in all

# target name -> path of its executable in the build tree
declare -A targets=(
  [shardwise]=cli/shardwise
  [test_backend_ops]=tests/unit/test_backend_ops
  [test_hf_fixtures]=tests/unit/test_hf_fixtures
  [test_cli]=tests/unit/test_cli
  [kernel_bench]=bench/kernel_bench
)

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi
  if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then export PATH="$CUDA_HOME/bin:$PATH"; fi
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  fi
  echo "make_bundle: configuring $build_dir (Release, CUDA 90a;80-virtual)"
  # shellcheck disable=SC2086  # CMAKE_ARGS is a list of flags
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSHARDWISE_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=90a;80-virtual" \
    "-DMPIEXEC_PREFLAGS=--allow-run-as-root;--oversubscribe" "${launcher[@]}" ${CMAKE_ARGS:-} \
    >/dev/null
  echo "make_bundle: building ${!targets[*]} with $jobs jobs"
  cmake --build "$build_dir" -j "$jobs" --target "${!targets[@]}"
fi

stage_root="$(mktemp -d)"
trap 'rm -rf "$stage_root"' EXIT
stage="$stage_root/shardwise-gpu"
mkdir -p "$stage/bin" "$stage/lib/fallback"
for t in "${!targets[@]}"; do
  src="$build_dir/${targets[$t]}"
  [ -x "$src" ] || { echo "make_bundle: $src is missing (build it, or unset SKIP_BUILD)" >&2; exit 1; }
  cp "$src" "$stage/bin/$t"
  strip --strip-unneeded "$stage/bin/$t"
done

# Shared libraries: glibc stays (the device's own, newer one runs binaries built on an older
# glibc), CUDA stays (the device's CUDA 13), libstdc++/libgcc_s go to lib/fallback (used only
# when the device has none), everything else to lib/.
is_glibc() {
  case "$1" in
    linux-vdso.so.* | ld-linux*.so.* | libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | \
      librt.so.* | libresolv.so.* | libutil.so.* | libanl.so.* | libnsl.so.* | libnss_*) return 0 ;;
  esac
  return 1
}
is_cuda() {
  case "$1" in
    libcuda.so.* | libcudart.so.* | libcublas.so.* | libcublasLt.so.* | libnccl.so.* | \
      libnvidia-* | libnvrtc* | libnvJitLink*) return 0 ;;
  esac
  return 1
}
declare -A packed=()
for t in "${!targets[@]}"; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [ "$path" = "not" ]; then
      echo "make_bundle: ${targets[$t]} needs $name, which ldd cannot find here" >&2
      exit 1
    fi
    [ -n "${packed[$name]:-}" ] && continue
    if is_glibc "$name" || is_cuda "$name"; then continue; fi
    case "$name" in
      libstdc++.so.* | libgcc_s.so.*) dest="$stage/lib/fallback/$name" ;;
      *) dest="$stage/lib/$name" ;;
    esac
    cp -L "$path" "$dest"
    packed[$name]="$path"
  done < <(ldd "$build_dir/${targets[$t]}")
done

{
  echo "shardwise GPU bundle (bench/gpu/make_bundle.sh)"
  echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n), $(ldd --version | head -1)"
  echo "cuda architectures: 90a;80-virtual; nvcc: $(nvcc --version 2>/dev/null | tail -1 || echo '?')"
  echo "compiled-in source dir: $root (device_check.sh overrides it with SHARDWISE_TEST_SOURCE_DIR)"
  echo "binaries:"
  find "$stage/bin" -type f -printf '  %-18f %10s\n' | sort
  echo "libraries (from ldd):"
  for name in $(printf '%s\n' "${!packed[@]}" | sort); do echo "  $name <- ${packed[$name]}"; done
  echo "not packed: glibc (the device's own) and CUDA (device_check.sh finds the device's CUDA 13)"
} >"$stage/MANIFEST"

mkdir -p "$bundle_dir"
out="$bundle_dir/shardwise-gpu.tar.gz"
tar -C "$stage_root" -czf "$out.tmp" shardwise-gpu
mv "$out.tmp" "$out"
bytes=$(stat -c %s "$out")
unpacked=$(du -sb "$stage" | cut -f1)
awk -v o="$out" -v b="$bytes" -v u="$unpacked" -v nb="${#targets[@]}" -v nl="${#packed[@]}" \
  'BEGIN { printf "make_bundle: %s: %.1f MiB (%.1f MiB unpacked: %d binaries, %d libraries)\n",
           o, b / 1048576, u / 1048576, nb, nl }'
if [ "$bytes" -gt $((max_mib * 1048576)) ]; then
  echo "make_bundle: the bundle is over $max_mib MiB; with the working tree it would not travel" >&2
  exit 1
fi
echo "make_bundle: on the device: bash bench/gpu/device_check.sh (carry: $(realpath --relative-to="$root" "$bundle_dir"))"

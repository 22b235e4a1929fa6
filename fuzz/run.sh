#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang, ASan + UBSan; -DSHARDWISE_FUZZ=ON) and runs
# them: first every seed (fuzz/corpus/<h>) and regression input (fuzz/regressions/<h>) once,
# then fuzzing for SECONDS from those and from what earlier runs found (BUILD_DIR/corpus/<h>,
# not committed). Prints one line per harness (executions, seconds, result) and exits 1 if
# any input crashed; a crashing input is kept in BUILD_DIR/crashes/<h>/.
#   fuzz/run.sh                      # every harness, 20 s each (what CI runs)
#   fuzz/run.sh -t 600 -j 2 cluster_config model_config    # longer, two at a time
# Options: -t SECONDS (default 20), -j PARALLEL harnesses (default 1), -r (replay only).
# Env: BUILD_DIR (default build-fuzz), SKIP_BUILD=1, FUZZ_ARGS (extra libFuzzer flags, e.g.
# "-use_value_profile=1"), CXX_FUZZ (default clang++-14, else clang++).
# A crash found: fix it, then copy the input into fuzz/regressions/<h>/ so it is replayed.
# Crashes whose fix belongs to code outside this change: fuzz/known_failures.txt (see there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
all=(safetensors_header model_config cluster_config control_message step_protocol serve_message
     prompt_line openai_request)
all+=(tokenizer)
seconds=20
parallel=1
replay_only=0
while getopts "t:j:r" opt; do
  case "$opt" in
    t) seconds="$OPTARG" ;;
    j) parallel="$OPTARG" ;;
    r) replay_only=1 ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
harnesses=("$@")
((${#harnesses[@]})) || harnesses=("${all[@]}")

build="${BUILD_DIR:-build-fuzz}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cxx="${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++ || true)}"
  [ -n "$cxx" ] || { echo "fuzz/run.sh: no clang++ (apt-get install clang-14 libclang-rt-14-dev)"; exit 1; }
  cc="${cxx/clang++/clang}"
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHARDWISE_FUZZ=ON \
    -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" "${launcher[@]}" >/dev/null
  cmake --build "$build" -j "${JOBS:-$(nproc)}" \
    --target "${harnesses[@]/#/fuzz_}"
fi

# Leaks count as crashes; UBSan already aborts (-fno-sanitize-recover).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run_one() {
  local h="$1" bin="$build/fuzz/fuzz_$1" log="$build/logs/$1.log"
  local inputs=("fuzz/corpus/$h")
  [ -d "fuzz/regressions/$h" ] && inputs+=("fuzz/regressions/$h")
  mkdir -p "$build/corpus/$h" "$build/crashes/$h" "$build/logs"
  local start rc=0
  start=$(date +%s)
  # Replay: each committed input once (-runs=0 executes the corpus while loading it).
  "$bin" -runs=0 -print_final_stats=1 "${inputs[@]}" >"$log.replay" 2>&1 || rc=$?
  if [ "$rc" = 0 ] && [ "$replay_only" = 0 ]; then
    # shellcheck disable=SC2086
    # -max_len: new inputs stay small (regressions may be large; they were replayed above).
    "$bin" -max_total_time="$seconds" -timeout=10 -max_len=8192 -print_final_stats=1 \
      -artifact_prefix="$build/crashes/$h/" ${FUZZ_ARGS:-} \
      "$build/corpus/$h" "${inputs[@]}" >"$log" 2>&1 || rc=$?
  else
    cp "$log.replay" "$log"
  fi
  local execs
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1 ||
    true)
  local result=ok
  [ "$rc" = 0 ] || result="CRASH (rc $rc, see $log)"
  # A harness in fuzz/known_failures.txt crashes on the inputs of fuzz/known_crashes/<h>/
  # until a fix outside this branch lands: its crashes are reported, not failed on, as long
  # as every one of those inputs still crashes (when none does, the line must go).
  local known
  known=$(awk -v h="$h" '$1 == h { $1 = ""; print substr($0, 2) }' fuzz/known_failures.txt)
  if [ -n "$known" ]; then
    local still=0 total=0 f
    for f in fuzz/known_crashes/"$h"/*; do
      total=$((total + 1))
      "$bin" "$f" >/dev/null 2>&1 || still=$((still + 1))
    done
    if [ "$still" = 0 ]; then
      result="FIXED: none of fuzz/known_crashes/$h/ crashes any more; move them to"
      result+=" fuzz/regressions/$h/ and remove $h from fuzz/known_failures.txt"
      rc=1
    else
      [ "$rc" = 0 ] || result="known failure ($known; $still/$total known inputs crash)"
      rc=0
    fi
  fi
  printf '%-20s %12s execs %6s s  %s\n' "$h" "${execs:-?}" "$(($(date +%s) - start))" "$result"
  [ "$rc" = 0 ]
}

status=0
running=0
for h in "${harnesses[@]}"; do
  [ -x "$build/fuzz/fuzz_$h" ] || { echo "fuzz/run.sh: no harness $h in $build"; exit 2; }
  if ((running >= parallel)); then
    wait -n || status=1  # whichever finishes first frees its slot
    running=$((running - 1))
  fi
  run_one "$h" &
  running=$((running + 1))
done
while ((running > 0)); do
  wait -n || status=1
  running=$((running - 1))
done
exit "$status"

#!/usr/bin/env bash
# The one prepared device check of issue 13 (part B): unpacks the bundle from
# bench/gpu/make_bundle.sh, prints the machine (nvidia-smi, glibc, the CUDA 13 libraries it
# resolves) and runs each check with its own timeout, in the issue's order, so an early
# failure still leaves the rest:
#   1 correctness: test_backend_ops (CUDA cases), test_hf_fixtures (CUDA), test_cli (CUDA)
#   2 kernel_bench --json (ceilings measured in the same run)
#   3 end to end: shardwise generate --device cuda --dtype bfloat16 on qwen3-30b-a3b cut to
#     E2E_LAYERS layers (dummy weights): decode tok/s at batch 1, 8, 64 (128 new tokens),
#     TTFT of a 2048-token prompt, GPU memory (bench/gpu/e2e_generate.py)
#   4 baseline: transformers generate on the same config, dtype and GPU, random weights
#     (bench/gpu/hf_baseline.py; skipped without torch)
# Writes 8 files to $OUT (a new temp folder when OUT is unset), each well under 16 MiB,
# rewritten after every step: device_check.log, summary.json, test_backend_ops.json,
# test_hf_fixtures.json, test_cli.json, kernel_bench.json, e2e.json, hf_baseline.json.
# Runs on a machine without a GPU too (CUDA cases skip; the end-to-end step becomes a CPU
# smoke run on tiny-moe), so the scripts are tested before device time is spent.
#
# Usage: bash bench/gpu/device_check.sh [bundle.tar.gz]   (default gpu-bundle/shardwise-gpu.tar.gz)
# Env: DEVICE_CHECK_BUDGET_S (540: all steps; a step is skipped when under 30 s are left),
#      T_BACKEND_OPS, T_HF_FIXTURES, T_CLI, T_KERNEL_BENCH, T_E2E, T_BASELINE (per-step
#      timeouts, s), KERNEL_BENCH_ARGS (e.g. --quick), E2E_LAYERS (4), E2E_NEW_TOKENS (128),
#      HF_MODES (eager,compile), ONLY (comma list of steps to run: backend_ops, hf_fixtures,
#      cli, kernel_bench, e2e, baseline).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bundle="${1:-$root/gpu-bundle/shardwise-gpu.tar.gz}"
if [ -z "${OUT:-}" ]; then OUT="$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")"; fi
mkdir -p "$OUT"
export OUT
exec > >(tee -a "$OUT/device_check.log") 2>&1

budget_s="${DEVICE_CHECK_BUDGET_S:-540}"
start_s=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/device_check_work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
steps_tsv="$work/steps.tsv"
: >"$steps_tsv"

left_s() { echo $((budget_s - (SECONDS - start_s))); }
wanted() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# summary.json from what is there so far (machine facts, step results, parsed outputs).
write_summary() {
  python3 - "$OUT" "$steps_tsv" "$work/machine.json" <<'PY'
import json, os, sys
out, steps_tsv, machine = sys.argv[1:4]
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
s = {"machine": load(machine) or {}, "steps": []}
for line in open(steps_tsv):
    name, status, rc, secs, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    step = {"step": name, "status": status, "exit_code": rc, "seconds": int(secs or 0)}
    if note:
        step["note"] = note
    g = load(os.path.join(out, name + ".json")) if name.startswith("test_") else None
    if g and "testsuites" in g:
        tests = [t for suite in g["testsuites"] for t in suite.get("testsuite", [])]
        step["tests"] = len(tests)
        step["skipped"] = sum(t.get("result") == "SKIPPED" for t in tests)
        failed = [f"{t.get('classname')}.{t.get('name')}" for t in tests if t.get("failures")]
        step["failed"] = len(failed)
        if failed:
            step["failed_tests"] = failed[:50]
    s["steps"].append(step)
kb = load(os.path.join(out, "kernel_bench.json"))
if kb:
    s["kernel_bench"] = {"device": kb.get("device"), "ceilings": kb.get("ceilings"),
                         "rows": len(kb.get("rows", []))}
e2e = load(os.path.join(out, "e2e.json"))
hf = load(os.path.join(out, "hf_baseline.json"))
if e2e:
    s["e2e"] = {r["name"]: {k: r.get(k) for k in ("exit_code", "decode_tokens_per_s",
                "ttft_ms_mean", "gpu_mem_peak_mib", "load_ms")} for r in e2e.get("runs", [])}
    s["e2e_model"] = e2e.get("label")
if hf:
    s["baseline"] = hf.get("skipped") or {f"{r['mode']}_b{r['batch']}": r.get(
        "decode_tokens_per_s", r.get("error")) for r in hf.get("runs", [])}
if e2e and hf and not hf.get("skipped"):
    ours = {r["batch"]: r.get("decode_tokens_per_s") for r in e2e.get("runs", [])
            if r["name"].startswith("decode_")}
    s["ratio_shardwise_over_baseline"] = {
        f"{r['mode']}_b{r['batch']}": round(ours[r["batch"]] / r["decode_tokens_per_s"], 3)
        for r in hf.get("runs", [])
        if ours.get(r["batch"]) and r.get("decode_tokens_per_s")}
with open(os.path.join(out, "summary.json.tmp"), "w") as f:
    json.dump(s, f, indent=1)
os.replace(os.path.join(out, "summary.json.tmp"), os.path.join(out, "summary.json"))
PY
}

record() {  # name status rc seconds note
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >>"$steps_tsv"
  write_summary
}

# run_step NAME TIMEOUT_S CMD...: runs CMD under its own timeout (cut to the budget left).
run_step() {
  local name=$1 limit=$2
  shift 2
  local left
  left=$(left_s)
  if ((left < 30)); then
    echo "=== [$name] skipped: ${left}s of the ${budget_s}s budget left"
    record "$name" skipped "" 0 "budget: ${left}s left"
    return
  fi
  ((limit > left - 10)) && limit=$((left - 10))
  echo
  echo "=== [$name] $(date -u +%H:%M:%S), timeout ${limit}s: $*"
  local t0=$SECONDS rc status
  timeout --kill-after=15 "$limit" "$@"
  rc=$?
  case $rc in
    0) status=pass ;;
    124 | 137) status=timeout ;;
    *) status=fail ;;
  esac
  echo "=== [$name] $status (exit $rc) in $((SECONDS - t0))s"
  record "$name" "$status" "$rc" "$((SECONDS - t0))"
}

# ---- the machine -----------------------------------------------------------------------------
echo "device_check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n) ($(uname -m), $(nproc) cores)"
echo "device_check: output in $OUT; budget ${budget_s}s"
echo "--- ldd --version: $(ldd --version 2>&1 | head -1)"
has_gpu=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  has_gpu=1
  echo "--- nvidia-smi"
  nvidia-smi
  gpu_line=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
else
  echo "--- nvidia-smi: no GPU visible (this run checks the scripts; CUDA cases will skip)"
  gpu_line="none"
fi

if [ ! -f "$bundle" ]; then
  echo "device_check: no bundle at $bundle (run bench/gpu/make_bundle.sh here, then carry its folder)"
  record unpack fail 1 0 "no bundle at $bundle"
  exit 1
fi
tar -xzf "$bundle" -C "$work" || { record unpack fail 1 0 "tar failed"; exit 1; }
b="$work/shardwise-gpu"
echo "--- bundle $(basename "$bundle"): $(du -h "$bundle" | cut -f1)"
sed -n '2,5p' "$b/MANIFEST"

# The device's own CUDA 13 libraries: the toolkit folders first, then any Python wheel that
# ships them, then a search of the usual roots.
find_lib_dir() {
  local name=$1 d
  for d in "${CUDA_HOME:-/usr/local/cuda}/lib64" "${CUDA_HOME:-/usr/local/cuda}/lib" \
    /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
    /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/$name" ] && { echo "$d"; return; }
  done
  local hit
  hit=$(timeout 60 find /usr/local /opt /usr/lib /usr/lib64 -name "$name" 2>/dev/null | head -1)
  [ -n "$hit" ] && dirname "$hit"
}
cuda_dirs=()
missing=()
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
  d=$(find_lib_dir "$lib")
  if [ -z "$d" ]; then
    missing+=("$lib")
    continue
  fi
  [[ " ${cuda_dirs[*]} " == *" $d "* ]] || cuda_dirs+=("$d")
done
ld_path="$b/lib"
for d in "${cuda_dirs[@]}"; do ld_path="$ld_path:$d"; done
export LD_LIBRARY_PATH="$ld_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$b"/bin/* 2>&1 | grep -E 'libstdc\+\+|libgcc_s|GLIBCXX|CXXABI' | grep -q "not found"; then
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$b/lib/fallback"
  echo "--- the system's libstdc++/libgcc_s do not serve these binaries: using the bundle's"
fi
echo "--- CUDA library folders: ${cuda_dirs[*]:-none}${missing[*]:+ (not found: ${missing[*]})}"
echo "--- LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$b/bin/shardwise" | grep -E "cudart|cublas|nccl|stdc\+\+|not found" | sed 's/^/    /'
unresolved=$(ldd "$b"/bin/* 2>&1 | grep "not found" | sort -u)
[ -n "$unresolved" ] && echo "device_check: unresolved libraries:" && echo "$unresolved"

python3 - "$work/machine.json" "$(uname -n)" "$(ldd --version 2>&1 | head -1)" "$gpu_line" \
  "${cuda_dirs[*]:-}" "$(sed -n 2p "$b/MANIFEST")" "$has_gpu" <<'PY'
import json, sys
path, host, glibc, gpu, cuda, commit, has_gpu = sys.argv[1:8]
json.dump({"host": host, "glibc": glibc, "gpu": gpu, "cuda_lib_dirs": cuda.split(),
           "bundle": commit, "has_gpu": has_gpu == "1"}, open(path, "w"), indent=1)
PY
record unpack pass 0 0 "${unresolved:+unresolved: $unresolved}"

export SHARDWISE_TEST_SOURCE_DIR="$root" SHARDWISE_TEST_CLI="$b/bin/shardwise"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"

# ---- 1. correctness ------------------------------------------------------------------------
cd "$work" || exit 1
wanted backend_ops && run_step test_backend_ops "${T_BACKEND_OPS:-240}" \
  "$b/bin/test_backend_ops" --gtest_filter='*cuda*:CudaAllocator.*' \
  --gtest_output="json:$OUT/test_backend_ops.json"
wanted hf_fixtures && run_step test_hf_fixtures "${T_HF_FIXTURES:-150}" \
  "$b/bin/test_hf_fixtures" --gtest_filter='*Cuda*' --gtest_output="json:$OUT/test_hf_fixtures.json"
wanted cli && run_step test_cli "${T_CLI:-180}" \
  "$b/bin/test_cli" --gtest_filter='CliCuda.*' --gtest_output="json:$OUT/test_cli.json"

# ---- 2. kernels against the measured ceilings ------------------------------------------------
# shellcheck disable=SC2086  # KERNEL_BENCH_ARGS is a list of flags
wanted kernel_bench && run_step kernel_bench "${T_KERNEL_BENCH:-300}" \
  "$b/bin/kernel_bench" ${KERNEL_BENCH_ARGS:-} --json "$OUT/kernel_bench.json"

# ---- 3. end to end ------------------------------------------------------------------------------
layers="${E2E_LAYERS:-4}"
model_dir="$work/qwen3-30b-a3b-${layers}l"
mkdir -p "$model_dir"
python3 - "$root/model/presets/qwen3-30b-a3b.json" "$model_dir/config.json" "$layers" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["num_hidden_layers"] = int(sys.argv[3])
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
if ((has_gpu)); then
  wanted e2e && run_step e2e "${T_E2E:-300}" python3 "$root/bench/gpu/e2e_generate.py" \
    --shardwise "$b/bin/shardwise" --model "$model_dir" \
    --label "qwen3-30b-a3b cut to $layers layers, dummy weights" --device cuda \
    --dtype bfloat16 --batches 1 8 64 --new-tokens "${E2E_NEW_TOKENS:-128}" \
    --ttft-prompt-len 2048 --out "$OUT/e2e.json"
else
  # No GPU: the same script on the CPU with tiny-moe, so every line of it has run here.
  wanted e2e && run_step e2e "${T_E2E:-300}" python3 "$root/bench/gpu/e2e_generate.py" \
    --shardwise "$b/bin/shardwise" --model tiny-moe --vocab 1024 \
    --label "tiny-moe, CPU smoke run (no GPU)" --device cpu --dtype float32 --batches 1 8 \
    --new-tokens 8 --ttft-prompt-len 256 --out "$OUT/e2e.json"
fi

# ---- 4. baseline ---------------------------------------------------------------------------------
wanted baseline && run_step hf_baseline "${T_BASELINE:-240}" python3 "$root/bench/gpu/hf_baseline.py" \
  --model-dir "$model_dir" --batches 1 64 --new-tokens "${E2E_NEW_TOKENS:-128}" --dtype bfloat16 \
  --modes "${HF_MODES:-eager,compile}" --out "$OUT/hf_baseline.json"

# ---- summary -----------------------------------------------------------------------------------
write_summary
echo
echo "=== device_check done in $((SECONDS - start_s))s; files in $OUT:"
find "$OUT" -maxdepth 1 -type f -printf '  %-24f %10s\n' | sort
python3 - "$OUT/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print("step               status   exit  secs  tests  skipped  failed")
for st in s["steps"]:
    print(f"{st['step']:<18} {st['status']:<8} {str(st['exit_code']):>4} {st['seconds']:>5} "
          f"{str(st.get('tests', '-')):>6} {str(st.get('skipped', '-')):>8} "
          f"{str(st.get('failed', '-')):>7}")
for key in ("e2e", "baseline", "ratio_shardwise_over_baseline"):
    if key in s:
        print(f"{key}: {json.dumps(s[key])}")
PY
if grep -qP '\t(fail|timeout)\t' "$steps_tsv"; then exit 1; fi
exit 0

#!/usr/bin/env bash
# What the front end costs: one `shardwise serve` (one process, or --config F under mpirun)
# driven by `bench serve` through the ZeroMQ token endpoint (--backend shardwise) and through
# the OpenAI HTTP API (--backend openai, streamed), alternately, same workload and seed, at each
# request rate; then the same with an abusive client beside the benchmark (15 MB junk frames
# and bodies, bench/abusive_client.py). Prints a table — output throughput ratio HTTP/ZeroMQ,
# TTFT p50 difference, and each backend's TTFT with abuse against without — and writes every
# result JSON plus summary.json to OUT_DIR.
#
#   bench/frontend_cost.sh [--rates "inf 20"] [--num-prompts 200] [--reps 2] [--out DIR]
#                          [--config F] [--no-abuse]
# Env: ABUSE (default "zmq http"): which endpoints the abusive client floods;
#      ABUSE_INTERVAL (default 0.5): seconds between its junk messages per endpoint (0: flood).
#
# The model is the tiny llama with the Llama 3 vocabulary that the tokenizer fixtures make
# (tests/tokenizer/make_fixtures.sh), with dummy weights.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rates="inf 20"
num_prompts=200
reps=2
out="$root/build/bench-results/frontend-cost"
config=""
abuse=1
while (($#)); do
  case "$1" in
    --rates) rates="$2"; shift 2 ;;
    --num-prompts) num_prompts="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --no-abuse) abuse=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "frontend_cost.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
bin="${SHARDWISE_BIN:-$root/build/cli/shardwise}"
[ -x "$bin" ] || { echo "frontend_cost.sh: no $bin (run launch/setup.sh)" >&2; exit 1; }
fixtures="$("$root/tests/tokenizer/make_fixtures.sh" "$root/build" | tail -n 1)"
model="$fixtures/tiny-model-llama-bpe"
py="$("$root/tests/pyref/setup.sh")/venv/bin/python"
mkdir -p "$out"
ready="$out/ready.json"
rm -f "$ready"
serve_args=(serve --port 0 --endpoint 'tcp://127.0.0.1:*' --ready-file "$ready" --drain-timeout 5)
if [ -n "$config" ]; then
  "$root/launch/mpirun/run.sh" --config "$config" "${serve_args[@]}" >"$out/serve.log" 2>&1 &
else
  "$bin" "${serve_args[@]}" --model "$model" --load-format dummy >"$out/serve.log" 2>&1 &
fi
server=$!
abuser=""
cleanup() {
  [ -n "$abuser" ] && kill "$abuser" 2>/dev/null
  if [ -f "$ready" ]; then kill -TERM "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$ready")" 2>/dev/null || true; fi
  wait "$server" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 600); do
  [ -f "$ready" ] && break
  kill -0 "$server" 2>/dev/null || { tail -20 "$out/serve.log" >&2; exit 1; }
  sleep 0.2
done
[ -f "$ready" ] || { echo "frontend_cost.sh: serve not ready in 120 s" >&2; exit 1; }
zmq_ep=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' "$ready")
http_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$ready")
run() {  # run NAME BACKEND RATE
  local target=(--endpoint "$zmq_ep")
  [ "$2" = openai ] && target=(--backend openai --base-url "$http_url")
  "$bin" bench serve "${target[@]}" --tokenizer "$model" --num-prompts "$num_prompts" \
    --request-rate "$3" --random-input-len 128 --random-output-len 32 --ignore-eos --seed 0 \
    --metric-percentiles 50,99 --no-progress --result-filename "$out/$1.json" >"$out/$1.txt" 2>&1
}
read -r -a rate_list <<<"$rates"
modes=(clean)
((abuse)) && modes+=(abused)
run warmup shardwise inf
for mode in "${modes[@]}"; do
  if [ "$mode" = abused ]; then
    # At the lowest priority: on one machine the abuser's own CPU would otherwise be measured
    # as the server's cost (a remote attacker spends its own machine's).
    abuse_args=()
    [[ "${ABUSE:-zmq http}" == *zmq* ]] && abuse_args+=(--zmq "$zmq_ep")
    [[ "${ABUSE:-zmq http}" == *http* ]] && abuse_args+=(--http "$http_url")
    nice -n 19 "$py" "$root/bench/abusive_client.py" "${abuse_args[@]}" \
      --interval "${ABUSE_INTERVAL:-0.5}" \
      >"$out/abuser.log" 2>&1 &
    abuser=$!
    sleep 2
  fi
  for rate in "${rate_list[@]}"; do
    for rep in $(seq "$reps"); do
      for backend in shardwise openai; do
        echo "=== $mode $backend at $rate req/s (run $rep)" >&2
        run "$mode-$backend-$rate-$rep" "$backend" "$rate"
      done
    done
  done
  if [ -n "$abuser" ]; then kill "$abuser"; wait "$abuser" 2>/dev/null || true; abuser=""; fi
done
python3 - "$out" "$reps" "${modes[*]}" "${rate_list[@]}" <<'PY'
import json, statistics, sys
out, reps, modes, rates = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4:]
def load(mode, backend, rate):
    runs = [json.load(open(f"{out}/{mode}-{backend}-{rate}-{r}.json")) for r in range(1, reps + 1)]
    return {k: statistics.median(j[k] for j in runs)
            for k in ("output_throughput", "p50_ttft_ms", "p99_ttft_ms", "p50_tpot_ms")} | {
        "failed": sum(j["num_prompts"] - j["completed"] for j in runs)}
rows = []
print(f"{'mode':>7} {'rate':>5} {'backend':>9} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} "
      f"{'TPOT p50':>9} {'failed':>6}   HTTP/ZMQ tok/s   HTTP-ZMQ TTFT p50 (ms)")
for mode in modes:
    for rate in rates:
        r = {b: load(mode, b, rate) for b in ("shardwise", "openai")}
        ratio = r["openai"]["output_throughput"] / r["shardwise"]["output_throughput"]
        dttft = r["openai"]["p50_ttft_ms"] - r["shardwise"]["p50_ttft_ms"]
        for b in ("shardwise", "openai"):
            j = r[b]
            row = dict(mode=mode, rate=rate, backend=b, **j)
            if b == "openai":
                row.update(throughput_ratio_http_over_zmq=ratio, ttft_p50_overhead_ms=dttft)
            if mode == "abused":
                clean = load("clean", b, rate)
                row["ttft_p50_vs_clean"] = j["p50_ttft_ms"] / clean["p50_ttft_ms"]
            rows.append(row)
            extra = f"   {ratio:14.3f}   {dttft:22.2f}" if b == "openai" else ""
            if mode == "abused":
                extra += f"   TTFT p50 x{row['ttft_p50_vs_clean']:.3f} vs clean"
            print(f"{mode:>7} {rate:>5} {b:>9} {j['output_throughput']:8.1f} {j['p50_ttft_ms']:9.2f} "
                  f"{j['p99_ttft_ms']:9.2f} {j['p50_tpot_ms']:9.2f} {j['failed']:6d}{extra}")
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
print(f"results: {out}/summary.json")
PY

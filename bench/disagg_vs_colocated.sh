#!/usr/bin/env bash
# Disaggregated vs colocated serving on the same ranks, same model, same workload and seed:
# `bench throughput` on launch/configs/cpu-local-disagg.yaml (prefill 1 + decode 1) and on
# cpu-local-mixed.yaml (2 mixed instances) at each request rate, the two runs of a rate back
# to back, then a table of goodput, throughput and latencies with the disaggregated/colocated
# ratio of goodput, and every result JSON in OUT_DIR (summary.json holds the table).
#
#   bench/disagg_vs_colocated.sh [--rates "6 10 14"] [--num-prompts 300] [--out DIR]
#                                [-- extra bench throughput args]
#
# Defaults: 300 prompts of 256 tokens (range ratio 0.5) x 64 output tokens, --ignore-eos,
# seed 0, goodput SLOs ttft:1000 tpot:50 (ms). Runs take about 2 x rates x (prompts / rate) s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rates="6 10 14"
num_prompts=300
out="$root/build/bench-results/disagg-vs-colocated"
extra=()
while (($#)); do
  case "$1" in
    --rates) rates="$2"; shift 2 ;;
    --num-prompts) num_prompts="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "disagg_vs_colocated.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
read -r -a rate_list <<<"$rates"
for rate in "${rate_list[@]}"; do
  for layout in disagg mixed; do
    echo "=== $layout at $rate req/s" >&2
    "$root/launch/mpirun/run.sh" --config "$root/launch/configs/cpu-local-$layout.yaml" \
      bench throughput --num-prompts "$num_prompts" --request-rate "$rate" \
      --random-input-len 256 --random-range-ratio 0.5 --random-output-len 64 --ignore-eos \
      --seed 0 --goodput ttft:1000 tpot:50 --metric-percentiles 50,99 --no-progress \
      --result-filename "$out/$layout-$rate.json" "${extra[@]}" >"$out/$layout-$rate.txt"
  done
done
python3 - "$out" "${rate_list[@]}" <<'EOF'
import json, sys
out, rates = sys.argv[1], sys.argv[2:]
rows = []
print(f"{'rate':>6} {'layout':>7} {'goodput':>8} {'req/s':>7} {'tok/s':>8} {'TTFT p50':>9} "
      f"{'TTFT p99':>9} {'TPOT p50':>9} {'TPOT p99':>9} {'preempt':>7}  goodput ratio")
for rate in rates:
    r = {l: json.load(open(f"{out}/{l}-{rate}.json")) for l in ("disagg", "mixed")}
    ratio = (r["disagg"]["request_goodput"] / r["mixed"]["request_goodput"]
             if r["mixed"]["request_goodput"] else float("inf"))
    for l in ("disagg", "mixed"):
        j = r[l]
        row = {"rate": float(rate), "layout": l, "goodput": j["request_goodput"],
               "request_throughput": j["request_throughput"],
               "output_throughput": j["output_throughput"],
               "p50_ttft_ms": j["p50_ttft_ms"], "p99_ttft_ms": j["p99_ttft_ms"],
               "p50_tpot_ms": j["p50_tpot_ms"], "p99_tpot_ms": j["p99_tpot_ms"],
               "preemptions": j["shardwise"]["stats"]["num_preemptions"],
               "goodput_ratio_disagg_over_mixed": ratio}
        rows.append(row)
        print(f"{rate:>6} {l:>7} {row['goodput']:8.2f} {row['request_throughput']:7.2f} "
              f"{row['output_throughput']:8.1f} {row['p50_ttft_ms']:9.1f} {row['p99_ttft_ms']:9.1f} "
              f"{row['p50_tpot_ms']:9.2f} {row['p99_tpot_ms']:9.2f} {row['preemptions']:7d}"
              + (f"  {ratio:.2f}" if l == "disagg" else ""))
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
print(f"results: {out}/summary.json")
EOF

#!/usr/bin/env bash
# The main job on one machine: set up (packages + a Release build of `shardwise` only), then the
# cluster benchmark: the embedded tiny-moe model disaggregated on CPU — a coordinator, a
# prefill pool and a decode pool, 3 MPI ranks on localhost (launch/configs/cpu-local-disagg.yaml)
# — under a load of random requests arriving at 10 per second for about a minute, printed as
# vllm bench serve prints it. Extra arguments go to `shardwise bench throughput` and override
# the defaults below, e.g.
#   launch/local.sh --num-prompts 100 --request-rate inf
#   SW_CONFIG=launch/configs/cpu-local-mixed.yaml launch/local.sh     # the colocated layout
# The result JSON goes to build/bench-results/ (printed at the end).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_TARGETS=shardwise "$root/launch/setup.sh"
config="${SW_CONFIG:-$root/launch/configs/cpu-local-disagg.yaml}"
mkdir -p "$root/build/bench-results"
exec "$root/launch/mpirun/run.sh" --config "$config" bench throughput \
  --dataset-name random --num-prompts 500 --request-rate 10 --random-input-len 128 \
  --random-output-len 64 --ignore-eos --seed 0 --goodput ttft:500 tpot:50 \
  --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99 \
  --save-result --result-dir "$root/build/bench-results" "$@"

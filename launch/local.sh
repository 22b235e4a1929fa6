#!/usr/bin/env bash
# The main job on one machine: set up (packages + Release build), then generate with the
# embedded tiny MoE model on CPU. Extra arguments go to `shardwise generate`, e.g.
#   launch/local.sh --max-new-tokens 64 --dtype bfloat16
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/setup.sh"
exec "$root/build/cli/shardwise" --log-level info generate --model tiny-moe --load-format dummy \
  --prompts "$root/launch/prompts/sample.jsonl" --max-new-tokens 32 --json "$@"

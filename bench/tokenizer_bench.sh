#!/usr/bin/env bash
# Encode throughput of tokenizer/ vs HF `tokenizers`, both single-threaded, one text per call,
# the same texts, in the same run: prints a table and writes OUT (JSON, with the ratio).
#   bench/tokenizer_bench.sh BUILD_DIR VOCAB_DIR [OUT.json]
# VOCAB_DIR: a fixture folder (vocabs.json + <name>/tokenizer.json) or folders of tokenizer.json.
# Env: PYTHON (default: the pyref venv), MB (text size, default 4), SECONDS_PER (default 3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:?usage: tokenizer_bench.sh BUILD_DIR VOCAB_DIR [OUT.json]}"
vocabs="${2:?usage: tokenizer_bench.sh BUILD_DIR VOCAB_DIR [OUT.json]}"
out="${3:-$build/tokenizer_bench.json}"
py="${PYTHON:-$HOME/.cache/shardwise/pyref/venv/bin/python}"
bin="$build/bench/tokenizer_bench"
[ -x "$bin" ] || { echo "tokenizer_bench.sh: no $bin (build target tokenizer_bench)"; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

specs=()
for d in "$vocabs"/*/; do
  [ -f "$d/tokenizer.json" ] && specs+=("$(basename "$d")=$d/tokenizer.json")
done
((${#specs[@]})) || { echo "tokenizer_bench.sh: no */tokenizer.json under $vocabs"; exit 1; }

"$py" "$root/bench/tokenizer_bench.py" make-texts "$work/texts.jsonl" --mb "${MB:-4}"
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
"$py" "$root/bench/tokenizer_bench.py" run "$work/texts.jsonl" "${specs[@]}" \
  --seconds "${SECONDS_PER:-3}" >"$work/hf.json"
tokenizer_args=()
for spec in "${specs[@]}"; do tokenizer_args+=(--tokenizer "$spec"); done
"$bin" --texts "$work/texts.jsonl" --seconds "${SECONDS_PER:-3}" "${tokenizer_args[@]}" \
  >"$work/ours.json"

"$py" - "$work/hf.json" "$work/ours.json" "$out" <<'PY'
import json, sys
hf = {r["vocab"]: r for r in json.load(open(sys.argv[1]))}
ours = {r["vocab"]: r for r in json.load(open(sys.argv[2]))}
rows = []
print(f"{'vocab':20s} {'HF MB/s':>9s} {'ours MB/s':>10s} {'HF tok/s':>11s} {'ours tok/s':>11s} {'ratio':>6s} tokens")
for name in hf:
    h, o = hf[name], ours[name]
    ratio = o["mb_per_s"] / h["mb_per_s"]
    same = "same" if h["tokens"] == o["tokens"] else f"DIFFER ({h['tokens']} vs {o['tokens']})"
    print(f"{name:20s} {h['mb_per_s']:9.2f} {o['mb_per_s']:10.2f} {h['tokens_per_s']:11.0f} "
          f"{o['tokens_per_s']:11.0f} {ratio:5.2f}x {same}")
    rows.append({"vocab": name, "hf": h, "ours": o, "ratio": ratio, "same_token_count": h["tokens"] == o["tokens"]})
json.dump({"single_thread": True, "results": rows}, open(sys.argv[3], "w"), indent=2)
print(f"wrote {sys.argv[3]}")
PY

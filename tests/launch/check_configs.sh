#!/usr/bin/env bash
# ctest launch_configs: every launch/configs/*.yaml must plan without error, and the three
# views of its size must agree: the table's "world size N", --print-world-size and
# --launch-env (checked by check_outputs.py), and --world-size N must pass where N+1 fails.
# Usage: check_configs.sh SHARDWISE_BIN SOURCE_DIR
set -euo pipefail
bin="$1"
src="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
shopt -s nullglob
configs=("$src"/launch/configs/*.yaml)
((${#configs[@]})) || { echo "no configs in $src/launch/configs" >&2; exit 1; }
failed=0
bad() {
  echo "FAIL $1: $2" >&2
  failed=$((failed + 1))
}
for f in "${configs[@]}"; do
  name="${f#"$src"/}"
  if ! "$bin" plan --config "$f" >"$tmp/plan.txt" 2>"$tmp/err.txt"; then
    bad "$name" "plan --config failed: $(cat "$tmp/err.txt")"
    continue
  fi
  table="$(sed -n 's/^world size  \([0-9][0-9]*\) = .*/\1/p' "$tmp/plan.txt")"
  if ! world="$("$bin" plan --config "$f" --print-world-size 2>"$tmp/err.txt")"; then
    bad "$name" "--print-world-size failed: $(cat "$tmp/err.txt")"
    continue
  fi
  [[ "$world" =~ ^[0-9]+$ ]] || { bad "$name" "--print-world-size printed '$world'"; continue; }
  [ "$world" = "$table" ] || bad "$name" "--print-world-size $world, plan table says '$table'"
  if ! "$bin" plan --config "$f" --launch-env >"$tmp/env.txt" 2>"$tmp/err.txt"; then
    bad "$name" "--launch-env failed: $(cat "$tmp/err.txt")"
    continue
  fi
  python3 "$src/tests/launch/check_outputs.py" launch-env "$tmp/env.txt" "$world" ||
    bad "$name" "--launch-env: $(tr '\n' ' ' <"$tmp/env.txt")"
  "$bin" plan --config "$f" --world-size "$world" >/dev/null 2>&1 ||
    bad "$name" "--world-size $world refused"
  if "$bin" plan --config "$f" --world-size "$((world + 1))" >/dev/null 2>&1; then
    bad "$name" "--world-size $((world + 1)) accepted"
  fi
  echo "ok   $name: $world ranks; $(grep -E '^SW_(NODES|RANKS_PER_NODE|DEVICE)=' "$tmp/env.txt" | tr '\n' ' ')"
done
if ((failed)); then
  echo "$failed check(s) failed over ${#configs[@]} configs" >&2
  exit 1
fi
echo "all ${#configs[@]} configs plan"

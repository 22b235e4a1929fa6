#!/usr/bin/env bash
# ctest launch_serve: `shardwise serve` as users run it — under mpirun through
# launch/mpirun/run.sh, two jobs side by side on this machine (disaggregated and colocated,
# both with ephemeral control and serve ports, so neither collides with the other) — then:
#   1. generate --endpoint against each prints the same token ids as one process;
#   2. bench serve against the disaggregated one: every request completes with exactly its
#      output length, and the result names the prefill/decode layout;
#   3. SIGTERM to the disaggregated job's coordinator while a bench is in flight: the open
#      requests finish (nothing the server accepted fails), later ones are refused with
#      shutting_down, the job exits 0 within the drain bound and leaves no process behind;
#   4. two SIGTERMs to the colocated one with a long request open: aborted at once, exit 0.
# Usage: test_serve_mpirun.sh SHARDWISE_BIN SOURCE_DIR
set -euo pipefail
export SHARDWISE_BIN="$1"
src="$2"
tmp="$(mktemp -d)"
pids=()
pid_disagg="" pid_mixed=""  # set by start_server
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
cd "$src"
check="$src/tests/launch/check_outputs.py"
fail() {
  echo "FAIL: $*" >&2
  for f in "$tmp"/*.log; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -30 "$f" >&2; }
  done
  exit 1
}
say() { echo "test_serve_mpirun: $*"; }
json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$@"; }

# start_server NAME CONFIG: runs the job in the background; its pid in pid_NAME.
start_server() {
  local name="$1" config="$2"
  launch/mpirun/run.sh --config "$config" serve --endpoint 'tcp://127.0.0.1:*' \
    --ready-file "$tmp/$name.ready" --drain-timeout 60 >"$tmp/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  printf -v "pid_$name" '%s' "$pid"
}
# wait_ready NAME: until the server wrote its ready file (bounded), or fail with its log.
wait_ready() {
  local name="$1" pid_var="pid_$1"
  for _ in $(seq 600); do
    [ -f "$tmp/$name.ready" ] && return 0
    kill -0 "${!pid_var}" 2>/dev/null || fail "server $name exited before it was ready"
    sleep 0.2
  done
  fail "server $name not ready within 120 s"
}
# wait_exit PID SECONDS: its exit status in $rc, or fail when it still runs after SECONDS.
wait_exit() {
  local pid="$1" limit="$2"
  for _ in $(seq $((limit * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && fail "pid $pid still running after $limit s"
  rc=0
  wait "$pid" || rc=$?
}

start_server disagg launch/configs/cpu-local-disagg.yaml
start_server mixed launch/configs/cpu-local-mixed.yaml
wait_ready disagg
wait_ready mixed
E_disagg="$(json_field "$tmp/disagg.ready" endpoint)"
E_mixed="$(json_field "$tmp/mixed.ready" endpoint)"
[ "$E_disagg" != "$E_mixed" ] || fail "both servers on $E_disagg"
say "servers on $E_disagg (disaggregated) and $E_mixed (colocated)"

# 1. The same tokens as one process, from both.
"$SHARDWISE_BIN" generate --model tiny-moe --load-format dummy \
  --prompts launch/prompts/sample.jsonl --max-new-tokens 6 --ignore-eos --json >"$tmp/ref.out"
for name in disagg mixed; do
  endpoint_var="E_$name"
  "$SHARDWISE_BIN" generate --endpoint "${!endpoint_var}" --prompts launch/prompts/sample.jsonl \
    --max-new-tokens 6 --ignore-eos --json >"$tmp/$name.gen" 2>"$tmp/$name-gen.log" ||
    fail "generate --endpoint $name"
  python3 "$check" generate "$tmp/ref.out" "$tmp/$name.gen" --lengths 6,6,8,6 ||
    fail "$name: tokens differ from one process"
done
say "generate --endpoint: both equal one process"

# 2. A benchmark against the disaggregated server.
"$SHARDWISE_BIN" bench serve --endpoint "$E_disagg" --num-prompts 24 --random-input-len 40 \
  --random-output-len 10 --random-range-ratio 0.5 --ignore-eos --seed 3 \
  --result-filename "$tmp/bench.json" >"$tmp/bench.log" 2>&1 || fail "bench serve"
python3 "$check" bench "$tmp/bench.json" --exact-lengths --layout "prefill 1 x" ||
  fail "bench result"
grep -q "KV transfers (failed):" "$tmp/bench.log" || fail "no KV transfer line in the table"
say "bench serve: 24 requests, exact lengths"

# 3. SIGTERM while a benchmark is in flight: drained, exit 0.
# 120 requests at 30/s take 4 s to send; the signal comes after 1 s, so some must be refused.
"$SHARDWISE_BIN" bench serve --endpoint "$E_disagg" --num-prompts 120 --request-rate 30 \
  --random-input-len 40 --random-output-len 24 --ignore-eos --result-filename "$tmp/drain.json" \
  >"$tmp/drain-bench.log" 2>&1 &
bench_pid=$!
pids+=("$bench_pid")
sleep 1
coordinator="$(json_field "$tmp/disagg.ready" pid)"
kill -TERM "$coordinator"
wait_exit "$pid_disagg" 90
[ "$rc" = 0 ] || fail "the disaggregated job exited $rc after SIGTERM"
grep -q "serve: stopping" "$tmp/disagg.log" || fail "no drain notice"
grep -q "serve: stopped:" "$tmp/disagg.log" || fail "no stop summary"
[ ! -e "$tmp/disagg.ready" ] || fail "ready file left behind"
wait_exit "$bench_pid" 90
[ "$rc" = 0 ] || fail "bench during the drain exited $rc"
python3 - "$tmp/drain.json" <<'EOF' || fail "drain result"
import json, sys
r = json.load(open(sys.argv[1]))
reqs = r["requests"]
done = [q for q in reqs if q["success"]]
refused = [q for q in reqs if not q["success"]]
# Accepted requests ran to their end; the rest were refused with shutting_down (bench sends
# nothing more after the first refusal): none may have been cut off mid-stream.
assert done, "no request finished"
assert refused, "no request refused: the signal came after the last send"
for q in done:
    assert q["output_len"] == q["expected_output_len"], q
for q in refused:
    assert q["output_len"] == 0, f"request {q['index']} cut off after {q['output_len']} tokens"
    assert "shutting_down" in q.get("error", ""), q
print(f"drain: {len(done)} finished, {len(refused)} refused")
EOF
say "SIGTERM: drained and exited 0"

# 4. Two SIGTERMs: what is open is aborted at once.
"$SHARDWISE_BIN" generate --endpoint "$E_mixed" --prompt-ids 1,2,3 --max-new-tokens 1900 \
  --ignore-eos --json >"$tmp/long.gen" 2>"$tmp/long-gen.log" &
long_pid=$!
pids+=("$long_pid")
sleep 1.5
coordinator="$(json_field "$tmp/mixed.ready" pid)"
kill -TERM "$coordinator"
sleep 0.3
kill -TERM "$coordinator"
wait_exit "$pid_mixed" 60
[ "$rc" = 0 ] || fail "the colocated job exited $rc after two SIGTERMs"
wait_exit "$long_pid" 30
grep -q '"finish_reason":"error"' "$tmp/long.gen" || fail "the long request was not aborted"
grep -q "abort" "$tmp/long.gen" || fail "the long request's error does not say abort"
sleep 0.5
if pgrep -f "shardwise serve --endpoint tcp://127.0.0.1:\*" >/dev/null; then
  fail "shardwise processes left behind"
fi
say "passed"

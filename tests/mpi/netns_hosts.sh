#!/usr/bin/env bash
# Multi-host endpoints on one machine: some ranks run in a network namespace of their own (a
# veth pair to this one), so that for TCP they sit on another host — loopback there is not
# loopback here — while MPI still sees one host (PMIx is told to accept remote connections).
# Checks: (1) a job that does not know it spans hosts binds loopback and its workers say they
# cannot reach it; (2) with emulated nodes (ranks_per_node) the coordinator binds an address the
# namespace reaches and the job runs; (3) cluster.control_interface names the interface; (4) a
# prefill rank in the namespace sends KV to a decode rank here at the address it advertised.
# Both ends of the veth pair carry the same name, as hosts of a cluster share their NICs' names,
# so cluster.control_interface names the interface on every host. Needs root and iproute2;
# exits 77 (skipped) without them. Add a case: a run() line below.
# Usage: netns_hosts.sh <mpirun> <shardwise>
set -uo pipefail
mpirun_bin="$1"
cli="$2"
[ "$(id -u)" -eq 0 ] || { echo "skip: needs root for ip netns"; exit 77; }
command -v ip >/dev/null || { echo "skip: no iproute2"; exit 77; }

id=$$
ns="shardwise-$id"
host_if="swh$id"
ns_if="swn$id"
net="10.213.$((id % 250))"
work="$(mktemp -d)"
cleanup() {
  ip netns del "$ns" 2>/dev/null
  ip link del "$host_if" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
if ! { ip netns add "$ns" && ip link add "$host_if" type veth peer name "$ns_if" &&
  ip link set "$ns_if" netns "$ns" && ip netns exec "$ns" ip link set "$ns_if" name "$host_if" &&
  ip addr add "$net.1/30" dev "$host_if" && ip link set "$host_if" up &&
  ip netns exec "$ns" ip addr add "$net.2/30" dev "$host_if" &&
  ip netns exec "$ns" ip link set "$host_if" up && ip netns exec "$ns" ip link set lo up &&
  ip netns exec "$ns" ip route add default via "$net.1"; } 2>"$work/ip.err"; then
  echo "skip: cannot make a network namespace here: $(cat "$work/ip.err")"
  exit 77
fi

# The ranks listed in SW_NS_RANKS run inside the namespace.
cat >"$work/wrap.sh" <<EOF
#!/usr/bin/env bash
for r in \$SW_NS_RANKS; do
  [ "\${OMPI_COMM_WORLD_RANK:-0}" = "\$r" ] && exec ip netns exec "$ns" "\$@"
done
exec "\$@"
EOF
chmod +x "$work/wrap.sh"
printf '%s\n' '{"prompt_ids": [5, 6, 7]}' '{"prompt_ids": [11, 250, 3, 99]}' \
  '{"prompt_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9]}' '{"prompt_ids": [42]}' >"$work/prompts.jsonl"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export PMIX_MCA_ptl_tcp_remote_connections=1 PMIX_MCA_ptl_tcp_if_include="$host_if"
failures=0

# run <name> <ranks in the namespace> <expected exit: 0|fail> <cluster line> <pools> <grep...>
run() {
  local name="$1" in_ns="$2" expect="$3" cluster="$4" pools="$5"
  shift 5
  cat >"$work/$name.yaml" <<EOF
model: {path: tiny-moe, load_format: dummy, dtype: float32}
runtime: {device: cpu, kv_block_size: 16, max_num_seqs: 8, max_num_batched_tokens: 256, max_model_len: 512, device_memory_gib: 2}
cluster: {comm_backend: mpi, timeout_s: 20, kv_transfer_timeout_s: 5, heartbeat_interval_s: 0.2, heartbeat_miss_count: 5$cluster}
$pools
EOF
  SW_NS_RANKS="$in_ns" timeout 120 "$mpirun_bin" --oversubscribe --mca oob_tcp_if_include "$host_if" \
    -np 3 "$work/wrap.sh" "$cli" --log-level info generate --config "$work/$name.yaml" \
    --prompts "$work/prompts.jsonl" --max-new-tokens 4 --ignore-eos --json \
    >"$work/$name.out" 2>"$work/$name.err"
  local rc=$?
  local ok=1
  if [ "$expect" = 0 ] && [ "$rc" -ne 0 ]; then ok=0; fi
  if [ "$expect" = fail ] && [ "$rc" -eq 0 ]; then ok=0; fi
  for pattern in "$@"; do
    grep -Eq -- "$pattern" "$work/$name.err" "$work/$name.out" || { ok=0; echo "  missing: $pattern"; }
  done
  if [ "$ok" = 1 ]; then
    echo "ok   $name (exit $rc)"
  else
    echo "FAIL $name (exit $rc)"
    sed 's/^/  | /' "$work/$name.err" | head -40
    failures=$((failures + 1))
  fi
}

mixed="pools: {mixed: {tp: 2}}"
run one_host_loopback "1 2" fail "" "$mixed" \
  "listening on tcp://127\.0\.0\.1:" "could not reach the coordinator at tcp://127\.0\.0\.1:[0-9]+ within 1\.0 s"
run emulated_nodes "1 2" 0 ", ranks_per_node: 1" "$mixed" \
  "listening on tcp://[0-9.]+:[0-9]+ \(CURVE" "worker 'rank1' connected \(CURVE key verified\)"
if grep -q "listening on tcp://127\." "$work/emulated_nodes.err"; then
  echo "FAIL emulated_nodes: the coordinator bound loopback"
  failures=$((failures + 1))
fi
run control_interface "1 2" 0 ", control_interface: $host_if" "$mixed" \
  "listening on tcp://$net\.1:[0-9]+ \(CURVE" "worker 'rank2' connected"
disagg="pools: {prefill: {tp: 1}, decode: {tp: 1}}
disaggregation: {on_transfer_failure: fail}"
run kv_across_hosts "1" 0 ", ranks_per_node: 1, control_interface: $host_if" "$disagg" \
  "rank 1: KV transport at tcp://$net\.2:[0-9]+" "4 KV transfer\(s\) of [0-9.]+ KiB \(0 failed\)"
exit $((failures > 0))

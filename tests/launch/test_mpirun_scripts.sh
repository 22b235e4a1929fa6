#!/usr/bin/env bash
# ctest launch_mpirun_run / launch_mpirun_multinode / launch_script_errors: the mpirun
# launchers of launch/mpirun/ run for real on the CPU configs and must give the single-process
# tokens; every launcher refuses bad input by name.
# Usage: test_mpirun_scripts.sh run|multinode|errors SHARDWISE_BIN SOURCE_DIR
#   run        run.sh --config cpu-local-mixed.yaml generate ...: 4 JSON lines equal to
#              `generate --model tiny-moe --load-format dummy` in one process, and the printed
#              mpirun line has -np 3 and the root/oversubscribe/thread variables this machine
#              needs (the test clears them from its own environment first)
#   multinode  run-multinode.sh with a localhost hostfile on cpu-local-disagg.yaml: the same
#              tokens; then the 2-node config mapped (mpirun --display-map --do-not-launch) on
#              two made-up hosts: ranks 0-8 on the first, 9-16 on the second
#   errors     bad input to run.sh, run-multinode.sh, submit.sh and shardwise.sbatch ends with
#              exit 2 and a message naming the flag or file; submit.sh --dry-run's sbatch
#              line for a GPU and a CPU config
set -euo pipefail
mode="$1"
export SHARDWISE_BIN="$2"
src="$3"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# What launch/test.sh exports would hide a launcher that forgets to set them.
unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMPI_MCA_rmaps_base_oversubscribe
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS
cd "$src"
prompts=launch/prompts/sample.jsonl
gen_args=(generate --prompts "$prompts" --max-new-tokens 4 --ignore-eos --json)
# The sample's third prompt asks for 8 tokens itself.
lengths=4,4,8,4
check="$src/tests/launch/check_outputs.py"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# run_ok NAME OUT ERR COMMAND...: runs COMMAND with stdout in OUT and stderr in ERR; exit 0.
run_ok() {
  local name="$1" out="$2" err="$3" rc=0
  shift 3
  "$@" >"$out" 2>"$err" || rc=$?
  ((rc == 0)) || { cat "$out" "$err" >&2; fail "$name exited $rc"; }
}
expect_in() {  # expect_in FILE TEXT: TEXT must occur in FILE
  grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "'$2' not in $(basename "$1")"; }
}
reference() {
  "$SHARDWISE_BIN" generate --model tiny-moe --load-format dummy --prompts "$prompts" \
    --max-new-tokens 4 --ignore-eos --json >"$tmp/ref.out"
}
cores="$(bash -c "source '$src/launch/lib.sh'; sw_cores")"

case "$mode" in
  run)
    reference
    run_ok run.sh "$tmp/run.out" "$tmp/run.err" \
      launch/mpirun/run.sh --config launch/configs/cpu-local-mixed.yaml "${gen_args[@]}"
    python3 "$check" generate "$tmp/ref.out" "$tmp/run.out" --lengths "$lengths"
    expect_in "$tmp/run.err" "mpirun -np 3 --bind-to none $SHARDWISE_BIN generate"
    expect_in "$tmp/run.err" "--config $src/launch/configs/cpu-local-mixed.yaml"
    if [ "$(id -u)" -eq 0 ]; then expect_in "$tmp/run.err" "OMPI_ALLOW_RUN_AS_ROOT=1"; fi
    if ((cores < 3)); then
      expect_in "$tmp/run.err" "OMPI_MCA_rmaps_base_oversubscribe=1"
      expect_in "$tmp/run.err" "OMP_NUM_THREADS=1"
    elif grep -q oversubscribe "$tmp/run.err"; then
      fail "oversubscribed 3 ranks on $cores cores"
    fi
    # --dry-run prints the line and runs nothing.
    launch/mpirun/run.sh --dry-run --config launch/configs/cpu-local-disagg.yaml "${gen_args[@]}" \
      >"$tmp/dry.out" 2>"$tmp/dry.err"
    [ ! -s "$tmp/dry.out" ] || fail "--dry-run printed output: $(cat "$tmp/dry.out")"
    expect_in "$tmp/dry.err" "mpirun -np 3"
    ;;
  multinode)
    reference
    printf '# one host with a slot for each rank\nlocalhost slots=3\n' >"$tmp/hosts"
    run_ok run-multinode.sh "$tmp/mn.out" "$tmp/mn.err" launch/mpirun/run-multinode.sh \
      --hostfile "$tmp/hosts" --config launch/configs/cpu-local-disagg.yaml "${gen_args[@]}"
    python3 "$check" generate "$tmp/ref.out" "$tmp/mn.out" --lengths "$lengths"
    expect_in "$tmp/mn.err" "mpirun -np 3 --hostfile $tmp/hosts --map-by ppr:3:node"
    expect_in "$tmp/mn.err" "-x OMP_NUM_THREADS"
    # Two nodes of 9: the coordinator and the prefill pool on the first host, the decode pool
    # on the second. Open MPI maps without starting anything on the made-up hosts.
    printf 'node-a slots=9\nnode-b slots=9 max_slots=9\nnode-c slots=9\n' >"$tmp/hosts2"
    SHARDWISE_TEST_MARKER=1 run_ok "the 2-node mapping" "$tmp/map.out" "$tmp/map.err" \
      launch/mpirun/run-multinode.sh --hostfile "$tmp/hosts2" \
      --control-endpoint 'tcp://10.0.0.1:*' -x SHARDWISE_TEST_MARKER \
      --mpirun-arg --display-map --mpirun-arg --do-not-launch \
      --config launch/configs/2node-16gpu-disagg-qwen3moe.yaml "${gen_args[@]}"
    cat "$tmp/map.out" "$tmp/map.err" >"$tmp/map.all"
    expect_in "$tmp/map.all" "--map-by ppr:9:node"
    expect_in "$tmp/map.all" "-x SHARDWISE_CONTROL_ENDPOINT"
    expect_in "$tmp/map.all" "-x SHARDWISE_TEST_MARKER"
    expect_in "$tmp/map.all" "using the first 2 of the 3 hosts"
    # rank -> host, from the map Open MPI printed.
    awk '/Data for node:/ { host = $4 } /Process rank:/ { for (i = 1; i < NF; i++) if ($i == "rank:") print $(i + 1), host }' \
      "$tmp/map.all" | sort -n >"$tmp/placement"
    want="$(for r in $(seq 0 16); do if ((r <= 8)); then echo "$r node-a"; else echo "$r node-b"; fi; done)"
    [ "$(cat "$tmp/placement")" = "$want" ] ||
      fail "placement differs from ranks 0-8 on node-a, 9-16 on node-b: $(tr '\n' ' ' <"$tmp/placement")"
    ;;
  errors)
    # expect_error EXPECTED_TEXT COMMAND...: exit status 2 and the text on stderr.
    expect_error() {
      local text="$1" rc=0
      shift
      "$@" >"$tmp/e.out" 2>"$tmp/e.err" || rc=$?
      ((rc == 2)) || { cat "$tmp/e.err" >&2; fail "exit $rc, expected 2: $*"; }
      expect_in "$tmp/e.err" "$text"
    }
    run=launch/mpirun/run.sh
    multi=launch/mpirun/run-multinode.sh
    mixed=launch/configs/cpu-local-mixed.yaml
    expect_error "--config F is required" $run generate --json
    expect_error "--config 'nope.yaml': no such file" $run --config nope.yaml generate
    expect_error "no shardwise subcommand given" $run --config $mixed
    expect_error "unknown option '--np'" $run --np 3 --config $mixed generate
    expect_error "the shardwise arguments contain '--config'" $run --config $mixed generate --config $mixed
    printf 'pools:\n  mixed: {tp: 3}\n' >"$tmp/bad.yaml"
    expect_error "shardwise plan rejected it" $run --config "$tmp/bad.yaml" generate
    SHARDWISE_BIN=/nonexistent/shardwise expect_error "shardwise executable not found at '/nonexistent/shardwise'" \
      $run --config $mixed generate
    expect_error "--hostfile H is required" $multi --config $mixed generate
    expect_error "--hostfile '$tmp/none': no such readable file" $multi --hostfile "$tmp/none" --config $mixed generate
    printf 'localhost slots=9\n' >"$tmp/one"
    expect_error "lists 1 host(s), but --config '$src/launch/configs/2node-16gpu-disagg-qwen3moe.yaml' needs 2 node(s) of 9 ranks" \
      $multi --hostfile "$tmp/one" --config launch/configs/2node-16gpu-disagg-qwen3moe.yaml generate
    printf '\n# comment\nlocalhost slots=2   # too few\n' >"$tmp/small"
    expect_error "line 3: host 'localhost' has slots=2, but node 0 of --config" \
      $multi --hostfile "$tmp/small" --config $mixed generate
    printf 'localhost cpus=4\n' >"$tmp/field"
    expect_error "line 1: unknown field 'cpus=4'" $multi --hostfile "$tmp/field" --config $mixed generate
    printf 'node-a slots=9\nnode-b slots=7\n' >"$tmp/two"
    expect_error "host 'node-b' has slots=7, but node 1 of --config '$src/launch/configs/2node-16gpu-disagg-qwen3moe.yaml' takes 8 ranks" $multi --hostfile "$tmp/two" \
      --control-endpoint 'tcp://10.0.0.1:*' --config launch/configs/2node-16gpu-disagg-qwen3moe.yaml generate
    printf 'node-a slots=9\nnode-b slots=9\n' >"$tmp/two"
    expect_error "cannot tell which address of 'node-a'" $multi --hostfile "$tmp/two" \
      --config launch/configs/2node-16gpu-disagg-qwen3moe.yaml generate
    expect_error "-x 'NOT_SET_ANYWHERE_42': not set" $multi --hostfile "$tmp/one" -x NOT_SET_ANYWHERE_42 \
      --config $mixed generate
    # launch/slurm/: sizing without a cluster (--dry-run), bad input, and the batch script
    # outside a job. No SLURM_CONF: sinfo finds no cluster, so no --overcommit is added.
    submit=launch/slurm/submit.sh
    run_ok "submit.sh --dry-run" "$tmp/s.out" "$tmp/s.err" env -u SLURM_CONF $submit --dry-run \
      --config launch/configs/2node-16gpu-disagg-qwen3moe.yaml -p gpu -- generate --json
    expect_in "$tmp/s.err" "sbatch --nodes=2 --ntasks=17 --ntasks-per-node=9 --gpus-per-node=8 -p gpu $src/launch/slurm/shardwise.sbatch generate --json"
    run_ok "submit.sh --dry-run" "$tmp/s.out" "$tmp/s.err" env -u SLURM_CONF $submit --dry-run \
      --config launch/configs/cpu-local-disagg.yaml
    expect_in "$tmp/s.err" "sbatch --nodes=1 --ntasks=3 --ntasks-per-node=3 $src/launch/slurm/shardwise.sbatch"
    if grep -q -- "--gpus" "$tmp/s.err"; then fail "GPUs asked for a CPU config: $(cat "$tmp/s.err")"; fi
    expect_error "--config F is required" $submit --dry-run -p gpu
    expect_error "--launcher 'ssh': expected srun or mpirun" $submit --dry-run --config $mixed --launcher ssh
    expect_error "the shardwise arguments contain '--config=x.yaml'" $submit --dry-run --config $mixed \
      -- generate --config=x.yaml
    expect_error "not inside a Slurm job" env -u SLURM_JOB_ID bash launch/slurm/shardwise.sbatch
    # An option without its value names it (lib.sh sw_need_value); --help prints the script's
    # own header (lib.sh sw_usage) and exits 0.
    expect_error "--config needs a file (the cluster YAML)" $run --config
    expect_error "--bind-to needs a value (none, core, socket, ...)" $run --bind-to
    expect_error "--launcher needs a value (srun or mpirun)" $submit --launcher
    expect_error "--hostfile needs a value" $multi --hostfile
    for script in $run $multi $submit; do
      run_ok "$script --help" "$tmp/h.out" "$tmp/h.err" "$script" --help
      expect_in "$tmp/h.out" "$(sed -n 2p "$script" | sed 's/^# //')"
    done
    echo "every bad input refused with its message"
    ;;
  *) fail "unknown mode '$mode' (run, multinode or errors)" ;;
esac
echo "ok: $mode"

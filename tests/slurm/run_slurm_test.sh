#!/usr/bin/env bash
# ctest slurm_submit: a real single-node Slurm cluster (munged, slurmctld, slurmd) in a temp
# folder, private ports, then launch/slurm/submit.sh on cpu-local-disagg.yaml:
#   1. generate under srun --mpi=pmix (the default launcher; --output given) and 2. the same
#      under mpirun inside the allocation (--launcher mpirun; the script's default --output):
#      each job COMPLETED with exit 0 and its log, where --output said, holds the 4 JSON lines
#      of the single-process run (same token ids);
#   3. the default bench line (`bench throughput`, a short workload: SW_SLURM_TEST_BENCH_ARGS
#      replaces it), whose JSON result must lie next to its log with "completed" ==
#      "num_prompts", no failures and every request's exact output length.
# It installs nothing: it needs slurm-wlm and munge (.ci/run installs them) and exits 77 (ctest
# SKIP_RETURN_CODE) when their programs are missing. Every daemon it started is stopped by PID
# and the temp folder removed, whatever happens; on failure the job and daemon logs are printed.
# Usage: run_slurm_test.sh SHARDWISE_BIN SOURCE_DIR   (SW_SLURM_TEST_KEEP=1 keeps the folder)
set -euo pipefail
export SHARDWISE_BIN="$1"
src="$2"
for prog in munged slurmctld slurmd sbatch scontrol sinfo scancel python3; do
  if ! command -v "$prog" >/dev/null; then
    echo "SKIP: '$prog' not found (install slurm-wlm and munge, as .ci/run does)"
    exit 77
  fi
done

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: slurmd must run as root to start jobs (this test runs its own cluster)"
  exit 77
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/shardwise-slurm.XXXXXX")"
# munged wants its socket's folder (and the path to it) searchable by everyone.
chmod 755 "$tmp"
mkdir -p "$tmp/munge" "$tmp/munge-socket" "$tmp/state" "$tmp/spool" "$tmp/log" "$tmp/jobs"
chmod 700 "$tmp/munge"
chmod 755 "$tmp/munge-socket"
pids=()
ok=0
t0=$SECONDS
say() { printf '[slurm test %3ds] %s\n' $((SECONDS - t0)) "$*"; }

show_logs() {
  local f
  for f in "$tmp"/jobs/*.log; do
    [ -f "$f" ] && { echo "----- job log $f"; cat "$f"; }
  done
  for f in "$tmp"/log/*; do
    [ -f "$f" ] && { echo "----- $f (last 40 lines)"; tail -n 40 "$f"; }
  done
}
cleanup() {
  local rc=$? pid i
  ((ok)) || { say "FAILED"; show_logs; } >&2
  # Jobs first (their slurmstepd would outlive slurmd), then the daemons, newest first.
  if [ -f "$tmp/slurm.conf" ]; then
    SLURM_CONF="$tmp/slurm.conf" timeout 10 scancel --quiet --user="$(id -un)" 2>/dev/null || true
  fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid="${pids[$i]}"
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${SW_SLURM_TEST_KEEP:-0}" = 1 ]; then
    echo "kept $tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s; fails naming WHAT on timeout.
wait_for() {
  local limit="$1" what="$2" end
  shift 2
  end=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < end)) || fail "$what: not within $limit s"
    sleep 0.2
  done
}
alive() {
  local pid
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || fail "a daemon exited (pid $pid)"; done
}

# --- munge: a key of our own, a socket of our own.
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
socket="$tmp/munge-socket/munge.socket"
munged -F --key-file="$tmp/munge/munge.key" --socket="$socket" \
  --pid-file="$tmp/munge/munged.pid" --seed-file="$tmp/munge/seed" \
  --log-file="$tmp/log/munged.log" >"$tmp/log/munged.out" 2>&1 &
pids+=($!)
wait_for 10 "munged socket $socket" test -S "$socket"
say "munged up (pid ${pids[0]})"

# --- slurm.conf: this host as controller and only node, at 127.0.0.1 (its name need not
# resolve), on ports the kernel says are free now.
read -r ctld_port slurmd_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("", 0))
print(*(s.getsockname()[1] for s in socks))')
host="$(hostname -s)"
cpus="$(nproc)"
: >"$tmp/plugstack.conf"
cat >"$tmp/slurm.conf" <<EOF
# Written by tests/slurm/run_slurm_test.sh for one test run.
ClusterName=shardwise-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
PlugStackConfig=$tmp/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=pmix
SchedulerType=sched/builtin
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
KillWait=5
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$tmp/slurm.conf"
slurmctld -D -f "$SLURM_CONF" >"$tmp/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" -N "$host" >"$tmp/log/slurmd.out" 2>&1 &
pids+=($!)
node_idle() {
  alive
  [ "$(sinfo -h -n "$host" -o '%t' 2>/dev/null)" = idle ]
}
wait_for 30 "node $host idle (sinfo)" node_idle
say "slurmctld (port $ctld_port) and slurmd (port $slurmd_port) up; node $host idle, $cpus CPUs"

# --- the single-process reference.
cd "$src"
unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMPI_MCA_rmaps_base_oversubscribe
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS
prompts="$src/launch/prompts/sample.jsonl"
config="$src/launch/configs/cpu-local-disagg.yaml"
gen=(generate --prompts "$prompts" --max-new-tokens 4 --ignore-eos --json)
"$SHARDWISE_BIN" generate --model tiny-moe --load-format dummy --prompts "$prompts" \
  --max-new-tokens 4 --ignore-eos --json >"$tmp/reference.out"

# submit OUTVAR ARGS...: launch/slurm/submit.sh from $tmp/jobs, so that the script's default
# --output (shardwise-%j.log in the submit folder) puts the log there; the job id in OUTVAR.
submit() {
  local var="$1" id
  shift
  id="$(cd "$tmp/jobs" && "$src/launch/slurm/submit.sh" --config "$config" --parsable "$@" \
    2>>"$tmp/log/submit.err")" || fail "submit.sh $* failed: $(cat "$tmp/log/submit.err")"
  [[ "$id" =~ ^[0-9]+$ ]] || fail "submit.sh printed '$id', not a job id"
  printf -v "$var" '%s' "$id"
}
job_field() { scontrol show job -o "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
finished() {
  alive
  case "$(job_field "$1" JobState)" in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED) return 0 ;;
    *) return 1 ;;
  esac
}
# check_job ID: COMPLETED, exit 0:0, and its log where --output said.
check_job() {
  local id="$1" state code
  wait_for 120 "job $id finished" finished "$id"
  state="$(job_field "$id" JobState)"
  code="$(job_field "$id" ExitCode)"
  if [ "$state" != COMPLETED ] || [ "$code" != 0:0 ]; then
    fail "job $id: $state, exit code $code"
  fi
  [ "$(job_field "$id" StdOut)" = "$tmp/jobs/shardwise-$id.log" ] ||
    fail "job $id: StdOut $(job_field "$id" StdOut)"
  [ -s "$tmp/jobs/shardwise-$id.log" ] || fail "job $id: no log"
}

srun_job="" mpirun_job="" bench_job=""
submit srun_job --output="$tmp/jobs/shardwise-%j.log" -- "${gen[@]}"
submit mpirun_job --launcher mpirun -- "${gen[@]}"
say "submitted jobs $srun_job (srun --mpi=pmix) and $mpirun_job (mpirun in the allocation)"
check_job "$srun_job"
grep -q -- "runs: srun --mpi=pmix --ntasks=3" "$tmp/jobs/shardwise-$srun_job.log" ||
  fail "job $srun_job did not launch with srun --mpi=pmix --ntasks=3"
python3 "$src/tests/launch/check_outputs.py" generate "$tmp/reference.out" \
  "$tmp/jobs/shardwise-$srun_job.log" --lengths 4,4,8,4
say "job $srun_job: COMPLETED, 4 JSON lines equal to one process"
check_job "$mpirun_job"
grep -q -- "mpirun -np 3 --hostfile" "$tmp/jobs/shardwise-$mpirun_job.log" ||
  fail "job $mpirun_job did not launch with mpirun"
python3 "$src/tests/launch/check_outputs.py" generate "$tmp/reference.out" \
  "$tmp/jobs/shardwise-$mpirun_job.log" --lengths 4,4,8,4
say "job $mpirun_job: COMPLETED, 4 JSON lines equal to one process"

# The default line, `bench throughput` (options added to keep it short): its JSON result lies
# next to the log, every request completed with exactly its output length.
short_bench="--num-prompts 24 --random-input-len 48 --random-output-len 8 --ignore-eos"
read -r -a bench_args <<<"${SW_SLURM_TEST_BENCH_ARGS:-$short_bench}"
submit bench_job -- "${bench_args[@]}"
check_job "$bench_job"
result="$tmp/jobs/shardwise-$bench_job.json"
[ -f "$result" ] || fail "job $bench_job: no bench result at $result"
grep -q "Serving Benchmark Result" "$tmp/jobs/shardwise-$bench_job.log" ||
  fail "job $bench_job: no benchmark table in its log"
python3 "$src/tests/launch/check_outputs.py" bench "$result" --exact-lengths --layout prefill
say "job $bench_job: bench result $result checked"
ok=1
say "passed"

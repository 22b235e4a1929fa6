#!/usr/bin/env bash
# Runs one shardwise subcommand over the hosts of an Open MPI hostfile, placing consecutive
# ranks on one host the way the cluster file's nodes are laid out: SW_RANKS_PER_NODE ranks on
# each of the first SW_NODES hosts (`shardwise plan --launch-env`), coordinator on the first.
#
#   launch/mpirun/run-multinode.sh --hostfile H --config F [options] [--] <subcommand> [args...]
#   launch/mpirun/run-multinode.sh --hostfile hosts.txt \
#       --config launch/configs/2node-16gpu-disagg-qwen3moe.yaml generate --prompts p.jsonl --json
#
# Options (before the subcommand; `--` ends them):
#   --hostfile H            Open MPI hostfile (required): one host a line, `host slots=N`
#                           (optional max_slots=N; # comments). It must list at least SW_NODES
#                           hosts, and each of the first SW_NODES must have slots for the ranks
#                           it gets (a host without slots= is not checked: Open MPI then counts
#                           its cores). Extra hosts are left unused.
#   --config F              cluster YAML (required); sizes the job and is given to the subcommand
#   --control-endpoint EP   the coordinator's ZeroMQ endpoint, exported to every rank as
#                           SHARDWISE_CONTROL_ENDPOINT. It must be bindable on the first host
#                           and reachable from the others: tcp://<its IP>:PORT or a NIC name,
#                           tcp://ib0:* (a host name cannot be bound). Default: the environment's
#                           SHARDWISE_CONTROL_ENDPOINT; else, for more than one node,
#                           tcp://<IPv4 the first host's name resolves to>:*; else the config's.
#   -x VAR                  export one more environment variable to every rank (repeatable)
#   --bind-to X             mpirun --bind-to X (default none)
#   --mpirun-arg ARG        one more argument for mpirun (repeatable), e.g.
#                           --mpirun-arg --display-map
#   --dry-run               print the command line and exit without running it
#   -h, --help              this text
# Every rank gets (mpirun -x) LD_LIBRARY_PATH when set here, OMP_NUM_THREADS and
# OPENBLAS_NUM_THREADS (when unset: this host's cores / SW_RANKS_PER_NODE, at least 1; the
# other hosts are assumed alike), and every SHARDWISE_* variable set here. The executable
# ($SHARDWISE_BIN, default build/cli/shardwise), the config and any input file must exist at
# the same paths on every host (a shared file system). MPIRUN picks the mpirun (default: on
# PATH). As root it adds OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1. The full
# command is printed on stderr before it runs. Exit status: mpirun's; 2 for bad input.
set -euo pipefail
SW_PROG="run-multinode.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=SCRIPTDIR/../lib.sh
source "$root/launch/lib.sh"

hostfile=""
config=""
control_endpoint="${SHARDWISE_CONTROL_ENDPOINT:-}"
bind_to="none"
dry_run=0
mpirun_args=()
extra_exports=()
while (($#)); do
  case "$1" in
    --hostfile) sw_need_value "$1" $# && hostfile="$2" && shift 2 ;;
    --hostfile=*) hostfile="${1#--hostfile=}" && shift ;;
    --config) sw_need_value "$1" $# && config="$2" && shift 2 ;;
    --config=*) config="${1#--config=}" && shift ;;
    --control-endpoint) sw_need_value "$1" $# && control_endpoint="$2" && shift 2 ;;
    -x) sw_need_value "$1" $# && extra_exports+=("$2") && shift 2 ;;
    --bind-to) sw_need_value "$1" $# && bind_to="$2" && shift 2 ;;
    --mpirun-arg) sw_need_value "$1" $# && mpirun_args+=("$2") && shift 2 ;;
    --dry-run) dry_run=1 && shift ;;
    -h | --help) sw_usage && exit 0 ;;
    --) shift && break ;;
    -*) sw_die "unknown option '$1' (see --help); shardwise's own options go after the subcommand or after --" ;;
    *) break ;;
  esac
done
[ -n "$hostfile" ] || sw_die "--hostfile H is required: an Open MPI hostfile, one 'host slots=N' a line"
if [ ! -f "$hostfile" ] || [ ! -r "$hostfile" ]; then
  sw_die "--hostfile '$hostfile': no such readable file"
fi
sw_check_config "$config"
(($#)) || sw_die "no shardwise subcommand given, e.g. generate --prompts FILE --json (see --help)"
sw_find_bin "$root"
sw_refuse_config_arg "$@"
sw_read_launch_env

# Hosts in order of first appearance; a host listed twice adds its slots up (as Open MPI does).
hosts=()
declare -A slots=() host_line=()
lineno=0
while IFS= read -r raw || [ -n "$raw" ]; do
  lineno=$((lineno + 1))
  line="${raw%%#*}"
  read -r -a words <<<"$line" || true
  ((${#words[@]})) || continue
  host="${words[0]}"
  [[ "$host" != *=* ]] || sw_die "--hostfile '$hostfile' line $lineno: expected a host name first, got '$host'"
  n=""
  for w in "${words[@]:1}"; do
    case "$w" in
      slots=*) n="${w#slots=}" ;;
      max_slots=* | max-slots=*) ;;
      *) sw_die "--hostfile '$hostfile' line $lineno: unknown field '$w' (expected slots=N or max_slots=N)" ;;
    esac
  done
  [ -z "$n" ] || [[ "$n" =~ ^[0-9]+$ ]] ||
    sw_die "--hostfile '$hostfile' line $lineno: slots='$n' is not a count"
  if [ -z "${host_line[$host]+set}" ]; then
    hosts+=("$host")
    host_line[$host]=$lineno
    slots[$host]="$n"
  elif [ -n "$n" ] && [ -n "${slots[$host]}" ]; then
    slots[$host]=$((slots[$host] + n))
  fi
done <"$hostfile"

((${#hosts[@]} >= SW_NODES)) || sw_die "--hostfile '$hostfile' lists ${#hosts[@]} host(s)," \
  "but --config '$SW_CONFIG' needs $SW_NODES node(s) of $SW_RANKS_PER_NODE ranks" \
  "($SW_WORLD_SIZE ranks in all)"
for ((node = 0; node < SW_NODES; node++)); do
  host="${hosts[$node]}"
  want=$((SW_WORLD_SIZE - node * SW_RANKS_PER_NODE))
  ((want <= SW_RANKS_PER_NODE)) || want=$SW_RANKS_PER_NODE
  have="${slots[$host]}"
  if [ -z "$have" ]; then
    sw_note "host '$host' (node $node) has no slots= in '$hostfile': not checked; Open MPI will" \
      "count its cores and needs $want"
  elif ((have < want)); then
    sw_die "--hostfile '$hostfile' line ${host_line[$host]}: host '$host' has slots=$have," \
      "but node $node of --config '$SW_CONFIG' takes $want ranks (write slots=$want or more)"
  fi
done
if ((${#hosts[@]} > SW_NODES)); then
  sw_note "using the first $SW_NODES of the ${#hosts[@]} hosts in '$hostfile'"
fi

# A coordinator bound to 127.0.0.1 (the configs' single-host default) is unreachable from the
# other hosts: give it an address of its own host, the first one.
if [ -z "$control_endpoint" ] && ((SW_NODES > 1)); then
  first="${hosts[0]}"
  addr="$(getent ahostsv4 "$first" 2>/dev/null | awk 'NR == 1 { print $1 }')" || addr=""
  if [ -z "$addr" ] || [[ "$addr" == 127.* ]]; then
    sw_die "cannot tell which address of '$first' (the first host, where the coordinator runs)" \
      "the other hosts reach (it resolves to '${addr:-nothing}'): pass --control-endpoint" \
      "tcp://<its IP>:PORT or a NIC name such as tcp://ib0:*"
  fi
  control_endpoint="tcp://$addr:*"
  sw_note "control endpoint $control_endpoint (the coordinator's host '$first')"
fi

export_vars=()
if [ -n "$control_endpoint" ]; then
  export SHARDWISE_CONTROL_ENDPOINT="$control_endpoint"
fi
threads=$(($(sw_cores) / SW_RANKS_PER_NODE))
((threads >= 1)) || threads=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}"
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-$OMP_NUM_THREADS}"
export_vars+=(OMP_NUM_THREADS OPENBLAS_NUM_THREADS)
[ -z "${LD_LIBRARY_PATH:-}" ] || export_vars+=(LD_LIBRARY_PATH)
while IFS= read -r v; do export_vars+=("$v"); done < <(compgen -e | grep '^SHARDWISE_' || true)
for v in "${extra_exports[@]}"; do
  [[ "$v" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || sw_die "-x '$v': expected an environment variable name"
  [ -n "${!v+set}" ] || sw_die "-x '$v': not set in this environment"
  export_vars+=("$v")
done
x_args=()
for v in "${export_vars[@]}"; do x_args+=(-x "$v"); done

env_vars=()
if [ "$(id -u)" -eq 0 ]; then
  env_vars+=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
fi
cmd=(env "${env_vars[@]}" "${MPIRUN:-mpirun}" -np "$SW_WORLD_SIZE" --hostfile "$hostfile"
  --map-by "ppr:$SW_RANKS_PER_NODE:node" --bind-to "$bind_to" "${x_args[@]}" "${mpirun_args[@]}"
  "$SW_BIN" "$@" --config "$SW_CONFIG")
sw_note "$SW_WORLD_SIZE ranks on $SW_NODES node(s) of $SW_RANKS_PER_NODE; runs: $(sw_quote "${cmd[@]}")"
((dry_run)) && exit 0
exec "${cmd[@]}"

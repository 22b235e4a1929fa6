#!/usr/bin/env bash
# Runs one shardwise subcommand on this machine under mpirun, with as many ranks as the cluster
# file needs (`shardwise plan --launch-env`), and passes it --config F:
#
#   launch/mpirun/run.sh --config F [options] [--] <subcommand> [args...]
#   launch/mpirun/run.sh --config launch/configs/cpu-local-mixed.yaml \
#       generate --prompts launch/prompts/sample.jsonl --max-new-tokens 16 --json
#
# Options (before the subcommand; `--` ends them, e.g. to pass `--log-level info generate ...`):
#   --config F         cluster YAML (required); sizes -np and is given to the subcommand
#   --bind-to X        mpirun --bind-to X: none (default: the OS places ranks, which is what
#                      ranks sharing a few cores need), core, socket, ...
#   --mpirun-arg ARG   one more argument for mpirun (repeatable), e.g. --mpirun-arg --tag-output
#   --dry-run          print the command line and exit without running it
#   -h, --help         this text
# Environment:
#   SHARDWISE_BIN      the executable (default: build/cli/shardwise of this checkout)
#   MPIRUN             the mpirun to use (default: mpirun on PATH)
#   OMP_NUM_THREADS, OPENBLAS_NUM_THREADS
#                      threads per rank; when unset: cores / ranks, at least 1 (so 1 when the
#                      ranks outnumber the cores)
# Only when needed it adds OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (run as
# root) and OMPI_MCA_rmaps_base_oversubscribe=1 (more ranks than cores). The full command,
# those variables included, is printed on stderr before it runs; stdout is the subcommand's.
# Exit status: the subcommand's (mpirun's); 2 for a bad command line or config.
set -euo pipefail
SW_PROG="run.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=SCRIPTDIR/../lib.sh
source "$root/launch/lib.sh"

config=""
bind_to="none"
dry_run=0
mpirun_args=()
while (($#)); do
  case "$1" in
    --config) sw_need_value "$1" $# "a file (the cluster YAML)" && config="$2" && shift 2 ;;
    --config=*) config="${1#--config=}" && shift ;;
    --bind-to) sw_need_value "$1" $# "a value (none, core, socket, ...)" && bind_to="$2" && shift 2 ;;
    --mpirun-arg) sw_need_value "$1" $# "a value" && mpirun_args+=("$2") && shift 2 ;;
    --dry-run) dry_run=1 && shift ;;
    -h | --help) sw_usage && exit 0 ;;
    --) shift && break ;;
    -*) sw_die "unknown option '$1' (see --help); shardwise's own options go after the subcommand or after --" ;;
    *) break ;;
  esac
done
sw_check_config "$config"
(($#)) || sw_die "no shardwise subcommand given, e.g. generate --prompts FILE --json (see --help)"
sw_find_bin "$root"
sw_refuse_config_arg "$@"
sw_read_launch_env
if ((SW_NODES > 1)); then
  sw_note "the config emulates $SW_NODES nodes of $SW_RANKS_PER_NODE ranks (cluster.ranks_per_node);" \
    "all $SW_WORLD_SIZE ranks run on this host"
fi

np="$SW_WORLD_SIZE"
cores="$(sw_cores)"
env_vars=()
if [ "$(id -u)" -eq 0 ]; then
  env_vars+=(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
fi
if ((np > cores)); then
  env_vars+=(OMPI_MCA_rmaps_base_oversubscribe=1)
fi
threads=$((cores / np))
((threads >= 1)) || threads=1
[ -n "${OMP_NUM_THREADS:-}" ] || env_vars+=("OMP_NUM_THREADS=$threads")
[ -n "${OPENBLAS_NUM_THREADS:-}" ] || env_vars+=("OPENBLAS_NUM_THREADS=$threads")

cmd=(env "${env_vars[@]}" "${MPIRUN:-mpirun}" -np "$np" --bind-to "$bind_to" "${mpirun_args[@]}"
  "$SW_BIN" "$@" --config "$SW_CONFIG")
sw_note "$np ranks ($cores cores here); runs: $(sw_quote "${cmd[@]}")"
((dry_run)) && exit 0
exec "${cmd[@]}"

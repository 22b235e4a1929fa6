#!/usr/bin/env bash
# Submits launch/slurm/shardwise.sbatch with an allocation sized from a cluster file
# (`shardwise plan --launch-env`):
#
#   launch/slurm/submit.sh --config F [options] [sbatch args...] [-- shardwise args...]
#   launch/slurm/submit.sh --config launch/configs/cpu-local-disagg.yaml
#   launch/slurm/submit.sh --config launch/configs/2node-16gpu-disagg-qwen3moe.yaml \
#       -p gpu --time=01:00:00 -- --num-prompts 1000
#
# On the sbatch command line (where it overrides the script's #SBATCH defaults) it puts:
#   --nodes=SW_NODES --ntasks=SW_WORLD_SIZE --ntasks-per-node=SW_RANKS_PER_NODE
#   --gpus-per-node=SW_GPUS_PER_NODE   only when SW_GPUS_PER_RANK > 0 (runtime.device cuda): the
#                      GPUs of the busiest node's workers. Not --gpus-per-task: the coordinator,
#                      rank 0, shares node 0 with 8 workers and needs no GPU, and 9 tasks x 1 GPU
#                      would never fit an 8-GPU node. Every rank sees its node's GPUs and the
#                      workers of a node take them round robin.
#   --overcommit       only when the cluster's largest node (sinfo, in the partition given by
#                      -p/--partition) has fewer CPUs than SW_RANKS_PER_NODE, e.g. a 2-core test
#                      machine; on one node --ntasks-per-node is then left out (Slurm refuses it
#                      above a node's CPUs even with --overcommit, and --nodes=1 implies it)
# Options of this script (anything else before `--` goes to sbatch unchanged: -p, --time,
# --output, --parsable, --wait, --account, ...):
#   --config F         cluster YAML (required)
#   --launcher L       srun (default) or mpirun: how the job starts its ranks (SW_LAUNCHER)
#   --dry-run          print the sbatch command line and exit
#   -h, --help         this text
# After `--`: the shardwise command line for the batch script (see shardwise.sbatch): nothing
# runs `bench throughput` and saves its JSON next to the job log; options alone are added to
# that bench line; a subcommand replaces it (e.g. -- generate --prompts p.jsonl --json).
# The job gets SW_ROOT (this checkout), SW_CONFIG, SHARDWISE_BIN and SW_LAUNCHER in its
# environment (sbatch's default --export=ALL; keep them if you pass --export). The job log is
# --output, by default shardwise-<job id>.log in the folder you submit from. sbatch's output
# (the job id) is printed on stdout; its exit status is this script's; 2 for bad input.
set -euo pipefail
SW_PROG="submit.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=SCRIPTDIR/../lib.sh
source "$root/launch/lib.sh"

config=""
launcher="${SW_LAUNCHER:-srun}"
dry_run=0
sbatch_args=()
shardwise_args=()
while (($#)); do
  case "$1" in
    --config) sw_need_value "$1" $# "a file (the cluster YAML)" && config="$2" && shift 2 ;;
    --config=*) config="${1#--config=}" && shift ;;
    --launcher) sw_need_value "$1" $# "a value (srun or mpirun)" && launcher="$2" && shift 2 ;;
    --launcher=*) launcher="${1#--launcher=}" && shift ;;
    --dry-run) dry_run=1 && shift ;;
    -h | --help) sw_usage && exit 0 ;;
    --)
      shift
      shardwise_args=("$@")
      break
      ;;
    *) sbatch_args+=("$1") && shift ;;
  esac
done
sw_check_config "$config"
case "$launcher" in
  srun | mpirun) ;;
  *) sw_die "--launcher '$launcher': expected srun or mpirun" ;;
esac
sw_find_bin "$root"
sw_refuse_config_arg "${shardwise_args[@]}"
sw_read_launch_env
command -v sbatch >/dev/null || ((dry_run)) || sw_die "sbatch not found: run this on a Slurm login node"

# Partition and overcommit as given, if at all.
partition=""
overcommit=0
for ((i = 0; i < ${#sbatch_args[@]}; i++)); do
  a="${sbatch_args[$i]}"
  case "$a" in
    -p | --partition) partition="${sbatch_args[$((i + 1))]:-}" ;;
    -p?*) partition="${a#-p}" ;;
    --partition=*) partition="${a#--partition=}" ;;
    -O | --overcommit) overcommit=1 ;;
    --nodes* | -N* | --ntasks* | -n* | --gpus* | --gres*)
      sw_note "'$a' overrides what --config '$SW_CONFIG' asks for; the job checks that it still" \
        "has $SW_WORLD_SIZE tasks"
      ;;
  esac
done

derived=(--nodes="$SW_NODES" --ntasks="$SW_WORLD_SIZE")
if ((!overcommit)) && command -v sinfo >/dev/null; then
  # Largest node of the partition ("%c" may print "32+" for mixed sizes).
  largest="$(sinfo -h ${partition:+-p "$partition"} -o '%c' 2>/dev/null | tr -dc '0-9\n' |
    sort -n | tail -n 1)" || largest=""
  if [ -n "$largest" ] && ((largest < SW_RANKS_PER_NODE)); then
    ((SW_NODES == 1)) || sw_die "the nodes here have at most $largest CPUs, fewer than the" \
      "$SW_RANKS_PER_NODE ranks per node of '$SW_CONFIG', and Slurm refuses --ntasks-per-node" \
      "above a node's CPUs even with --overcommit: use a config with ranks_per_node <= $largest"
    overcommit=1
    derived+=(--overcommit)
    sw_note "nodes here have at most $largest CPUs for $SW_RANKS_PER_NODE ranks: --overcommit"
  fi
fi
if ((!overcommit)) || ((SW_NODES > 1)); then
  derived+=(--ntasks-per-node="$SW_RANKS_PER_NODE")
fi
if ((SW_GPUS_PER_RANK > 0)); then
  derived+=(--gpus-per-node="$SW_GPUS_PER_NODE")
fi

export SW_ROOT="$root" SW_CONFIG SW_LAUNCHER="$launcher" SHARDWISE_BIN="$SW_BIN"
cmd=(sbatch "${derived[@]}" "${sbatch_args[@]}" "$root/launch/slurm/shardwise.sbatch"
  "${shardwise_args[@]}")
sw_note "$SW_WORLD_SIZE ranks on $SW_NODES node(s) of $SW_RANKS_PER_NODE ($SW_DEVICE" \
  "${SW_GPUS_PER_RANK} GPU per worker); runs: SW_ROOT=$(printf '%q' "$SW_ROOT")" \
  "SW_CONFIG=$(printf '%q' "$SW_CONFIG") SW_LAUNCHER=$launcher $(sw_quote "${cmd[@]}")"
((dry_run)) && exit 0
exec "${cmd[@]}"

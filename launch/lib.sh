# Shell helpers shared by the launchers (launch/mpirun/*.sh, launch/slurm/*): errors that name
# the flag, the shardwise binary, the job size from `shardwise plan --launch-env`, core counts.
# Source it after setting SW_PROG (the script's name for messages); add a helper here when a
# second launcher needs it.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the SW_* variables set here are read by the scripts that source it

# Prints "<prog>: <message>" on stderr and exits 2 (a usage or input error).
sw_die() {
  printf '%s: %s\n' "${SW_PROG:-launch}" "$*" >&2
  exit 2
}

sw_note() {
  printf '%s: %s\n' "${SW_PROG:-launch}" "$*" >&2
}

# The running script's header comment (its lines 2 up to `set -euo pipefail`), for --help.
sw_usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

# sw_need_value OPTION ARGC [WHAT]: dies unless OPTION (the current argument) has a value
# after it, i.e. ARGC ($#) >= 2. WHAT says what the value is.
sw_need_value() {
  (($2 >= 2)) || sw_die "$1 needs ${3:-a value (see --help)}"
}

# The shardwise executable: $SHARDWISE_BIN, else <repo>/build/cli/shardwise. Sets SW_BIN to
# an absolute path (remote hosts and Slurm jobs run it from the same path).
sw_find_bin() {
  local root="$1"
  local bin="${SHARDWISE_BIN:-$root/build/cli/shardwise}"
  [ -x "$bin" ] || sw_die "shardwise executable not found at '$bin': build it" \
    "(launch/setup.sh) or set SHARDWISE_BIN"
  SW_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
}

# Checks the --config value and sets SW_CONFIG to its absolute path.
sw_check_config() {
  local config="$1"
  [ -n "$config" ] || sw_die "--config F is required: the cluster YAML that sizes the job" \
    "(e.g. launch/configs/cpu-local-mixed.yaml)"
  [ -f "$config" ] || sw_die "--config '$config': no such file"
  [ -r "$config" ] || sw_die "--config '$config': not readable"
  SW_CONFIG="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"
}

# Reads the job size of SW_CONFIG from `shardwise plan --launch-env` into SW_WORLD_SIZE,
# SW_NODES, SW_RANKS_PER_NODE, SW_GPUS_PER_RANK, SW_GPUS_PER_NODE and SW_DEVICE. Each line is
# checked before it is assigned (the output is never eval'ed).
sw_read_launch_env() {
  local out line key value
  if ! out="$("$SW_BIN" plan --config "$SW_CONFIG" --launch-env)"; then
    sw_die "--config '$SW_CONFIG': shardwise plan rejected it (message above)"
  fi
  SW_WORLD_SIZE="" SW_NODES="" SW_RANKS_PER_NODE="" SW_GPUS_PER_RANK="" SW_GPUS_PER_NODE=""
  SW_DEVICE=""
  while IFS= read -r line; do
    [[ "$line" =~ ^(SW_[A-Z_]+)=([a-z0-9]+)$ ]] ||
      sw_die "unexpected line from 'shardwise plan --launch-env': '$line'"
    key="${BASH_REMATCH[1]}"
    value="${BASH_REMATCH[2]}"
    case "$key" in
      SW_WORLD_SIZE | SW_NODES | SW_RANKS_PER_NODE | SW_GPUS_PER_RANK | SW_GPUS_PER_NODE)
        [[ "$value" =~ ^[0-9]+$ ]] || sw_die "'shardwise plan --launch-env': $key=$value is not a count"
        printf -v "$key" '%s' "$value"
        ;;
      SW_DEVICE) SW_DEVICE="$value" ;;
      *) ;;  # a newer plan may print more; the launchers use only these
    esac
  done <<<"$out"
  local k
  for k in SW_WORLD_SIZE SW_NODES SW_RANKS_PER_NODE SW_GPUS_PER_RANK SW_GPUS_PER_NODE SW_DEVICE; do
    [ -n "${!k}" ] || sw_die "'shardwise plan --launch-env' printed no $k (binary older than this script?)"
  done
}

# Cores of this machine that Open MPI counts as slots: physical cores (not hardware threads),
# at most what this process may run on (cgroups, taskset). nproc also obeys OMP_NUM_THREADS and
# OMP_THREAD_LIMIT, which say nothing about the machine: they are left out.
sw_cores() {
  local usable physical
  usable="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"
  physical="$(lscpu -p=SOCKET,CORE 2>/dev/null | grep -v '^#' | sort -u | wc -l)" || physical=0
  if [ "$physical" -gt 0 ] && [ "$physical" -lt "$usable" ]; then
    echo "$physical"
  else
    echo "$usable"
  fi
}

# The launcher passes --config itself (it sized the job from that file): refuse another one in
# the shardwise arguments rather than run with two.
sw_refuse_config_arg() {
  local a
  for a in "$@"; do
    case "$a" in
      --config | --config=*)
        sw_die "the shardwise arguments contain '$a': the launcher passes --config" \
          "'$SW_CONFIG' itself; give the cluster file once, as the launcher's --config"
        ;;
    esac
  done
}

# Prints a command line the way a shell would read it back (for "runs: ..." lines).
sw_quote() {
  local out="" a
  for a in "$@"; do out+="$(printf '%q' "$a") "; done
  printf '%s' "${out% }"
}

#!/usr/bin/env bash
# ctest launch_shellcheck: the launchers (launch/lib.sh, launch/mpirun/, launch/slurm/) and
# their tests pass shellcheck. Exits 77 (skipped) where shellcheck is not installed.
# Usage: shellcheck_launch.sh SOURCE_DIR
set -euo pipefail
src="$1"
command -v shellcheck >/dev/null || { echo "SKIP: shellcheck not installed"; exit 77; }
cd "$src"
files=(launch/lib.sh launch/mpirun/*.sh launch/slurm/submit.sh launch/slurm/shardwise.sbatch
  tests/launch/*.sh tests/slurm/*.sh bench/*.sh bench/gpu/*.sh)
shellcheck -x "${files[@]}"
echo "shellcheck: ${#files[@]} files clean"

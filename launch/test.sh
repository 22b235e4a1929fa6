#!/usr/bin/env bash
# The whole test suite: set up (packages + Release build), then every ctest test (unit,
# multi-rank MPI, CUDA cases that skip without a GPU). Extra arguments go to ctest, e.g.
#   launch/test.sh -R test_engine      launch/test.sh -L mpi
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/launch/setup.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
ctest --test-dir "$root/build" --output-on-failure -j "${JOBS:-$(nproc)}" "$@"

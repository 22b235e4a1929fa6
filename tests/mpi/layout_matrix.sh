#!/usr/bin/env bash
# The full layout-equivalence matrix (tp x pp x dp x MoE mode for tiny-moe and tiny-dense,
# all-to-all algorithms and node sizes rotating). Needs a build (launch/setup.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMPI_MCA_rmaps_base_oversubscribe=1
SHARDWISE_LAYOUT_MATRIX=full exec "$root/${BUILD_DIR:-build}/tests/mpi/test_layout_equivalence" "$@"

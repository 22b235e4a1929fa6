// Partitioner: ClusterConfig + ModelConfig -> Plan. Layers in contiguous, cost-balanced
// pipeline stages (embedding and LM head counted); heads over tp (KV heads replicated when
// tp > num_key_value_heads); vocab-parallel embedding and LM head; experts over the stage's
// S = tp * dp ranks (moe: ep) or every expert split over tp (moe: tp); per-rank memory and
// KV blocks. Impossible layouts fail naming the constraint and the numbers.
#pragma once

#include "common/status.h"
#include "model/model_config.h"
#include "parallel/cluster_config.h"
#include "parallel/plan.h"

namespace sw::parallel {

// world_size: the actual number of ranks (mpirun -np), or 0 to skip that check
// (`shardwise plan` without MPI).
Result<Plan> make_plan(const ClusterConfig& cluster, const model::ModelConfig& model,
                       int world_size = 0);

}  // namespace sw::parallel

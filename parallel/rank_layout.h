// The one mapping between global ranks and (pool, instance, stage, dp, tp): see the table in
// plan.h. Pure functions of the pool specs; tested exhaustively by round trip.
#pragma once

#include <vector>

#include "common/status.h"
#include "parallel/cluster_config.h"
#include "parallel/plan.h"

namespace sw::parallel {

int world_size_of(const std::vector<PoolSpec>& pools);
// Coordinates of a global rank (0 = coordinator); OutOfRange outside the world.
Result<RankCoord> coord_of(const std::vector<PoolSpec>& pools, int global_rank);
// Global rank of worker coordinates; OutOfRange naming the field that is out of range.
Result<int> rank_of(const std::vector<PoolSpec>& pools, const RankCoord& coord);

// Instances numbered over the whole world: pools in order, instances within a pool.
int num_instances(const std::vector<PoolSpec>& pools);
// Global index of instance `instance` of pool `pool`.
int instance_index(const std::vector<PoolSpec>& pools, int pool, int instance);
// Colours for Communicator::split: every (pool, instance, stage) gets its own stage group, and
// every dp group of it its own tp group. -1 for the coordinator (it joins no group).
int stage_group_color(const std::vector<PoolSpec>& pools, const RankCoord& coord);
int tp_group_color(const std::vector<PoolSpec>& pools, const RankCoord& coord);

}  // namespace sw::parallel

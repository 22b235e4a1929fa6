// The global rank <-> (pool, instance, stage, dp, tp) mapping of the table in plan.h.
// Change the layout only together with that table and the exhaustive test in test_plan.cpp.
#include "parallel/rank_layout.h"

namespace sw::parallel {

int world_size_of(const std::vector<PoolSpec>& pools) {
  int n = 1;  // the coordinator
  for (const PoolSpec& p : pools) n += p.ranks();
  return n;
}

Result<RankCoord> coord_of(const std::vector<PoolSpec>& pools, int global_rank) {
  const int world = world_size_of(pools);
  if (global_rank < 0 || global_rank >= world)
    return out_of_range("rank {} is outside the world of {} ranks (0..{})", global_rank, world,
                        world - 1);
  RankCoord c;
  if (global_rank == 0) {
    c.coordinator = true;
    return c;
  }
  int offset = global_rank - 1;
  for (size_t p = 0; p < pools.size(); ++p) {
    const PoolSpec& s = pools[p];
    if (offset >= s.ranks()) {
      offset -= s.ranks();
      continue;
    }
    // offset = ((instance * pp + stage) * dp + dp_rank) * tp + tp_rank
    c.pool = static_cast<int>(p);
    c.tp = offset % s.tp;
    int rest = offset / s.tp;
    c.dp = rest % s.dp;
    rest /= s.dp;
    c.stage = rest % s.pp;
    c.instance = rest / s.pp;
    return c;
  }
  return internal_error("rank {} not found in the pools of a world of {} ranks", global_rank,
                        world);
}

Result<int> rank_of(const std::vector<PoolSpec>& pools, const RankCoord& c) {
  if (c.coordinator) return 0;
  if (c.pool < 0 || c.pool >= static_cast<int>(pools.size()))
    return out_of_range("pool {} is out of range [0, {})", c.pool, pools.size());
  const PoolSpec& s = pools[static_cast<size_t>(c.pool)];
  const char* name = pool_kind_name(s.kind);
  auto check = [&](const char* field, int v, int n) -> Status {
    if (v < 0 || v >= n)
      return out_of_range("pool {}: {} {} is out of range [0, {})", name, field, v, n);
    return Status();
  };
  SW_RETURN_IF_ERROR(check("instance", c.instance, s.instances));
  SW_RETURN_IF_ERROR(check("stage", c.stage, s.pp));
  SW_RETURN_IF_ERROR(check("dp", c.dp, s.dp));
  SW_RETURN_IF_ERROR(check("tp", c.tp, s.tp));
  int pool_offset = 0;
  for (int p = 0; p < c.pool; ++p) pool_offset += pools[static_cast<size_t>(p)].ranks();
  return 1 + pool_offset + ((c.instance * s.pp + c.stage) * s.dp + c.dp) * s.tp + c.tp;
}

int num_instances(const std::vector<PoolSpec>& pools) {
  int n = 0;
  for (const PoolSpec& p : pools) n += p.instances;
  return n;
}

int instance_index(const std::vector<PoolSpec>& pools, int pool, int instance) {
  int index = instance;
  for (int p = 0; p < pool; ++p) index += pools[static_cast<size_t>(p)].instances;
  return index;
}

int stage_group_color(const std::vector<PoolSpec>& pools, const RankCoord& c) {
  if (c.coordinator) return -1;
  int stages_before = 0;
  for (int p = 0; p < c.pool; ++p)
    stages_before += pools[static_cast<size_t>(p)].instances * pools[static_cast<size_t>(p)].pp;
  return stages_before + c.instance * pools[static_cast<size_t>(c.pool)].pp + c.stage;
}

int tp_group_color(const std::vector<PoolSpec>& pools, const RankCoord& c) {
  if (c.coordinator) return -1;
  // Dp groups of all earlier stages come first, so colours are dense and distinct.
  int groups_before = 0;
  for (int p = 0; p < c.pool; ++p) {
    const PoolSpec& s = pools[static_cast<size_t>(p)];
    groups_before += s.instances * s.pp * s.dp;
  }
  const PoolSpec& s = pools[static_cast<size_t>(c.pool)];
  return groups_before + (c.instance * s.pp + c.stage) * s.dp + c.dp;
}

}  // namespace sw::parallel

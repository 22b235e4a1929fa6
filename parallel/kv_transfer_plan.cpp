// Source and destination of every (layer, KV head) between two pool layouts.
#include "parallel/kv_transfer_plan.h"

#include <fmt/format.h>

#include "parallel/rank_layout.h"

namespace sw::parallel {

namespace {

struct Holder {
  GroupRank at;
  model::ShardSpec shard;
};

// The ranks of one dp group of a pool (instance 0, dp 0: every other has the same shards).
Result<std::vector<Holder>> holders(const Plan& plan, int pool) {
  if (pool < 0 || pool >= static_cast<int>(plan.pools.size()))
    return out_of_range("KV transfer plan: pool {} of {}", pool, plan.pools.size());
  const PoolSpec& p = plan.pools[static_cast<size_t>(pool)];
  std::vector<Holder> out;
  for (int s = 0; s < p.pp; ++s)
    for (int t = 0; t < p.tp; ++t) {
      RankCoord c;
      c.pool = pool;
      c.instance = 0;
      c.stage = s;
      c.dp = 0;
      c.tp = t;
      SW_ASSIGN_OR_RETURN(int rank, rank_of(plan.pools, c));
      out.push_back({GroupRank{s, t}, plan.rank(rank).shard});
    }
  return out;
}

bool holds(const model::ShardSpec& s, int layer, int head) {
  return layer >= s.layer_begin && layer < s.layer_end && head >= s.kv_head_begin &&
         head < s.kv_head_end;
}

}  // namespace

int64_t KvTransferPlan::bytes_per_token(int64_t head_dim, int64_t dtype_bytes) const {
  int64_t n = 0;
  for (const KvSegment& s : segments)
    n += int64_t{s.num_layers()} * s.num_kv_heads() * 2 * head_dim * dtype_bytes;
  return n;
}

std::string KvTransferPlan::to_text() const {
  std::string out;
  for (const KvSegment& s : segments)
    out += fmt::format("stage {} tp {} -> stage {} tp {}: layers [{}, {}), kv heads [{}, {})\n",
                       s.src.stage, s.src.tp, s.dst.stage, s.dst.tp, s.layer_begin, s.layer_end,
                       s.kv_head_begin, s.kv_head_end);
  return out;
}

Result<KvTransferPlan> make_kv_transfer_plan(const Plan& plan, int src_pool, int dst_pool) {
  SW_ASSIGN_OR_RETURN(std::vector<Holder> src, holders(plan, src_pool));
  SW_ASSIGN_OR_RETURN(std::vector<Holder> dst, holders(plan, dst_pool));
  KvTransferPlan out;
  for (const Holder& d : dst) {
    // Walk the destination's layers and heads; a run of (layer range, head range) with the
    // same source becomes one segment. Sources are chosen per (layer, head): the first holder
    // in (stage, tp) order, so a replicated head is sent by its lowest tp rank only.
    for (int layer = d.shard.layer_begin; layer < d.shard.layer_end;) {
      // The source stage holding this layer, and how far it reaches within the destination.
      const Holder* stage_rep = nullptr;
      for (const Holder& s : src)
        if (layer >= s.shard.layer_begin && layer < s.shard.layer_end) {
          stage_rep = &s;
          break;
        }
      if (!stage_rep)
        return internal_error("KV transfer plan: no prefill rank holds layer {}", layer);
      const int layer_end = std::min(d.shard.layer_end, stage_rep->shard.layer_end);
      for (int head = d.shard.kv_head_begin; head < d.shard.kv_head_end;) {
        const Holder* owner = nullptr;
        for (const Holder& s : src)
          if (holds(s.shard, layer, head)) {
            owner = &s;
            break;
          }
        if (!owner)
          return internal_error("KV transfer plan: no prefill rank holds layer {} KV head {}",
                                layer, head);
        const int head_end = std::min(d.shard.kv_head_end, owner->shard.kv_head_end);
        out.segments.push_back(KvSegment{owner->at, d.at, layer, layer_end, head, head_end});
        head = head_end;
      }
      layer = layer_end;
    }
  }
  return out;
}

}  // namespace sw::parallel

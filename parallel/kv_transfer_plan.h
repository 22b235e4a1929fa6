// KvTransferPlan: which rank of a prefill instance sends which part of a sequence's KV cache
// to which rank of a decode instance, for one pair of pool layouts. A pure function of the
// plan (the partitioner's stages and head splits): the same for every instance and dp group
// of the two pools, so the coordinator computes it once per pair and only picks the groups.
//
// Every (layer, KV head) a decode rank holds comes from exactly one prefill rank: when tp
// exceeds the KV heads on the prefill side a replicated head is sent once, by the lowest tp
// rank that holds it; when it does on the decode side each replica receives its own copy.
// Segments are sent pre-sliced (only the layers and heads the destination holds), so the
// bytes on the wire equal what the destination stores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "parallel/plan.h"

namespace sw::parallel {

// Ranks inside one dp group of an instance: (pipeline stage, tp rank).
struct GroupRank {
  int stage = 0;
  int tp = 0;
  bool operator==(const GroupRank&) const = default;
};

struct KvSegment {
  GroupRank src;                           // in the prefill instance's dp group
  GroupRank dst;                           // in the decode instance's dp group
  int layer_begin = 0, layer_end = 0;      // global layers [begin, end)
  int kv_head_begin = 0, kv_head_end = 0;  // global KV heads [begin, end)
  int num_layers() const { return layer_end - layer_begin; }
  int num_kv_heads() const { return kv_head_end - kv_head_begin; }
};

struct KvTransferPlan {
  std::vector<KvSegment> segments;  // by destination (stage, tp), then layer, then head
  // Bytes of one token's K and V over every segment (what a decode dp group stores per token).
  int64_t bytes_per_token(int64_t head_dim, int64_t dtype_bytes) const;
  std::string to_text() const;  // one line per segment, for logs and `plan`
};

// The plan from pool `src_pool` (prefill) to pool `dst_pool` (decode) of `plan`.
Result<KvTransferPlan> make_kv_transfer_plan(const Plan& plan, int src_pool, int dst_pool);

}  // namespace sw::parallel

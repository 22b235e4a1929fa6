// parallel::Plan: pure data describing how one model is laid out over the world — pools,
// instances, pipeline stages, and per rank its coordinates, layers, heads, vocab slice,
// experts, FFN slices, memory and KV blocks. Built by the partitioner (partitioner.h) from a
// ClusterConfig and a ModelConfig; serialisable to JSON; printed by `shardwise plan`.
//
// Rank layout (rank_layout.h). Global rank 0 is the coordinator; workers follow pool by pool
// (prefill before decode), then instance, stage, dp group, tp rank:
//
//   rank | kind        | pool  | instance | stage | dp | tp
//   -----+-------------+-------+----------+-------+----+----
//   0    | coordinator |  -    |    -     |   -   | -  | -
//   1    | worker      |  0    |    0     |   0   | 0  | 0
//   2    | worker      |  0    |    0     |   0   | 0  | 1      (tp fastest)
//   ...  | worker      |  0    |    0     |   0   | 1  | 0      (then dp)
//   ...  | worker      |  0    |    0     |   1   | 0  | 0      (then stage)
//   ...  | worker      |  0    |    1     |   0   | 0  | 0      (then instance, then pool)
//
//   rank = 1 + pool_offset + ((instance * pp + stage) * dp + dp_rank) * tp + tp_rank
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/shard_spec.h"
#include "parallel/cluster_config.h"

namespace sw::parallel {

struct RankCoord {
  bool coordinator = false;
  int pool = -1;
  int instance = -1;
  int stage = -1;
  int dp = -1;
  int tp = -1;
  bool operator==(const RankCoord&) const = default;
};

struct MemoryEstimate {
  int64_t weight_bytes = 0;
  int64_t activation_bytes = 0;  // peak of one step at max_num_batched_tokens
  int64_t kv_bytes = 0;          // the KV pool: kv_blocks * bytes per block
  int64_t budget_bytes = 0;      // device memory * gpu_memory_utilization
};

struct StagePlan {
  int layer_begin = 0;  // [begin, end)
  int layer_end = 0;
  bool has_embedding = false;
  bool has_lm_head = false;  // also the final norm
  double cost = 0;           // relative cost used for balancing
};

// The coordinator holds no part of the model.
inline model::ShardSpec coordinator_shard() {
  model::ShardSpec s;
  s.has_embedding = s.has_lm_head = false;
  return s;
}

struct RankPlan {
  int rank = 0;
  int node = 0;  // emulated or real node index
  RankCoord coord;
  // Worker ranks only (coordinator: empty ranges, no embedding or LM head): the part of the
  // model this rank holds. Experts: EP a contiguous share, moe tp all of them with a column
  // slice; KV heads replicated when tp > num_key_value_heads.
  model::ShardSpec shard = coordinator_shard();
  MemoryEstimate memory;
  int64_t kv_blocks = 0;
};

struct Plan {
  std::string model;       // as given in the config
  std::string model_type;  // from config.json
  int world_size = 0;
  std::vector<PoolSpec> pools;
  std::vector<int> pool_first_rank;            // global rank of each pool's first worker
  std::vector<std::vector<StagePlan>> stages;  // per pool: pp stages (same for every instance)
  std::vector<RankPlan> ranks;                 // index = global rank
  int ranks_per_node = 0;                      // as used for `node`
  // Settings the plan was sized for (added with the partitioner; used by to_text and workers).
  std::string dtype;           // weights and KV cache: float32 | bfloat16 | float16
  std::string device;          // cpu | cuda
  int num_hidden_layers = 0;   // of the model
  int kv_block_size = 0;       // tokens per KV block
  int64_t max_model_len = 0;   // resolved (never 0)
  int64_t blocks_per_seq = 0;  // KV blocks one sequence of max_model_len needs

  const RankPlan& rank(int r) const { return ranks.at(static_cast<size_t>(r)); }
  // Global ranks of one stage of an instance: dp-major, tp-minor (S = tp * dp ranks).
  std::vector<int> stage_ranks(int pool, int instance, int stage) const;
  // Global ranks of one tp group (the tp ranks of one dp group of one stage).
  std::vector<int> tp_group(int pool, int instance, int stage, int dp) const;
  nlohmann::json to_json() const;
  static Result<Plan> from_json(const nlohmann::json& j);
  std::string to_text() const;  // the table `shardwise plan` prints
};

}  // namespace sw::parallel

// Rank layout, partitioner and Plan: exhaustive rank round trips over several pool shapes,
// optimal stage balancing checked by brute force, head/KV/vocab/expert slices, memory math, and
// one test per impossible layout. Add a layout rule: a test here that breaks it on purpose.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <set>

#include "model/model_config.h"
#include "parallel/partitioner.h"
#include "parallel/plan.h"
#include "parallel/rank_layout.h"

namespace sw::parallel {
namespace {

model::ModelConfig preset(const std::string& name) {
  auto m = model::load_model_config(name);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return *m;
}

PoolSpec pool(PoolKind kind, int instances, int tp, int pp, int dp, MoeMode moe = MoeMode::kEp) {
  PoolSpec p;
  p.kind = kind;
  p.instances = instances;
  p.tp = tp;
  p.pp = pp;
  p.dp = dp;
  p.moe = moe;
  return p;
}

PoolSpec mixed(int tp, int pp = 1, int dp = 1, MoeMode moe = MoeMode::kEp) {
  return pool(PoolKind::kMixed, 1, tp, pp, dp, moe);
}

ClusterConfig config(const std::string& model, std::vector<PoolSpec> pools) {
  ClusterConfig c;
  c.source = "test.yaml";
  c.model.path = model;
  c.runtime.max_model_len = 256;
  c.pools = std::move(pools);
  return c;
}

Plan plan_or_die(const ClusterConfig& c, const model::ModelConfig& m) {
  auto p = make_plan(c, m);
  EXPECT_TRUE(p.ok()) << p.status().message();
  return p.ok() ? *p : Plan{};
}

std::string plan_error(const ClusterConfig& c, const model::ModelConfig& m, int world = 0) {
  auto p = make_plan(c, m, world);
  EXPECT_FALSE(p.ok()) << "expected an error";
  return p.ok() ? std::string() : p.status().message();
}

// ---------------------------------------------------------------- rank layout

const std::vector<std::vector<PoolSpec>>& pool_shapes() {
  static const std::vector<std::vector<PoolSpec>> shapes = {
      {mixed(1)},
      {mixed(2, 2, 1)},
      {pool(PoolKind::kMixed, 2, 2, 3, 2)},
      {pool(PoolKind::kPrefill, 1, 2, 1, 1), pool(PoolKind::kDecode, 2, 1, 2, 2)},
      {pool(PoolKind::kPrefill, 2, 4, 2, 1), pool(PoolKind::kDecode, 3, 2, 1, 4)},
      {pool(PoolKind::kPrefill, 2, 1, 1, 3), pool(PoolKind::kDecode, 1, 3, 4, 1)},
  };
  return shapes;
}

TEST(RankLayout, CoordinatorIsRankZero) {
  for (const auto& pools : pool_shapes()) {
    auto c = coord_of(pools, 0);
    ASSERT_TRUE(c.ok());
    EXPECT_TRUE(c->coordinator);
    RankCoord coord;
    coord.coordinator = true;
    EXPECT_EQ(*rank_of(pools, coord), 0);
  }
}

TEST(RankLayout, EveryRankRoundTrips) {
  for (const auto& pools : pool_shapes()) {
    const int world = world_size_of(pools);
    int expected_world = 1;
    for (const PoolSpec& p : pools) expected_world += p.instances * p.tp * p.pp * p.dp;
    ASSERT_EQ(world, expected_world);
    for (int r = 1; r < world; ++r) {
      auto c = coord_of(pools, r);
      ASSERT_TRUE(c.ok()) << c.status().message();
      EXPECT_FALSE(c->coordinator);
      auto back = rank_of(pools, *c);
      ASSERT_TRUE(back.ok()) << back.status().message();
      EXPECT_EQ(*back, r);
    }
    EXPECT_FALSE(coord_of(pools, world).ok());
    EXPECT_FALSE(coord_of(pools, -1).ok());
  }
}

TEST(RankLayout, EveryCoordinateHasItsOwnWorkerRankInTableOrder) {
  for (const auto& pools : pool_shapes()) {
    const int world = world_size_of(pools);
    std::set<int> seen;
    int next = 1;  // the table's order: pool, instance, stage, dp, tp (fastest)
    for (int p = 0; p < static_cast<int>(pools.size()); ++p) {
      const PoolSpec& s = pools[static_cast<size_t>(p)];
      for (int i = 0; i < s.instances; ++i)
        for (int st = 0; st < s.pp; ++st)
          for (int d = 0; d < s.dp; ++d)
            for (int t = 0; t < s.tp; ++t) {
              RankCoord c;
              c.pool = p;
              c.instance = i;
              c.stage = st;
              c.dp = d;
              c.tp = t;
              auto r = rank_of(pools, c);
              ASSERT_TRUE(r.ok()) << r.status().message();
              EXPECT_EQ(*r, next++);
              EXPECT_TRUE(seen.insert(*r).second) << "rank " << *r << " given twice";
              EXPECT_GE(*r, 1);
              EXPECT_LT(*r, world);
              EXPECT_EQ(*coord_of(pools, *r), c);
            }
    }
    EXPECT_EQ(static_cast<int>(seen.size()), world - 1);
  }
}

TEST(RankLayout, OutOfRangeCoordinatesNameTheField) {
  const std::vector<PoolSpec> pools = {mixed(2, 2, 1)};
  RankCoord c;
  c.pool = 0;
  c.instance = 0;
  c.stage = 0;
  c.dp = 0;
  c.tp = 2;
  auto r = rank_of(pools, c);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tp 2 is out of range [0, 2)"), std::string::npos)
      << r.status().message();
  c.tp = 0;
  c.stage = 2;
  EXPECT_NE(rank_of(pools, c).status().message().find("stage 2"), std::string::npos);
  c.stage = 0;
  c.pool = 1;
  EXPECT_FALSE(rank_of(pools, c).ok());
}

TEST(RankLayout, PlanGroupsFollowTheLayout) {
  auto m = preset("tiny-moe");
  Plan plan = plan_or_die(config("tiny-moe", {pool(PoolKind::kMixed, 2, 2, 2, 2)}), m);
  // instance 1, stage 1: offset ((1 * 2 + 1) * 2) * 2 = 12, so ranks 13..16.
  EXPECT_EQ(plan.stage_ranks(0, 1, 1), (std::vector<int>{13, 14, 15, 16}));
  EXPECT_EQ(plan.tp_group(0, 1, 1, 1), (std::vector<int>{15, 16}));
  EXPECT_TRUE(plan.tp_group(0, 2, 0, 0).empty());
  for (int r : plan.stage_ranks(0, 1, 1)) {
    EXPECT_EQ(plan.rank(r).coord.instance, 1);
    EXPECT_EQ(plan.rank(r).coord.stage, 1);
  }
}

// ---------------------------------------------------------------- stage balancing

// The cost model, written out independently of the partitioner: parameters touched per token.
struct Costs {
  std::vector<int64_t> layer;
  int64_t embedding = 0, lm_head = 0;
};

Costs costs_of(const model::ModelConfig& m) {
  Costs c;
  const int64_t H = m.hidden_size;
  int64_t attn = H * (m.q_size() + 2 * m.kv_size()) + m.q_size() * H + 2 * H;
  if (m.qk_norm) attn += 2 * m.head_dim;
  if (m.attention_bias) attn += m.q_size() + 2 * m.kv_size();
  for (int l = 0; l < m.num_hidden_layers; ++l)
    c.layer.push_back(
        attn + (m.is_moe_layer(l)
                    ? m.num_experts_per_tok * 3 * H * m.moe_intermediate_size + m.num_experts * H
                    : 3 * H * m.intermediate_size));
  c.embedding = m.vocab_size * H;
  c.lm_head = m.vocab_size * H + H;
  return c;
}

int64_t stage_cost(const Costs& c, int pp, int s, int b, int e) {
  int64_t v = (s == 0 ? c.embedding : 0) + (s == pp - 1 ? c.lm_head : 0);
  for (int l = b; l < e; ++l) v += c.layer[static_cast<size_t>(l)];
  return v;
}

// Smallest possible max stage cost over every split of L layers into pp non-empty stages.
int64_t brute_force_best(const Costs& c, int pp) {
  const int L = static_cast<int>(c.layer.size());
  int64_t best = INT64_MAX;
  std::vector<int> bounds(pp + 1, 0);
  bounds[pp] = L;
  std::function<void(int)> rec = [&](int s) {
    if (s == pp) {
      int64_t worst = 0;
      for (int i = 0; i < pp; ++i)
        worst = std::max(worst, stage_cost(c, pp, i, bounds[i], bounds[i + 1]));
      best = std::min(best, worst);
      return;
    }
    for (int b = bounds[s - 1] + 1; b <= L - (pp - s); ++b) {
      bounds[s] = b;
      rec(s + 1);
    }
  };
  if (pp == 1)
    best = stage_cost(c, 1, 0, 0, L);
  else
    rec(1);
  return best;
}

void expect_optimal_stages(const model::ModelConfig& m, int pp, const std::string& what) {
  SCOPED_TRACE(what + " pp " + std::to_string(pp));
  ClusterConfig c = config(m.source, {mixed(1, pp)});
  c.runtime.device_memory_gib = 1024;  // balancing only
  Plan plan = plan_or_die(c, m);
  ASSERT_EQ(plan.stages.size(), 1u);
  const auto& stages = plan.stages[0];
  ASSERT_EQ(static_cast<int>(stages.size()), pp);
  const Costs costs = costs_of(m);
  int64_t worst = 0;
  for (int s = 0; s < pp; ++s) {
    const StagePlan& st = stages[static_cast<size_t>(s)];
    EXPECT_EQ(st.layer_begin, s == 0 ? 0 : stages[static_cast<size_t>(s) - 1].layer_end);
    EXPECT_LT(st.layer_begin, st.layer_end) << "stage " << s << " is empty";
    EXPECT_EQ(st.has_embedding, s == 0);
    EXPECT_EQ(st.has_lm_head, s == pp - 1);
    const int64_t cost = stage_cost(costs, pp, s, st.layer_begin, st.layer_end);
    EXPECT_DOUBLE_EQ(st.cost, static_cast<double>(cost));
    worst = std::max(worst, cost);
  }
  EXPECT_EQ(stages.back().layer_end, m.num_hidden_layers);
  EXPECT_EQ(worst, brute_force_best(costs, pp));
}

TEST(StageBalancing, TinyMoeThreeStages) {
  auto m = preset("tiny-moe");
  Plan plan = plan_or_die(config("tiny-moe", {mixed(1, 3)}), m);
  // Embedding and LM head each cost about half a layer: they take the short stages.
  std::vector<std::pair<int, int>> got;
  for (const StagePlan& st : plan.stages[0]) got.emplace_back(st.layer_begin, st.layer_end);
  EXPECT_EQ(got, (std::vector<std::pair<int, int>>{{0, 1}, {1, 3}, {3, 4}}));
}

TEST(StageBalancing, OptimalByBruteForce) {
  for (const char* name : {"tiny-moe", "tiny-dense"})
    for (int pp = 1; pp <= 4; ++pp) expect_optimal_stages(preset(name), pp, name);
  // Uneven layers: dense layers among MoE layers, and a big vocabulary.
  auto m = preset("tiny-moe");
  m.num_hidden_layers = 9;
  m.mlp_only_layers = {0, 4, 5};
  m.intermediate_size = 4096;
  m.vocab_size = 5000;
  for (int pp = 1; pp <= 5; ++pp) expect_optimal_stages(m, pp, "uneven tiny-moe");
  auto q = preset("qwen3-30b-a3b");
  for (int pp : {2, 3, 4}) expect_optimal_stages(q, pp, "qwen3-30b-a3b");
}

TEST(StageBalancing, MoeLayersCostTheirActiveExperts) {
  // Doubling the number of experts leaves the top-k active parameters, and so the split, alone.
  auto m = preset("tiny-moe");
  m.num_hidden_layers = 8;
  m.mlp_only_layers = {6, 7};
  auto bigger = m;
  bigger.num_experts = 16;
  auto a = plan_or_die(config("tiny-moe", {mixed(1, 3)}), m);
  auto b = plan_or_die(config("tiny-moe", {mixed(1, 3)}), bigger);
  for (int s = 0; s < 3; ++s)
    EXPECT_EQ(a.stages[0][static_cast<size_t>(s)].layer_end,
              b.stages[0][static_cast<size_t>(s)].layer_end);
}

// ---------------------------------------------------------------- heads, FFN, vocab, experts

TEST(Shards, QHeadsSplitAndKvHeadsReplicatedWhenTpExceedsThem) {
  auto m = preset("tiny-dense");  // 8 q heads, 2 KV heads
  Plan plan = plan_or_die(config("tiny-dense", {mixed(4)}), m);
  const int q[4][2] = {{0, 2}, {2, 4}, {4, 6}, {6, 8}};
  const int kv[4] = {0, 0, 1, 1};
  for (int t = 0; t < 4; ++t) {
    const RankPlan& r = plan.rank(1 + t);
    EXPECT_EQ(r.shard.q_head_begin, q[t][0]);
    EXPECT_EQ(r.shard.q_head_end, q[t][1]);
    EXPECT_EQ(r.shard.kv_head_begin, kv[t]) << "tp rank " << t;
    EXPECT_EQ(r.shard.kv_head_end, kv[t] + 1);
    EXPECT_EQ(r.shard.ffn_begin, t * 768 / 4);
    EXPECT_EQ(r.shard.ffn_end, (t + 1) * 768 / 4);
  }
  Plan tp8 = plan_or_die(config("tiny-dense", {mixed(8)}), m);
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(tp8.rank(1 + t).shard.q_head_begin, t);
    EXPECT_EQ(tp8.rank(1 + t).shard.kv_head_begin, t / 4);
  }
  Plan tp2 = plan_or_die(config("tiny-dense", {mixed(2)}), m);
  EXPECT_EQ(tp2.rank(1).shard.kv_head_begin, 0);
  EXPECT_EQ(tp2.rank(2).shard.kv_head_begin, 1);
  EXPECT_EQ(tp2.rank(2).shard.kv_head_end, 2);
}

TEST(Shards, KvHeadsSplitWhenTpIsSmaller) {
  auto m = preset("qwen3-30b-a3b");  // 32 q heads, 4 KV heads
  ClusterConfig c = config("qwen3-30b-a3b", {mixed(2, 1, 1)});
  c.runtime.device_memory_gib = 1024;
  Plan plan = plan_or_die(c, m);
  EXPECT_EQ(plan.rank(1).shard.kv_head_begin, 0);
  EXPECT_EQ(plan.rank(1).shard.kv_head_end, 2);
  EXPECT_EQ(plan.rank(2).shard.kv_head_begin, 2);
  EXPECT_EQ(plan.rank(2).shard.kv_head_end, 4);
  // GQA: q head h reads KV head h / 8; rank 1 holds q heads [16, 32) -> KV heads 2, 3.
  EXPECT_EQ(plan.rank(2).shard.q_head_begin, 16);
}

void expect_vocab_cover(const Plan& plan, int64_t V, int pool, int stage) {
  for (int inst = 0; inst < plan.pools[static_cast<size_t>(pool)].instances; ++inst)
    for (int d = 0; d < plan.pools[static_cast<size_t>(pool)].dp; ++d) {
      int64_t next = 0;
      for (int r : plan.tp_group(pool, inst, stage, d)) {
        EXPECT_EQ(plan.rank(r).shard.vocab_begin, next) << "rank " << r;
        EXPECT_GE(plan.rank(r).shard.vocab_end, plan.rank(r).shard.vocab_begin);
        next = plan.rank(r).shard.vocab_end;
      }
      EXPECT_EQ(next, V);
    }
}

TEST(Shards, VocabSlicesCoverTheVocabularyWhenTpDoesNotDivideIt) {
  auto m = preset("tiny-dense");
  m.vocab_size = 1001;  // ceil(1001 / 4) = 251: 251, 251, 251, 248
  Plan plan = plan_or_die(config("tiny-dense", {pool(PoolKind::kMixed, 2, 4, 3, 2)}), m);
  expect_vocab_cover(plan, 1001, 0, 0);
  expect_vocab_cover(plan, 1001, 0, 2);
  EXPECT_EQ(plan.rank(1).shard.vocab_end, 251);
  EXPECT_EQ(plan.rank(4).shard.vocab_begin, 753);
  for (int r : plan.stage_ranks(0, 1, 1)) {  // middle stage: no embedding, no LM head
    EXPECT_FALSE(plan.rank(r).shard.has_embedding);
    EXPECT_FALSE(plan.rank(r).shard.has_lm_head);
    EXPECT_EQ(plan.rank(r).shard.vocab_begin, 0);
    EXPECT_EQ(plan.rank(r).shard.vocab_end, 0);
  }
  m.vocab_size = 10;  // more tp ranks than rows to spare: the last ones get empty slices
  Plan tp8 = plan_or_die(config("tiny-dense", {mixed(8)}), m);
  expect_vocab_cover(tp8, 10, 0, 0);
}

TEST(Shards, EpExpertsCoverEachStageOnce) {
  auto m = preset("tiny-moe");  // 8 experts
  Plan plan = plan_or_die(config("tiny-moe", {pool(PoolKind::kMixed, 2, 2, 2, 2)}), m);
  for (int inst = 0; inst < 2; ++inst)
    for (int st = 0; st < 2; ++st) {
      std::vector<int> owners(8, 0);
      const std::vector<int> ranks = plan.stage_ranks(0, inst, st);
      for (size_t i = 0; i < ranks.size(); ++i) {
        const RankPlan& r = plan.rank(ranks[i]);
        EXPECT_EQ(r.shard.expert_begin, static_cast<int>(i) * 2);  // i = dp * tp + tp_rank
        EXPECT_EQ(r.shard.expert_end - r.shard.expert_begin, 2);
        EXPECT_EQ(r.shard.moe_ffn_begin, 0);
        EXPECT_EQ(r.shard.moe_ffn_end, 256);
        for (int e = r.shard.expert_begin; e < r.shard.expert_end; ++e)
          ++owners[static_cast<size_t>(e)];
      }
      EXPECT_EQ(owners, std::vector<int>(8, 1));
    }
}

TEST(Shards, MoeTpSplitsEveryExpert) {
  auto m = preset("tiny-moe");
  Plan plan = plan_or_die(config("tiny-moe", {mixed(4, 1, 1, MoeMode::kTp)}), m);
  for (int t = 0; t < 4; ++t) {
    const RankPlan& r = plan.rank(1 + t);
    EXPECT_EQ(r.shard.expert_begin, 0);
    EXPECT_EQ(r.shard.expert_end, 8);
    EXPECT_EQ(r.shard.moe_ffn_begin, t * 64);
    EXPECT_EQ(r.shard.moe_ffn_end, (t + 1) * 64);
  }
  Plan dense = plan_or_die(config("tiny-dense", {mixed(2)}), preset("tiny-dense"));
  EXPECT_EQ(dense.rank(1).shard.expert_end, 0);
  EXPECT_EQ(dense.rank(1).shard.moe_ffn_end, 0);
}

TEST(Shards, NodesFillConsecutiveRanksCoordinatorIncluded) {
  auto m = preset("tiny-moe");
  ClusterConfig c = config("tiny-moe", {mixed(2, 2)});
  c.comm.ranks_per_node = 2;
  Plan plan = plan_or_die(c, m);
  for (int r = 0; r < 5; ++r) EXPECT_EQ(plan.rank(r).node, r / 2);
  c.comm.ranks_per_node = 0;
  Plan one = plan_or_die(c, m);
  for (int r = 0; r < 5; ++r) EXPECT_EQ(one.rank(r).node, 0);
  EXPECT_NE(one.to_text().find("cannot see hosts"), std::string::npos);
}

// ---------------------------------------------------------------- memory

TEST(Memory, WholeModelOnOneRankWeighsItsParameters) {
  for (const char* name : {"tiny-moe", "tiny-dense"}) {
    auto m = preset(name);
    Plan plan = plan_or_die(config(name, {mixed(1)}), m);
    // num_parameters() leaves out Qwen3's per-head q/k norms; the shard counts them.
    const int64_t qk_norms = m.qk_norm ? m.num_hidden_layers * 2 * m.head_dim : 0;
    EXPECT_EQ(plan.rank(1).memory.weight_bytes, (m.num_parameters() + qk_norms) * 4) << name;
  }
}

TEST(Memory, Mixtral8x7bTp8FitsAn80GiBGpu) {
  auto m = preset("mixtral-8x7b");
  EXPECT_NEAR(static_cast<double>(m.num_parameters()), 46.7e9, 0.1e9);
  ClusterConfig c = config("mixtral-8x7b", {mixed(8)});
  c.model.dtype = "bfloat16";
  c.runtime.device = "cuda";
  c.runtime.max_model_len = 32768;
  Plan plan = plan_or_die(c, m);
  const double budget = 80.0 * (1 << 30) * 0.9;
  for (int r = 1; r <= 8; ++r) {
    const RankPlan& rp = plan.rank(r);
    EXPECT_NEAR(static_cast<double>(rp.memory.weight_bytes), 46.7e9 * 2 / 8, 0.01 * 46.7e9 * 2 / 8)
        << "rank " << r;
    EXPECT_NEAR(static_cast<double>(rp.memory.budget_bytes), budget, 1.0);
    // 32 layers x K and V x 1 KV head x 128 x 16 tokens x 2 bytes.
    const int64_t per_block = 32 * 2 * 1 * 128 * 16 * 2;
    EXPECT_EQ(rp.memory.kv_bytes, rp.kv_blocks * per_block);
    EXPECT_GE(rp.kv_blocks, 32768 / 16);
    EXPECT_LE(rp.memory.weight_bytes + rp.memory.activation_bytes + rp.memory.kv_bytes,
              rp.memory.budget_bytes);
    EXPECT_GT(rp.memory.budget_bytes - rp.memory.weight_bytes - rp.memory.activation_bytes -
                  rp.memory.kv_bytes,
              -1);
    EXPECT_LT(rp.memory.budget_bytes - rp.memory.weight_bytes - rp.memory.activation_bytes -
                  rp.memory.kv_bytes,
              per_block);
  }
}

// ---------------------------------------------------------------- impossible layouts

void expect_has(const std::string& msg, const std::vector<std::string>& parts) {
  for (const std::string& p : parts)
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

TEST(ImpossibleLayouts, WorldSizeMismatch) {
  auto m = preset("tiny-moe");
  expect_has(plan_error(config("tiny-moe", {mixed(2, 2)}), m, 6),
             {"test.yaml", "world size 6 does not match the config",
              "1 coordinator + mixed 1 x (tp 2 x pp 2 x dp 1) = 5 ranks"});
  expect_has(plan_error(config("tiny-moe", {pool(PoolKind::kPrefill, 1, 2, 1, 1),
                                            pool(PoolKind::kDecode, 2, 1, 1, 2)}),
                        m, 4),
             {"prefill 1 x (tp 2 x pp 1 x dp 1) + decode 2 x (tp 1 x pp 1 x dp 2) = 7 ranks"});
  EXPECT_TRUE(make_plan(config("tiny-moe", {mixed(2, 2)}), m, 5).ok());
}

TEST(ImpossibleLayouts, TpMustDivideHeads) {
  expect_has(plan_error(config("tiny-dense", {mixed(3)}), preset("tiny-dense")),
             {"pools.mixed", "tp 3 does not divide num_attention_heads 8"});
}

TEST(ImpossibleLayouts, TpMustDivideKvHeadsOrBeAMultiple) {
  auto m = preset("tiny-dense");
  m.num_attention_heads = 12;
  m.num_key_value_heads = 6;
  expect_has(plan_error(config("tiny-dense", {mixed(4)}), m),
             {"tp 4 does not divide num_key_value_heads 6"});
  m.num_key_value_heads = 4;
  expect_has(plan_error(config("tiny-dense", {mixed(6)}), m),
             {"tp 6 > num_key_value_heads 4", "num_key_value_heads to divide tp"});
}

TEST(ImpossibleLayouts, EpNeedsExpertsDivisibleByStageRanks) {
  expect_has(plan_error(config("tiny-moe", {mixed(1, 1, 3)}), preset("tiny-moe")),
             {"moe: ep needs num_experts (8) divisible by the 3 ranks of a stage (tp 1 x dp 3)"});
}

TEST(ImpossibleLayouts, MoeTpNeedsExpertWidthDivisibleByTp) {
  auto m = preset("tiny-moe");
  m.moe_intermediate_size = 250;
  expect_has(plan_error(config("tiny-moe", {mixed(4, 1, 1, MoeMode::kTp)}), m),
             {"moe_intermediate_size (250) divisible by tp 4"});
}

TEST(ImpossibleLayouts, MorePipelineStagesThanLayers) {
  expect_has(plan_error(config("tiny-moe", {mixed(1, 5)}), preset("tiny-moe")),
             {"pools.mixed", "pp 5 exceeds num_hidden_layers 4"});
}

TEST(ImpossibleLayouts, TpMustDivideIntermediateSize) {
  auto m = preset("tiny-dense");
  m.intermediate_size = 770;
  expect_has(plan_error(config("tiny-dense", {mixed(4)}), m),
             {"tp 4 does not divide intermediate_size 770"});
}

TEST(ImpossibleLayouts, DecodePoolConstraintsNameThatPool) {
  expect_has(plan_error(config("tiny-dense", {pool(PoolKind::kPrefill, 1, 2, 1, 1),
                                              pool(PoolKind::kDecode, 1, 3, 1, 1)}),
                        preset("tiny-dense")),
             {"pools.decode", "tp 3"});
}

TEST(ImpossibleLayouts, WeightsExceedTheBudget) {
  ClusterConfig c = config("mixtral-8x7b", {mixed(1)});
  c.model.dtype = "bfloat16";
  c.runtime.device = "cuda";
  expect_has(plan_error(c, preset("mixtral-8x7b")),
             {"rank 1 (pool mixed, instance 0, stage 0, dp 0, tp 0)", "weights 87.0 GiB",
              "exceed the budget of 72.0 GiB (80 GiB device memory x gpu_memory_utilization "
              "0.9)"});
}

TEST(ImpossibleLayouts, NoRoomForOneSequenceOfKv) {
  ClusterConfig c = config("mixtral-8x7b", {mixed(2)});
  c.model.dtype = "bfloat16";
  c.runtime.device = "cuda";
  c.runtime.device_memory_gib = 50;
  c.runtime.max_model_len = 32768;
  expect_has(plan_error(c, preset("mixtral-8x7b")),
             {"rank 1 (pool mixed, instance 0, stage 0, dp 0, tp 0)",
              "one sequence of max_model_len 32768 needs 2048 blocks"});
}

TEST(ImpossibleLayouts, MaxModelLenBeyondThePositions) {
  ClusterConfig c = config("tiny-moe", {mixed(1)});
  c.runtime.max_model_len = 5000;
  expect_has(plan_error(c, preset("tiny-moe")),
             {"runtime.max_model_len 5000 exceeds the model's max_position_embeddings 4096"});
}

// ---------------------------------------------------------------- serialisation and text

TEST(PlanJson, RoundTrips) {
  ClusterConfig c = config("tiny-moe", {pool(PoolKind::kPrefill, 1, 2, 2, 1),
                                        pool(PoolKind::kDecode, 2, 2, 1, 2, MoeMode::kTp)});
  c.comm.ranks_per_node = 3;
  Plan plan = plan_or_die(c, preset("tiny-moe"));
  auto back = Plan::from_json(plan.to_json());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->to_json(), plan.to_json());
  EXPECT_EQ(back->to_text(), plan.to_text());
  EXPECT_EQ(back->rank(7).coord, plan.rank(7).coord);

  nlohmann::json broken = plan.to_json();
  broken["ranks"][3]["tp"] = 1;  // no longer the layout's coordinates for rank 3
  EXPECT_FALSE(Plan::from_json(broken).ok());
  broken = plan.to_json();
  broken["ranks"][2].erase("vocab");
  auto err = Plan::from_json(broken);
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.status().message().find("vocab"), std::string::npos) << err.status().message();
}

TEST(PlanText, ShowsStagesAndOneRowPerRank) {
  ClusterConfig c = config("tiny-moe", {mixed(2, 2)});
  c.comm.ranks_per_node = 2;
  const std::string text = plan_or_die(c, preset("tiny-moe")).to_text();
  expect_has(text, {"tiny-moe", "world size  5", "stage 0: layers [0, 2) + embedding",
                    "final norm, LM head", "coordinator", "mixed:0:1:0:1", "KV blocks"});
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 15) << text;
}

}  // namespace
}  // namespace sw::parallel

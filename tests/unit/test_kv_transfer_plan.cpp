// KV transfer plans between prefill and decode layouts: for a matrix of pairs (tp 1/2/4,
// including tp above the KV heads on either side; pp 1/2/3 with stage boundaries that do not
// line up; dp 1/2), checked against an independent account of who holds what — every
// (layer, KV head) a decode rank holds arrives exactly once, from a prefill rank that holds
// it, a replicated head leaves only its lowest tp rank, and the bytes on the wire equal what
// the decode side stores. A few small pairs are also checked segment by segment by hand.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "model/model_config.h"
#include "parallel/cluster_config.h"
#include "parallel/kv_transfer_plan.h"
#include "parallel/partitioner.h"
#include "parallel/rank_layout.h"

namespace sw::parallel {
namespace {

struct Pair {
  std::string model;
  int ptp, ppp, pdp;  // prefill tp, pp, dp
  int dtp, dpp, ddp;  // decode
};

Result<Plan> plan_for(const Pair& p) {
  SW_ASSIGN_OR_RETURN(auto model, model::load_model_config(p.model));
  const std::string yaml = fmt::format(
      "model: {{path: {}, load_format: dummy}}\n"
      "runtime: {{max_model_len: 256, device_memory_gib: 4}}\n"
      "pools:\n"
      "  prefill: {{tp: {}, pp: {}, dp: {}, moe: tp}}\n"
      "  decode: {{tp: {}, pp: {}, dp: {}, moe: tp}}\n",
      p.model, p.ptp, p.ppp, p.pdp, p.dtp, p.dpp, p.ddp);
  SW_ASSIGN_OR_RETURN(auto cluster, parse_cluster_config(yaml, "pair.yaml"));
  return make_plan(cluster, model);
}

model::ShardSpec shard_at(const Plan& plan, int pool, GroupRank g) {
  RankCoord c;
  c.pool = pool;
  c.instance = 0;
  c.stage = g.stage;
  c.dp = 0;
  c.tp = g.tp;
  return plan.rank(rank_of(plan.pools, c).value()).shard;
}

class KvTransferPlanMatrix : public ::testing::TestWithParam<Pair> {};

TEST_P(KvTransferPlanMatrix, EveryDestinationCellArrivesOnceFromItsLowestHolder) {
  const Pair& pair = GetParam();
  auto plan = plan_for(pair);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  auto model = model::load_model_config(pair.model).value();
  auto kv = make_kv_transfer_plan(*plan, 0, 1);
  ASSERT_TRUE(kv.ok()) << kv.status().to_string();

  // Independent account: each side's (stage, tp) -> the (layer, head) cells it holds.
  auto cells = [&](int pool, int pp, int tp) {
    std::map<std::pair<int, int>, std::set<std::pair<int, int>>> out;
    for (int s = 0; s < pp; ++s)
      for (int t = 0; t < tp; ++t) {
        const model::ShardSpec sh = shard_at(*plan, pool, {s, t});
        for (int l = sh.layer_begin; l < sh.layer_end; ++l)
          for (int h = sh.kv_head_begin; h < sh.kv_head_end; ++h) out[{s, t}].insert({l, h});
      }
    return out;
  };
  const auto src = cells(0, pair.ppp, pair.ptp);
  const auto dst = cells(1, pair.dpp, pair.dtp);

  std::map<std::pair<int, int>, std::multiset<std::pair<int, int>>> received;
  int64_t cells_sent = 0;
  for (const KvSegment& s : kv->segments) {
    ASSERT_LT(s.layer_begin, s.layer_end);
    ASSERT_LT(s.kv_head_begin, s.kv_head_end);
    for (int l = s.layer_begin; l < s.layer_end; ++l)
      for (int h = s.kv_head_begin; h < s.kv_head_end; ++h) {
        ++cells_sent;
        received[{s.dst.stage, s.dst.tp}].insert({l, h});
        EXPECT_TRUE(src.at({s.src.stage, s.src.tp}).count({l, h}))
            << "source stage " << s.src.stage << " tp " << s.src.tp << " does not hold layer " << l
            << " head " << h;
        // Sent by the first holder in (stage, tp) order: a replicated head leaves once.
        for (const auto& [who, held] : src) {
          if (who == std::make_pair(s.src.stage, s.src.tp)) break;
          EXPECT_FALSE(held.count({l, h}))
              << "layer " << l << " head " << h << " also held by the lower rank stage "
              << who.first << " tp " << who.second;
        }
      }
  }
  int64_t cells_held = 0;
  for (const auto& [who, held] : dst) {
    cells_held += static_cast<int64_t>(held.size());
    std::multiset<std::pair<int, int>> want(held.begin(), held.end());
    EXPECT_EQ(received[who], want) << "decode stage " << who.first << " tp " << who.second;
  }
  EXPECT_EQ(cells_sent, cells_held) << "bytes on the wire equal what the decode side holds";
  EXPECT_EQ(kv->bytes_per_token(model.head_dim, 2), cells_held * 2 * model.head_dim * 2);
}

std::vector<Pair> pairs() {
  std::vector<Pair> out;
  // tiny-moe: 4 layers, 2 KV heads (tp 4 replicates them); tiny-dense the same shape, dense.
  for (const char* m : {"tiny-moe", "tiny-dense"})
    for (int ptp : {1, 2, 4})
      for (int dtp : {1, 2, 4})
        for (int ppp : {1, 2, 3})
          for (int dpp : {1, 3})
            out.push_back({m, ptp, ppp, ptp == 4 ? 1 : 2, dtp, dpp, dtp == 1 ? 2 : 1});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Pairs, KvTransferPlanMatrix, ::testing::ValuesIn(pairs()),
                         [](const auto& info) {
                           const Pair& p = info.param;
                           std::string m = p.model == "tiny-moe" ? "moe" : "dense";
                           return fmt::format("{}_tp{}pp{}dp{}_to_tp{}pp{}dp{}", m, p.ptp, p.ppp,
                                              p.pdp, p.dtp, p.dpp, p.ddp);
                         });

// Small pairs segment by segment (tiny-moe: 4 layers, KV heads 0 and 1).
TEST(KvTransferPlan, HandWorkedPairs) {
  auto text = [](const Pair& p) {
    auto plan = plan_for(p);
    EXPECT_TRUE(plan.ok()) << plan.status().to_string();
    auto kv = make_kv_transfer_plan(*plan, 0, 1);
    EXPECT_TRUE(kv.ok()) << kv.status().to_string();
    return kv.ok() ? kv->to_text() : std::string();
  };
  // tp 2 -> 1: the decode rank gathers head 0 from tp 0 and head 1 from tp 1.
  EXPECT_EQ(text({"tiny-moe", 2, 1, 1, 1, 1, 1}),
            "stage 0 tp 0 -> stage 0 tp 0: layers [0, 4), kv heads [0, 1)\n"
            "stage 0 tp 1 -> stage 0 tp 0: layers [0, 4), kv heads [1, 2)\n");
  // tp 4 -> 1: heads are replicated on the prefill side (tp 0, 1 hold head 0; tp 2, 3 head
  // 1); each leaves once, from tp 0 and tp 2.
  EXPECT_EQ(text({"tiny-moe", 4, 1, 1, 1, 1, 1}),
            "stage 0 tp 0 -> stage 0 tp 0: layers [0, 4), kv heads [0, 1)\n"
            "stage 0 tp 2 -> stage 0 tp 0: layers [0, 4), kv heads [1, 2)\n");
  // tp 1 -> 4: every decode replica gets its own copy of its head.
  EXPECT_EQ(text({"tiny-moe", 1, 1, 1, 4, 1, 1}),
            "stage 0 tp 0 -> stage 0 tp 0: layers [0, 4), kv heads [0, 1)\n"
            "stage 0 tp 0 -> stage 0 tp 1: layers [0, 4), kv heads [0, 1)\n"
            "stage 0 tp 0 -> stage 0 tp 2: layers [0, 4), kv heads [1, 2)\n"
            "stage 0 tp 0 -> stage 0 tp 3: layers [0, 4), kv heads [1, 2)\n");
  // pp 2 -> 3: prefill stages [0, 2) [2, 4); decode stages [0, 1) [1, 3) [3, 4) (the cost
  // balance puts the embedding on the first stage and the LM head on the last), so decode
  // stage 1 takes layer 1 from prefill stage 0 and layer 2 from prefill stage 1.
  EXPECT_EQ(text({"tiny-moe", 1, 2, 1, 1, 3, 1}),
            "stage 0 tp 0 -> stage 0 tp 0: layers [0, 1), kv heads [0, 2)\n"
            "stage 0 tp 0 -> stage 1 tp 0: layers [1, 2), kv heads [0, 2)\n"
            "stage 1 tp 0 -> stage 1 tp 0: layers [2, 3), kv heads [0, 2)\n"
            "stage 1 tp 0 -> stage 2 tp 0: layers [3, 4), kv heads [0, 2)\n");
}

TEST(KvTransferPlan, BadPoolsAreErrors) {
  auto plan = plan_for({"tiny-moe", 1, 1, 1, 1, 1, 1});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(make_kv_transfer_plan(*plan, 0, 2).status().code(), StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace sw::parallel

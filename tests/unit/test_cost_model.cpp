// Cost model: the alpha-beta estimates pick hierarchical for small messages on many nodes
// and flat for large ones; the least-squares fit recovers a known alpha and beta.
#include <gtest/gtest.h>

#include "comm/cost_model.h"

namespace sw::comm {
namespace {

Topology uniform(int nodes, int per_node) {
  return Topology::build(
      [&] {
        std::vector<int> w(nodes * per_node);
        for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<int>(i);
        return w;
      }(),
      emulated_world_nodes(nodes * per_node, per_node));
}

TEST(CostModel, HierarchicalWinsWhenLatencyDominates) {
  CostModel m = CostModel::from_options(CommOptions());
  Topology t = uniform(8, 8);
  EXPECT_LT(m.hierarchical_seconds(t, 64), m.flat_seconds(t, 64));
  EXPECT_EQ(choose_all_to_all(AllToAllAlgorithm::kAuto, t, 64, m),
            AllToAllAlgorithm::kHierarchical);
}

TEST(CostModel, FlatWinsWhenBandwidthDominates) {
  CostModel m = CostModel::from_options(CommOptions());
  Topology t = uniform(2, 8);
  EXPECT_GT(m.hierarchical_seconds(t, 64 << 20), m.flat_seconds(t, 64 << 20));
  EXPECT_EQ(choose_all_to_all(AllToAllAlgorithm::kAuto, t, 64 << 20, m), AllToAllAlgorithm::kFlat);
}

TEST(CostModel, ExplicitChoiceAndDegenerateLayouts) {
  CostModel m = CostModel::from_options(CommOptions());
  EXPECT_EQ(choose_all_to_all(AllToAllAlgorithm::kHierarchical, uniform(1, 4), 1, m),
            AllToAllAlgorithm::kHierarchical);
  EXPECT_EQ(choose_all_to_all(AllToAllAlgorithm::kAuto, uniform(1, 8), 1, m),
            AllToAllAlgorithm::kFlat);
  EXPECT_EQ(choose_all_to_all(AllToAllAlgorithm::kAuto, uniform(8, 1), 1, m),
            AllToAllAlgorithm::kFlat);
}

TEST(CostModel, MessageCountsOfTheEstimateMatchTheAlgorithm) {
  // With beta -> infinity the estimate is alpha x messages: (g-1) + (n-1) vs S-1.
  CostModel m{{1.0, 1e30}, {1.0, 1e30}};
  Topology t = uniform(3, 4);
  EXPECT_DOUBLE_EQ(m.hierarchical_seconds(t, 1), 3 + 2);
  EXPECT_DOUBLE_EQ(m.flat_seconds(t, 1), 11);
}

TEST(AlphaBetaFit, RecoversKnownLink) {
  std::vector<double> bytes = {1e3, 1e4, 1e5, 1e6, 1e7}, secs;
  for (double b : bytes) secs.push_back(5e-6 + b / 20e9);
  auto f = fit_alpha_beta(bytes, secs);
  ASSERT_TRUE(f.ok());
  EXPECT_NEAR(f->link.alpha_s, 5e-6, 1e-9);
  EXPECT_NEAR(f->link.beta_bytes_per_s, 20e9, 20e9 * 1e-6);
  EXPECT_NEAR(f->r2, 1.0, 1e-9);
}

TEST(AlphaBetaFit, NeedsTwoDistinctSizes) {
  std::vector<double> one = {1e3}, t1 = {1e-6};
  EXPECT_FALSE(fit_alpha_beta(one, t1).ok());
  std::vector<double> same = {1e3, 1e3}, t2 = {1e-6, 2e-6};
  EXPECT_FALSE(fit_alpha_beta(same, t2).ok());
}

}  // namespace
}  // namespace sw::comm

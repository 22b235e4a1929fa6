// Unit tests of the comm layer's small pure pieces: backend policy, CommOptions parsing,
// env overrides and validation, and topology construction for uneven groups.
#include <gtest/gtest.h>

#include <cstdlib>

#include "comm/backend_policy.h"
#include "comm/options.h"
#include "comm/topology.h"

namespace sw::comm {
namespace {

TEST(BackendPolicy, AutoPicksNcclOnlyWithOneGpuPerRankAndDeviceBuffers) {
  BackendFacts f{true, 1, 1, true};
  auto c = choose_backend(CommBackend::kAuto, f);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->backend, CommBackend::kNccl);
  EXPECT_FALSE(c->stage_through_host);
}

TEST(BackendPolicy, AutoFallsBackToMpiWithStagingWhenRanksShareAGpu) {
  auto c = choose_backend(CommBackend::kAuto, BackendFacts{true, 1, 4, true});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->backend, CommBackend::kMpi);
  EXPECT_TRUE(c->stage_through_host);
  EXPECT_NE(c->reason.find("share one GPU"), std::string::npos) << c->reason;
}

TEST(BackendPolicy, AutoIsMpiWithoutCudaOrGpu) {
  for (BackendFacts f : {BackendFacts{false, 0, 1, false}, BackendFacts{true, 0, 1, false},
                         BackendFacts{true, 2, 1, false}}) {
    auto c = choose_backend(CommBackend::kAuto, f);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->backend, CommBackend::kMpi);
    EXPECT_FALSE(c->stage_through_host);
  }
}

TEST(BackendPolicy, ExplicitNcclThatCannotWorkIsAnErrorNamingTheKey) {
  auto c = choose_backend(CommBackend::kNccl, BackendFacts{false, 0, 1, true});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("cluster.comm_backend"), std::string::npos);
  EXPECT_NE(c.status().message().find("no CUDA"), std::string::npos);
  auto dup = choose_backend(CommBackend::kNccl, BackendFacts{true, 1, 2, true});
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("duplicate GPUs"), std::string::npos);
}

TEST(BackendPolicy, ExplicitMpiAlwaysWorks) {
  auto c = choose_backend(CommBackend::kMpi, BackendFacts{true, 8, 1, true});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->backend, CommBackend::kMpi);
  EXPECT_TRUE(c->stage_through_host);
}

TEST(CommOptions, ParsesEnumsAndRejectsUnknownNames) {
  EXPECT_EQ(*parse_comm_backend("nccl"), CommBackend::kNccl);
  EXPECT_EQ(*parse_all_to_all_algorithm("hierarchical"), AllToAllAlgorithm::kHierarchical);
  auto bad = parse_all_to_all_algorithm("tree");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("cluster.all_to_all"), std::string::npos);
  EXPECT_FALSE(parse_comm_backend("gloo").ok());
}

TEST(CommOptions, EnvOverridesApplyAndAreValidated) {
  setenv("SHARDWISE_RANKS_PER_NODE", "4", 1);
  setenv("SHARDWISE_COMM_TIMEOUT_S", "2.5", 1);
  setenv("SHARDWISE_ALL_TO_ALL", "flat", 1);
  CommOptions o;
  ASSERT_TRUE(apply_env_overrides(&o).ok());
  EXPECT_EQ(o.ranks_per_node, 4);
  EXPECT_DOUBLE_EQ(o.timeout_s, 2.5);
  EXPECT_EQ(o.all_to_all, AllToAllAlgorithm::kFlat);
  setenv("SHARDWISE_COMM_TIMEOUT_S", "-1", 1);
  Status s = apply_env_overrides(&o);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("cluster.timeout_s"), std::string::npos) << s.message();
  unsetenv("SHARDWISE_RANKS_PER_NODE");
  unsetenv("SHARDWISE_COMM_TIMEOUT_S");
  unsetenv("SHARDWISE_ALL_TO_ALL");
}

TEST(CommOptions, ValidateNamesTheKey) {
  CommOptions o;
  o.control_endpoint = "http://x";
  EXPECT_NE(validate(o).message().find("cluster.control_endpoint"), std::string::npos);
  o = CommOptions();
  o.heartbeat_miss_count = 0;
  EXPECT_NE(validate(o).message().find("heartbeat_miss_count"), std::string::npos);
}

TEST(Topology, EmulatedNodesFillConsecutively) {
  EXPECT_EQ(emulated_world_nodes(7, 3), (std::vector<int>{0, 0, 0, 1, 1, 1, 2}));
  EXPECT_EQ(emulated_world_nodes(3, 0), (std::vector<int>{0, 0, 0}));
}

TEST(Topology, SubGroupSpansNodesUnevenly) {
  auto nodes = emulated_world_nodes(7, 3);
  Topology t = Topology::build({1, 2, 3, 4, 5, 6}, nodes);
  EXPECT_EQ(t.num_nodes(), 3);
  EXPECT_EQ(t.ranks_on_node(0), (std::vector<int>{0, 1}));
  EXPECT_EQ(t.ranks_on_node(1), (std::vector<int>{2, 3, 4}));
  EXPECT_EQ(t.ranks_on_node(2), (std::vector<int>{5}));
  EXPECT_EQ(t.local_index(4), 2);
  EXPECT_EQ(t.node_of(5), 2);
  EXPECT_FALSE(t.uniform());
  EXPECT_EQ(t.describe(), "3 nodes: [0 1] [2 3 4] [5]");
}

TEST(Topology, GroupOrderNeedNotFollowWorldOrder) {
  // Group rank 0 is world rank 5 (node 1), group rank 1 is world rank 0 (node 0).
  Topology t = Topology::build({5, 0, 4, 1}, emulated_world_nodes(6, 3));
  EXPECT_EQ(t.node_of(0), 1);
  EXPECT_EQ(t.node_of(1), 0);
  EXPECT_EQ(t.ranks_on_node(1), (std::vector<int>{0, 2}));
  EXPECT_TRUE(t.uniform());
}

}  // namespace
}  // namespace sw::comm

// Cluster YAML parsing: every config in launch/configs parses and plans, defaults and mappings
// (drop policy, link costs, env overrides), and errors that name the file and the key path.
// Add a key: a test that sets it and one that gives it a wrong value.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "model/model_config.h"
#include "parallel/cluster_config.h"
#include "parallel/partitioner.h"

namespace sw::parallel {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::string& yaml) {
  auto c = parse_cluster_config(yaml, "cluster.yaml");
  EXPECT_FALSE(c.ok()) << "expected an error for:\n" << yaml;
  return c.ok() ? std::string() : c.status().message();
}

const char* kMinimal = "model: {path: tiny-moe}\npools: {mixed: {}}\n";

TEST(ClusterConfig, EveryExampleConfigParsesAndPlans) {
  const fs::path dir = fs::path(SHARDWISE_SOURCE_DIR) / "launch" / "configs";
  int count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    ++count;
    auto c = load_cluster_config(entry.path().string());
    ASSERT_TRUE(c.ok()) << c.status().message();
    auto m = model::load_model_config(c->model.path);
    ASSERT_TRUE(m.ok()) << m.status().message();
    auto plan = make_plan(*c, *m, c->world_size());
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    EXPECT_EQ(plan->world_size, c->world_size());
  }
  EXPECT_GE(count, 7);
}

TEST(ClusterConfig, NamedExamplesHaveTheirShapes) {
  const fs::path dir = fs::path(SHARDWISE_SOURCE_DIR) / "launch" / "configs";
  auto c = load_cluster_config((dir / "tiny-moe-tp2-pp2.yaml").string());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->world_size(), 5);
  EXPECT_EQ(c->comm.ranks_per_node, 2);
  auto ep = load_cluster_config((dir / "tiny-moe-ep4.yaml").string());
  ASSERT_TRUE(ep.ok()) << ep.status().message();
  EXPECT_EQ(ep->pools[0].dp, 2);
  EXPECT_DOUBLE_EQ(*ep->moe.capacity_factor, 1.25);
  EXPECT_EQ(ep->moe.drop_policy, kernels::DropPolicy::kPriorityMax);
  EXPECT_EQ(ep->moe.priority_score, moe::PriorityScore::kRouter);
  auto dis = load_cluster_config((dir / "disaggregated.yaml").string());
  ASSERT_TRUE(dis.ok()) << dis.status().message();
  ASSERT_EQ(dis->pools.size(), 2u);
  EXPECT_EQ(dis->pools[0].kind, PoolKind::kPrefill);
  EXPECT_EQ(dis->pools[1].kind, PoolKind::kDecode);
}

TEST(ClusterConfig, DefaultsWhenKeysAreLeftOut) {
  auto c = parse_cluster_config(kMinimal, "cluster.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->source, "cluster.yaml");
  EXPECT_EQ(c->model.path, "tiny-moe");
  EXPECT_EQ(c->model.load_format, "auto");
  EXPECT_EQ(c->model.dtype, "float32");
  EXPECT_EQ(c->runtime.device, "cpu");
  EXPECT_EQ(c->runtime.kv_block_size, 16);
  EXPECT_DOUBLE_EQ(c->runtime.gpu_memory_utilization, 0.9);
  EXPECT_EQ(c->runtime.num_kv_blocks, 0);
  EXPECT_EQ(c->scheduler.policy, "decode_priority");
  EXPECT_EQ(c->scheduler.long_prefill_token_threshold, 0);
  ASSERT_EQ(c->pools.size(), 1u);
  EXPECT_EQ(c->pools[0].kind, PoolKind::kMixed);
  EXPECT_EQ(c->pools[0].ranks(), 1);
  EXPECT_EQ(c->pools[0].moe, MoeMode::kEp);
  EXPECT_FALSE(c->moe.capacity_factor.has_value());
  EXPECT_EQ(c->moe.drop_policy, kernels::DropPolicy::kOrder);
  EXPECT_EQ(c->moe.priority_score, moe::PriorityScore::kRouter);
  EXPECT_EQ(c->world_size(), 2);
  EXPECT_EQ(c->comm.backend, comm::CommBackend::kAuto);
  EXPECT_EQ(c->disaggregation.on_transfer_failure, "recompute");
  EXPECT_EQ(c->disaggregation.kv_host, "auto");
  EXPECT_EQ(c->disaggregation.kv_security, "curve");
}

TEST(ClusterConfig, EveryKeyIsRead) {
  auto c = parse_cluster_config(R"(
version: 1
model: {path: tiny-dense, load_format: dummy, dtype: bfloat16, dummy_seed: 7}
runtime: {device: cuda, kv_block_size: 32, gpu_memory_utilization: 0.5, device_memory_gib: 40,
          max_num_seqs: 8, max_num_batched_tokens: 512, max_model_len: 1000, num_kv_blocks: 77}
scheduler: {policy: fcfs, long_prefill_token_threshold: 96}
cluster:
  ranks_per_node: 4
  comm_backend: nccl
  all_to_all: hierarchical
  timeout_s: 30
  control_endpoint: "tcp://127.0.0.1:*"
  heartbeat_interval_s: 0.5
  heartbeat_miss_count: 5
  intra_node: {alpha_us: 2, beta_gbps: 300}
  inter_node: {alpha_us: 10, beta_gbps: 25}
pools:
  prefill: {instances: 2, tp: 2, pp: 2, dp: 1, moe: tp}
  decode: {tp: 1, dp: 4}
moe: {capacity_factor: 2, drop_policy: priority, priority: sum, priority_score: combine}
disaggregation: {on_transfer_failure: fail, kv_host: hostname, kv_security: none}
)",
                                "cluster.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->model.load_format, "dummy");
  EXPECT_EQ(c->model.dtype, "bfloat16");
  EXPECT_EQ(c->model.dummy_seed, 7u);
  EXPECT_EQ(c->runtime.device, "cuda");
  EXPECT_EQ(c->runtime.kv_block_size, 32);
  EXPECT_DOUBLE_EQ(c->runtime.gpu_memory_utilization, 0.5);
  EXPECT_DOUBLE_EQ(c->runtime.device_memory_gib, 40);
  EXPECT_EQ(c->runtime.max_num_seqs, 8);
  EXPECT_EQ(c->runtime.max_num_batched_tokens, 512);
  EXPECT_EQ(c->runtime.max_model_len, 1000);
  EXPECT_EQ(c->runtime.num_kv_blocks, 77);
  EXPECT_EQ(c->scheduler.policy, "fcfs");
  EXPECT_EQ(c->scheduler.long_prefill_token_threshold, 96);
  EXPECT_EQ(c->comm.ranks_per_node, 4);
  EXPECT_EQ(c->comm.backend, comm::CommBackend::kNccl);
  EXPECT_EQ(c->comm.all_to_all, comm::AllToAllAlgorithm::kHierarchical);
  EXPECT_DOUBLE_EQ(c->comm.timeout_s, 30);
  EXPECT_EQ(c->comm.control_endpoint, "tcp://127.0.0.1:*");
  EXPECT_DOUBLE_EQ(c->comm.heartbeat_interval_s, 0.5);
  EXPECT_EQ(c->comm.heartbeat_miss_count, 5);
  EXPECT_DOUBLE_EQ(c->comm.intra_node.alpha_s, 2e-6);
  EXPECT_DOUBLE_EQ(c->comm.intra_node.beta_bytes_per_s, 300e9);
  EXPECT_DOUBLE_EQ(c->comm.inter_node.alpha_s, 10e-6);
  EXPECT_DOUBLE_EQ(c->comm.inter_node.beta_bytes_per_s, 25e9);
  ASSERT_EQ(c->pools.size(), 2u);
  EXPECT_EQ(c->pools[0].kind, PoolKind::kPrefill);
  EXPECT_EQ(c->pools[0].ranks(), 8);
  EXPECT_EQ(c->pools[0].moe, MoeMode::kTp);
  EXPECT_EQ(c->pools[1].kind, PoolKind::kDecode);
  EXPECT_EQ(c->pools[1].ranks(), 4);
  EXPECT_EQ(c->world_size(), 13);
  EXPECT_DOUBLE_EQ(*c->moe.capacity_factor, 2.0);
  EXPECT_EQ(c->moe.drop_policy, kernels::DropPolicy::kPrioritySum);
  EXPECT_EQ(c->moe.priority_score, moe::PriorityScore::kCombine);
  EXPECT_EQ(c->disaggregation.on_transfer_failure, "fail");
  EXPECT_EQ(c->disaggregation.kv_host, "hostname");
  EXPECT_EQ(c->disaggregation.kv_security, "none");
}

TEST(ClusterConfig, EnvironmentOverridesTheFile) {
  ::setenv("SHARDWISE_RANKS_PER_NODE", "3", 1);
  auto c = parse_cluster_config(
      "model: {path: tiny-moe}\ncluster: {ranks_per_node: 2}\n"
      "pools: {mixed: {}}\n",
      "cluster.yaml");
  ::unsetenv("SHARDWISE_RANKS_PER_NODE");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->comm.ranks_per_node, 3);
}

TEST(ClusterConfigErrors, UnknownKeyNamesPathAndExpectedKeys) {
  EXPECT_EQ(error_of("model: {path: tiny-moe}\npools: {mixed: {tpp: 2}}\n"),
            "cluster.yaml: key 'pools.mixed.tpp': unknown key (expected instances, tp, pp, dp, "
            "moe)");
  EXPECT_NE(error_of(std::string(kMinimal) + "runtme: {device: cpu}\n").find("key 'runtme'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "cluster: {intra_node: {alpha: 1}}\n")
                .find("key 'cluster.intra_node.alpha': unknown key (expected alpha_us, beta_gbps)"),
            std::string::npos);
}

TEST(ClusterConfigErrors, WrongTypeQuotesTheValue) {
  EXPECT_EQ(error_of("model: {path: tiny-moe}\npools:\n  prefill: {}\n  decode: {tp: two}\n"),
            "cluster.yaml: key 'pools.decode.tp': expected an integer in [1, 1048576], got "
            "\"two\"");
  EXPECT_NE(error_of("model: {path: tiny-moe}\npools: {mixed: {dp: 0}}\n")
                .find("key 'pools.mixed.dp': expected an integer in [1, 1048576], got \"0\""),
            std::string::npos);
  EXPECT_NE(
      error_of("model: {path: tiny-moe}\npools: {mixed: {pp: 1.5}}\n").find("'pools.mixed.pp'"),
      std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "runtime: {gpu_memory_utilization: 1.5}\n")
                .find("key 'runtime.gpu_memory_utilization': expected a number in (0, 1], got "
                      "\"1.5\""),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "runtime: {kv_block_size: [16]}\n")
                .find("key 'runtime.kv_block_size': expected an integer in [1, 1024], got a list"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "moe: {capacity_factor: -1}\n")
                .find("key 'moe.capacity_factor': expected a number > 0, or null for dropless"),
            std::string::npos);
  EXPECT_NE(error_of("model: {path: tiny-moe}\npools: {mixed: 4}\n")
                .find("key 'pools.mixed': expected a mapping"),
            std::string::npos);
}

TEST(ClusterConfigErrors, BadEnumValueListsTheChoices) {
  EXPECT_EQ(error_of("model: {path: tiny-moe, dtype: fp8}\npools: {mixed: {}}\n"),
            "cluster.yaml: key 'model.dtype': expected one of float32, bfloat16, float16, got "
            "\"fp8\"");
  EXPECT_NE(error_of(std::string(kMinimal) + "cluster: {all_to_all: ring}\n")
                .find("key 'cluster.all_to_all': expected one of flat, hierarchical, auto"),
            std::string::npos);
  EXPECT_NE(error_of("model: {path: tiny-moe}\npools: {mixed: {moe: dp}}\n")
                .find("key 'pools.mixed.moe': expected one of ep, tp, got \"dp\""),
            std::string::npos);
  EXPECT_NE(
      error_of(std::string(kMinimal) + "scheduler: {policy: lifo}\n")
          .find("key 'scheduler.policy': expected one of decode_priority, fcfs, got \"lifo\""),
      std::string::npos);
  EXPECT_NE(
      error_of(std::string(kMinimal) + "scheduler: {long_prefill_token_threshold: -1}\n")
          .find(
              "key 'scheduler.long_prefill_token_threshold': expected an integer in [0, 1048576]"),
      std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "runtime: {num_kv_blocks: -3}\n")
                .find("key 'runtime.num_kv_blocks': expected an integer in [0, 4294967296]"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "moe: {priority: sum}\n")
                .find("key 'moe.priority': only meaningful with drop_policy: priority"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "moe: {priority_score: combine}\n")
                .find("key 'moe.priority_score': only meaningful with drop_policy: priority"),
            std::string::npos);
  EXPECT_NE(
      error_of(std::string(kMinimal) + "moe: {drop_policy: priority, priority_score: logits}\n")
          .find("key 'moe.priority_score': expected one of router, combine, got \"logits\""),
      std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "disaggregation: {kv_security: tls}\n")
                .find("key 'disaggregation.kv_security': expected one of curve, none, got \"tls\""),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "cluster: {control_endpoint: \"http://x\"}\n")
                .find("cluster.yaml: cluster.control_endpoint"),
            std::string::npos);
}

TEST(ClusterConfigErrors, PoolsMustBeMixedOrPrefillAndDecode) {
  const std::string both = error_of("model: {path: tiny-moe}\npools: {mixed: {}, prefill: {}}\n");
  EXPECT_NE(both.find("cluster.yaml: key 'pools': give either 'mixed' alone or both 'prefill' "
                      "and 'decode'"),
            std::string::npos)
      << both;
  const std::string neither = error_of("model: {path: tiny-moe}\npools: {}\n");
  EXPECT_NE(neither.find("cluster.yaml: key 'pools': no pool given"), std::string::npos) << neither;
  const std::string half = error_of("model: {path: tiny-moe}\npools: {prefill: {}}\n");
  EXPECT_NE(half.find("cluster.yaml: key 'pools.decode': missing"), std::string::npos) << half;
  const std::string none = error_of("model: {path: tiny-moe}\n");
  EXPECT_NE(none.find("cluster.yaml: key 'pools': required section missing"), std::string::npos)
      << none;
  const std::string no_model = error_of("pools: {mixed: {}}\n");
  EXPECT_NE(no_model.find("cluster.yaml: key 'model'"), std::string::npos) << no_model;
  const std::string no_path = error_of("model: {dtype: float32}\npools: {mixed: {}}\n");
  EXPECT_NE(no_path.find("cluster.yaml: key 'model.path': required"), std::string::npos) << no_path;
}

TEST(ClusterConfigErrors, BadYamlGivesLineAndColumn) {
  const std::string msg = error_of("model: {path: tiny-moe}\npools:\n  mixed: {tp: 2\n");
  EXPECT_NE(msg.find("cluster.yaml: YAML syntax error at line "), std::string::npos) << msg;
  EXPECT_NE(msg.find(", column "), std::string::npos) << msg;
  const std::string tabs = error_of("model:\n\tpath: x\n");
  EXPECT_NE(tabs.find("cluster.yaml: YAML syntax error at line 2"), std::string::npos) << tabs;
  EXPECT_NE(error_of("").find("cluster.yaml: empty cluster file"), std::string::npos);
  EXPECT_NE(error_of("- a\n- b\n").find("cluster.yaml: the document: expected a mapping"),
            std::string::npos);
}

TEST(ClusterConfigErrors, MissingFileNamesIt) {
  auto c = load_cluster_config("/nonexistent/cluster.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/nonexistent/cluster.yaml"), std::string::npos);
}

// yaml-cpp 0.7 accepts a repeated key and answers with the first value: `tp: 2 ... tp: 8`
// used to run with tp 2 and no word. Every mapping is checked, at any depth.
TEST(ClusterConfigErrors, DuplicateKeysNameTheKeyPathAndBothLines) {
  EXPECT_EQ(
      error_of("model: {path: tiny-moe}\npools:\n  mixed:\n    tp: 2\n    pp: 1\n    tp: 8\n"),
      "cluster.yaml: key 'pools.mixed.tp': duplicate key (first at line 4, again at line 6)");
  EXPECT_EQ(error_of("model: {path: tiny-moe}\npools: {mixed: {}}\nmodel: {path: tiny-dense}\n"),
            "cluster.yaml: key 'model': duplicate key (first at line 1, again at line 3)");
  EXPECT_NE(error_of(std::string(kMinimal) + "cluster: {intra_node: {alpha_us: 1, alpha_us: 2}}\n")
                .find("key 'cluster.intra_node.alpha_us': duplicate key"),
            std::string::npos);
}

// A "billion laughs" of aliases is cheap for yaml-cpp (aliases share nodes) but not for a walk
// that expands them: the walk is bounded.
TEST(ClusterConfigErrors, AliasBombIsRefused) {
  std::string yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 8; ++i)
    yaml += fmt::format(
        "a{1}: &a{1} [*a{0}, *a{0}, *a{0}, *a{0}, *a{0}, *a{0}, *a{0}, *a{0}, "
        "*a{0}, *a{0}]\n",
        i - 1, i);
  EXPECT_NE(error_of(yaml).find("cluster.yaml: more than 100000 YAML nodes"), std::string::npos);
}

// Issue 12, "crashes" and "silent wrap-around": sizes and counts have documented bounds.
TEST(ClusterConfigErrors, SizesAndCountsAreBounded) {
  EXPECT_NE(error_of(std::string(kMinimal) + "runtime: {kv_block_size: 2000000000}\n")
                .find("key 'runtime.kv_block_size': expected an integer in [1, 1024], got "
                      "\"2000000000\""),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "runtime: {max_num_seqs: 4294967297}\n")
                .find("key 'runtime.max_num_seqs': expected an integer in [1, 65536], got "
                      "\"4294967297\""),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "runtime: {max_num_batched_tokens: 1e12}\n")
                .find("key 'runtime.max_num_batched_tokens': expected an integer in [1, 1048576]"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "runtime: {max_model_len: 99999999999}\n")
                .find("key 'runtime.max_model_len': expected an integer in [0, 16777216]"),
            std::string::npos);
  EXPECT_NE(error_of("model: {path: tiny-moe}\npools: {mixed: {tp: 4294967298}}\n")
                .find("key 'pools.mixed.tp': expected an integer in [1, 1048576], got "
                      "\"4294967298\""),
            std::string::npos);
  EXPECT_NE(error_of("model: {path: tiny-moe}\npools: {mixed: {tp: 65536, dp: 65536}}\n")
                .find("cluster.yaml: key 'pools.mixed': instances 1 x tp 65536 x pp 1 x dp 65536 "
                      "= 4294967296 ranks, more than the limit of 1048576"),
            std::string::npos);
  EXPECT_NE(error_of("model: {path: tiny-moe}\npools: {prefill: {tp: 1048576}, decode: {}}\n")
                .find("key 'pools': 1048578 ranks in all, more than the limit of 1048576"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "cluster: {ranks_per_node: 4294967296}\n")
                .find("key 'cluster.ranks_per_node': expected an integer in [0, 1048576]"),
            std::string::npos);
}

// Issue 12, "accepted but wrong": device_memory_gib 1e300 printed a negative budget.
TEST(ClusterConfigErrors, DeviceMemoryIsBoundedAndTheLargestPlansPositive) {
  EXPECT_NE(error_of(std::string(kMinimal) + "runtime: {device_memory_gib: 1e300}\n")
                .find("key 'runtime.device_memory_gib': expected a number of GiB in [0, 65536] "
                      "(0: 80 for cuda, 16 for cpu), got \"1e300\""),
            std::string::npos);
  auto c = parse_cluster_config(std::string(kMinimal) + "runtime: {device_memory_gib: 65536}\n",
                                "cluster.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  auto model = model::load_model_config("tiny-moe");
  ASSERT_TRUE(model.ok());
  auto plan = make_plan(*c, *model, 0);
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  for (const RankPlan& r : plan->ranks) {
    if (r.coord.coordinator) continue;
    EXPECT_EQ(r.memory.budget_bytes, static_cast<int64_t>(65536 * 0.9 * 1024 * 1024 * 1024));
    EXPECT_GT(r.kv_blocks, 0);
  }
}

// Issue 12, "overflow of huge durations": timeout_s 1e10 timed out at once ("after 0.0 s")
// and heartbeat_interval_s 1e12 flagged every peer lost; both are bounded before any
// std::chrono conversion, in the file and in the SHARDWISE_* overrides.
TEST(ClusterConfigErrors, DurationsAreBoundedBeforeConversion) {
  EXPECT_EQ(error_of(std::string(kMinimal) + "cluster: {timeout_s: 1e10}\n"),
            "cluster.yaml: key 'cluster.timeout_s': expected a number of seconds in (0, 1e+06], "
            "got \"1e10\"");
  EXPECT_EQ(error_of(std::string(kMinimal) + "cluster: {heartbeat_interval_s: 1e12}\n"),
            "cluster.yaml: key 'cluster.heartbeat_interval_s': expected a number of seconds in "
            "[0.001, 3600], got \"1e12\"");
  EXPECT_NE(error_of(std::string(kMinimal) + "cluster: {heartbeat_interval_s: 1e-9}\n")
                .find("key 'cluster.heartbeat_interval_s'"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) +
                     "cluster: {heartbeat_interval_s: 3600, heartbeat_miss_count: 1000}\n")
                .find("cluster.heartbeat_miss_count: 1000 heartbeats of 3600 s make 3.6e+06 s "
                      "before a peer counts as lost, more than the limit of 1e+06 s"),
            std::string::npos);
  EXPECT_NE(error_of(std::string(kMinimal) + "cluster: {timeout_s: .nan}\n")
                .find("key 'cluster.timeout_s'"),
            std::string::npos);
  ::setenv("SHARDWISE_COMM_TIMEOUT_S", "1e10", 1);
  const std::string env_timeout = error_of(kMinimal);
  ::unsetenv("SHARDWISE_COMM_TIMEOUT_S");
  EXPECT_NE(env_timeout.find("after SHARDWISE_* environment overrides: cluster.timeout_s: "
                             "10000000000 must be in (0, 1e+06] seconds"),
            std::string::npos)
      << env_timeout;
  ::setenv("SHARDWISE_RANKS_PER_NODE", "4294967298", 1);
  const std::string env_rpn = error_of(kMinimal);
  ::unsetenv("SHARDWISE_RANKS_PER_NODE");
  EXPECT_NE(env_rpn.find("SHARDWISE_RANKS_PER_NODE=4294967298: expected an integer in "
                         "[0, 1048576]"),
            std::string::npos)
      << env_rpn;
  ::setenv("SHARDWISE_HEARTBEAT_MISS_COUNT", "99999999999999999999", 1);
  const std::string env_miss = error_of(kMinimal);
  ::unsetenv("SHARDWISE_HEARTBEAT_MISS_COUNT");
  EXPECT_NE(env_miss.find("SHARDWISE_HEARTBEAT_MISS_COUNT='99999999999999999999': expected a "
                          "64-bit integer"),
            std::string::npos)
      << env_miss;
}

// The control endpoint is used by separate MPI processes: inproc:// cannot work there.
TEST(ClusterConfigErrors, InprocEndpointIsRefusedForAMultiProcessJob) {
  EXPECT_EQ(error_of(std::string(kMinimal) + "cluster: {control_endpoint: \"inproc://ctl\"}\n"),
            "cluster.yaml: cluster.control_endpoint: 'inproc://ctl' only connects threads of one "
            "process, but this job runs 2 processes (the coordinator and its workers); use "
            "tcp://host:port or ipc://path");
  ::setenv("SHARDWISE_CONTROL_ENDPOINT", "inproc://x", 1);
  const std::string env = error_of(kMinimal);
  ::unsetenv("SHARDWISE_CONTROL_ENDPOINT");
  EXPECT_NE(env.find("'inproc://x' only connects threads of one process"), std::string::npos)
      << env;
}

TEST(ClusterConfigErrors, OversizedFileIsRefusedBeforeParsing) {
  const fs::path path = fs::path(::testing::TempDir()) / "huge_cluster.yaml";
  {
    std::ofstream out(path);
    out << kMinimal << "# " << std::string(16 << 20, 'x') << "\n";
  }
  auto c = load_cluster_config(path.string());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("the cluster config file larger than the limit of 16777216 "
                                      "bytes"),
            std::string::npos)
      << c.status().message();
}

}  // namespace
}  // namespace sw::parallel

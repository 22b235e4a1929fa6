// Layout equivalence: `mpirun -np N shardwise generate --config F` over tensor, pipeline,
// data and expert parallel layouts, and over several instances of a mixed pool, must give the
// single-process logits (float32, dropless) within 1e-5 of the logit scale and the same
// greedy tokens. The CI subset runs by default;
// SHARDWISE_LAYOUT_MATRIX=full (tests/mpi/layout_matrix.sh) runs the whole matrix.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/npy.h"
#include "tests/unit/run_command.h"

namespace sw {
namespace {

namespace fs = std::filesystem;

struct Layout {
  std::string model;
  int tp = 1, pp = 1, dp = 1;
  std::string moe = "ep";
  std::string all_to_all = "flat";
  int ranks_per_node = 0;
  int instances = 1;  // replicas in the mixed pool
  int world() const { return 1 + instances * tp * pp * dp; }
  std::string name() const {
    std::string m = model.substr(model.find_last_of('/') + 1);
    for (char& c : m)
      if (c == '-' || c == '/' || c == '.') c = '_';
    return m + (instances > 1 ? "_x" + std::to_string(instances) : "") + "_tp" +
           std::to_string(tp) + "_pp" + std::to_string(pp) + "_dp" + std::to_string(dp) + "_" +
           moe + "_" + all_to_all + "_rpn" + std::to_string(ranks_per_node);
  }
};

void PrintTo(const Layout& l, std::ostream* os) { *os << l.name(); }

using Output = testing_util::CommandRun;

Output run(const std::string& cmd) { return testing_util::run_command(cmd); }

const std::string kPrompts = R"({"prompt_ids": [5]}
{"prompt_ids": [11, 250, 3, 99, 42, 7, 100]}
{"prompt_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]}
)";
constexpr int kNumPrompts = 3;

fs::path work_dir() {
  fs::path d = fs::path(::testing::TempDir()) / "layout_equivalence";
  fs::create_directories(d);
  return d;
}

std::string common_args(const fs::path& prompts) {
  return " --prompts " + prompts.string() + " --max-new-tokens 5 --ignore-eos --json";
}

std::vector<std::string> json_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(line);
  return out;
}

// Weights: a folder with only config.json (tests/fixtures/configs) takes dummy weights.
std::string load_format(const std::string& model) {
  return model.find("/configs/") != std::string::npos ? "dummy" : "auto";
}

// Single-process reference per model, computed once.
const Output& reference(const std::string& model) {
  static std::map<std::string, Output> cache;
  auto it = cache.find(model);
  if (it != cache.end()) return it->second;
  fs::path dir = work_dir() / ("ref_" + std::to_string(cache.size()));
  fs::create_directories(dir);
  std::ofstream(dir / "prompts.jsonl") << kPrompts;
  Output o = run(std::string(SHARDWISE_CLI) + " generate --model " + model + " --load-format " +
                 load_format(model) + common_args(dir / "prompts.jsonl") + " --dump-logits " +
                 (dir / "logits.npy").string());
  o.out += "\n#dir " + dir.string();
  return cache.emplace(model, o).first->second;
}

// Runs `mpirun -np world shardwise generate --config` with `pools_yaml` (the `pools:` line and
// anything after it) and checks tokens and logits against the single-process reference.
void expect_equals_single_process(const std::string& model, const std::string& name, int world,
                                  const std::string& cluster_yaml, int ranks_per_node = 0,
                                  const std::string& all_to_all = "flat") {
  const Output& ref = reference(model);
  ASSERT_EQ(ref.exit_code, 0) << ref.out;
  const fs::path ref_dir = ref.out.substr(ref.out.rfind("#dir ") + 5);

  fs::path dir = work_dir() / name;
  fs::create_directories(dir);
  std::ofstream(dir / "prompts.jsonl") << kPrompts;
  std::ofstream(dir / "cluster.yaml")
      << "model: {path: \"" << model << "\", load_format: " << load_format(model)
      << ", dtype: float32}\n"
      << "runtime: {device: cpu, kv_block_size: 4, max_num_seqs: 4, "
         "max_num_batched_tokens: 9, max_model_len: 64}\n"
      << "cluster: {ranks_per_node: " << ranks_per_node << ", all_to_all: " << all_to_all
      << ", timeout_s: 120, kv_transfer_timeout_s: 60, control_endpoint: "
         "\"tcp://127.0.0.1:*\"}\n"
      << cluster_yaml << "moe: {capacity_factor: null}\n";
  const std::string cmd = std::string(SHARDWISE_MPIEXEC) +
                          " --allow-run-as-root --oversubscribe -np " + std::to_string(world) +
                          " " + SHARDWISE_CLI + " generate --config " +
                          (dir / "cluster.yaml").string() + common_args(dir / "prompts.jsonl") +
                          " --dump-logits " + (dir / "logits.npy").string();
  Output got = run(cmd);
  ASSERT_EQ(got.exit_code, 0) << cmd << "\n" << got.out;

  auto ref_lines = json_lines(ref.out), got_lines = json_lines(got.out);
  ASSERT_EQ(got_lines.size(), static_cast<size_t>(kNumPrompts)) << got.out;
  for (int i = 0; i < kNumPrompts; ++i) {
    SCOPED_TRACE("prompt " + std::to_string(i));
    EXPECT_EQ(nlohmann::json::parse(got_lines[i])["output_ids"],
              nlohmann::json::parse(ref_lines[i])["output_ids"]);
    const std::string file = "logits_" + std::to_string(i) + ".npy";
    auto want = read_npy((ref_dir / file).string());
    auto have = read_npy((dir / file).string());
    ASSERT_TRUE(want.ok() && have.ok()) << want.status().to_string() << have.status().to_string();
    ASSERT_EQ(have->shape(), want->shape());
    double scale = 1, diff = 0;
    const float* a = have->data_as<float>();
    const float* b = want->data_as<float>();
    for (int64_t k = 0; k < want->numel(); ++k) {
      scale = std::max(scale, static_cast<double>(std::abs(b[k])));
      diff = std::max(diff, static_cast<double>(std::abs(a[k] - b[k])));
    }
    EXPECT_LE(diff / scale, 1e-5) << "max |logit diff| relative to the logit scale";
  }
}

class LayoutTest : public ::testing::TestWithParam<Layout> {};

TEST_P(LayoutTest, PartitionedLogitsEqualSingleProcess) {
  const Layout& l = GetParam();
  std::ostringstream pools;
  pools << "pools: {mixed: {instances: " << l.instances << ", tp: " << l.tp << ", pp: " << l.pp
        << ", dp: " << l.dp << ", moe: " << l.moe << "}}\n";
  expect_equals_single_process(l.model, l.name(), l.world(), pools.str(), l.ranks_per_node,
                               l.all_to_all);
}

// Prefill and decode pools of different layouts: the KV of each prompt moves layer by layer
// from the prefill ranks to the decode ranks that hold those layers and heads.
struct PoolLayout {
  int tp = 1, pp = 1, dp = 1, instances = 1;
  int ranks() const { return tp * pp * dp * instances; }
  std::string yaml() const {
    return "{instances: " + std::to_string(instances) + ", tp: " + std::to_string(tp) +
           ", pp: " + std::to_string(pp) + ", dp: " + std::to_string(dp) + ", moe: ep}";
  }
  std::string name() const {
    return (instances > 1 ? std::to_string(instances) + "x" : std::string()) + "tp" +
           std::to_string(tp) + "pp" + std::to_string(pp) + "dp" + std::to_string(dp);
  }
};

struct DisaggLayout {
  std::string model;
  PoolLayout prefill, decode;
  std::string name() const {
    std::string m = model.substr(model.find_last_of('/') + 1);
    for (char& c : m)
      if (c == '-' || c == '.') c = '_';
    return m + "_" + prefill.name() + "_to_" + decode.name();
  }
};

void PrintTo(const DisaggLayout& l, std::ostream* os) { *os << l.name(); }

class DisaggTest : public ::testing::TestWithParam<DisaggLayout> {};

TEST_P(DisaggTest, DisaggregatedLogitsEqualSingleProcess) {
  const DisaggLayout& l = GetParam();
  const std::string pools =
      "pools:\n  prefill: " + l.prefill.yaml() + "\n  decode: " + l.decode.yaml() + "\n";
  expect_equals_single_process(l.model, "disagg_" + l.name(),
                               1 + l.prefill.ranks() + l.decode.ranks(), pools);
}

std::vector<DisaggLayout> disagg_layouts() {
  const std::string hf = std::string(SHARDWISE_FIXTURES_DIR) + "/hf/";
  std::vector<DisaggLayout> out;
  for (const std::string& model : {std::string("tiny-moe"), std::string("tiny-dense"), hf + "llama",
                                   hf + "mixtral", hf + "qwen3_moe"}) {
    const bool two_layers = model.ends_with("mixtral");  // pp 3 needs 3 layers
    out.push_back({model, {.tp = 2}, {.tp = 1}});
    out.push_back({model, {.tp = 1}, {.tp = 2}});
    out.push_back({model, {.tp = 4}, {.tp = 1}});  // 2 KV heads: replicated on the prefill side
    out.push_back({model, {.pp = 2}, {.pp = 1}});
    out.push_back({model, {.pp = 1}, {.pp = two_layers ? 2 : 3}});
    out.push_back({model, {.dp = 2}, {.tp = 1}});  // EP over the prefill's dp groups
    out.push_back({model, {.tp = 1}, {.instances = 2}});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Pairs, DisaggTest, ::testing::ValuesIn(disagg_layouts()),
                         [](const auto& info) { return info.param.name(); });

std::vector<Layout> layouts() {
  const char* m = std::getenv("SHARDWISE_LAYOUT_MATRIX");
  std::vector<Layout> out;
  if (m && std::string(m) == "full") {
    // Every (tp, pp, dp) for both tiny models; MoE mode, all-to-all algorithm and node size
    // rotate so each value meets many layouts. tiny-*: 4 layers (pp 3 does not divide them),
    // 2 KV heads (tp 4 replicates them), 8 experts.
    const char* a2a[] = {"flat", "hierarchical"};
    const int rpn[] = {1, 2, 4};
    int k = 0;
    for (const char* model : {"tiny-moe", "tiny-dense"})
      for (int tp : {1, 2, 4})
        for (int pp : {1, 2, 3})
          for (int dp : {1, 2})
            for (const char* moe : {"ep", "tp"}) {
              if (std::string(model) == "tiny-dense" && std::string(moe) == "tp") continue;
              // Two replicas where the world stays small enough for one machine.
              const int instances = tp * pp * dp <= 4 && k % 2 == 1 ? 2 : 1;
              out.push_back({model, tp, pp, dp, moe, a2a[k % 2], rpn[k % 3], instances});
              ++k;
            }
    return out;
  }
  const std::string hf = std::string(SHARDWISE_FIXTURES_DIR) + "/hf/";
  const std::string vocab1023 = std::string(SHARDWISE_FIXTURES_DIR) + "/configs/tiny-moe-vocab1023";
  return {
      // Two replicas of tp 2: requests spread by the router, each instance its own ranks.
      {"tiny-moe", 2, 1, 1, "ep", "flat", 0, 2},
      {"tiny-dense", 1, 2, 1, "ep", "flat", 2, 2},
      // Vocab 1023 at tp 2: slices of 512 and 511 rows in the embedding and LM head gather.
      {vocab1023, 2, 1, 1, "ep", "flat", 0},
      {vocab1023, 2, 2, 1, "tp", "hierarchical", 2},
      {"tiny-moe", 2, 2, 1, "ep", "hierarchical", 2},  // TP + PP + EP across emulated nodes
      {"tiny-moe", 1, 3, 1, "ep", "flat", 0},          // pp 3 over 4 layers
      {"tiny-moe", 2, 1, 2, "ep", "hierarchical", 2},  // EP over dp groups, uneven nodes
      {"tiny-moe", 4, 1, 1, "tp", "flat", 4},          // tp 4 > 2 KV heads; MoE split by tp
      {"tiny-moe", 1, 1, 2, "tp", "flat", 1},          // dp 2 with MoE tp
      {"tiny-dense", 2, 2, 2, "ep", "flat", 4},        // dense TP + PP + DP
      // Real checkpoints (HF fixtures): 3 layers over pp 2, safetensors slices per rank.
      {hf + "qwen3_moe", 2, 2, 1, "ep", "flat", 2},
      {hf + "mixtral", 2, 1, 2, "ep", "hierarchical", 2},
      {hf + "llama", 2, 3, 1, "ep", "flat", 0},
  };
}

// Capacity-limited MoE across dp groups with --verbose: the run succeeds (dp groups with no
// tokens in a step still take part in every collective) and the per-layer metrics add up to
// every token of every dp group, for EP (summed by the dispatcher over the stage) and for MoE
// tp (summed by the coordinator over dp groups).
class PartitionedMoeMetrics : public ::testing::TestWithParam<std::string> {};

TEST_P(PartitionedMoeMetrics, CapacityDropsAndVerboseMetricsAddUp) {
  fs::path dir = work_dir() / ("capacity_" + GetParam());
  fs::create_directories(dir);
  std::ofstream(dir / "prompts.jsonl") << kPrompts;
  std::ofstream(dir / "cluster.yaml")
      << "model: {path: tiny-moe, load_format: dummy}\n"
      << "runtime: {kv_block_size: 4, max_num_seqs: 4, max_num_batched_tokens: 9, max_model_len: "
         "64}\n"
      << "cluster: {ranks_per_node: 3, all_to_all: hierarchical, timeout_s: 120, control_endpoint: "
         "\"tcp://127.0.0.1:*\"}\n"
      << "pools: {mixed: {tp: 2, pp: 2, dp: 2, moe: " << GetParam() << "}}\n"
      << "moe: {capacity_factor: 0.5, drop_policy: priority, priority: max}\n";
  const std::string cmd = std::string(SHARDWISE_MPIEXEC) +
                          " --allow-run-as-root --oversubscribe -np 9 " + SHARDWISE_CLI +
                          " generate --config " + (dir / "cluster.yaml").string() +
                          common_args(dir / "prompts.jsonl") + " --verbose";
  Output got = run(cmd);
  ASSERT_EQ(got.exit_code, 0) << cmd << "\n" << got.out;
  EXPECT_EQ(json_lines(got.out).size(), static_cast<size_t>(kNumPrompts));
  // 27 prompt tokens + 3 x 4 decode tokens, top-2 routing.
  const int64_t assignments = (27 + 12) * 2;
  int layers = 0;
  int64_t total_dropped = 0;
  std::istringstream in(got.out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("moe layer ", 0) != 0) continue;
    ++layers;
    const auto open = line.find('['), close = line.find(']');
    std::istringstream counts(line.substr(open + 1, close - open - 1));
    int64_t kept = 0;
    for (int64_t n; counts >> n;) kept += n;
    int64_t dropped = 0, of = 0;
    ASSERT_EQ(std::sscanf(line.c_str() + close, "], dropped %ld of %ld", &dropped, &of), 2) << line;
    EXPECT_EQ(of, assignments) << line;
    EXPECT_EQ(kept + dropped, of) << line;
    total_dropped += dropped;
  }
  EXPECT_EQ(layers, 4) << got.out;
  EXPECT_GT(total_dropped, 0) << "capacity factor 0.5 must drop assignments";
}

INSTANTIATE_TEST_SUITE_P(MoeModes, PartitionedMoeMetrics, ::testing::Values("ep", "tp"));

// A bad request under mpirun is rejected on its own: the other prompts are served, the
// workers are shut down cleanly (no MPI_Abort) and the exit status says what was rejected.
TEST(PartitionedMoe, BadRequestIsRejectedAndTheJobEndsCleanly) {
  fs::path dir = work_dir() / "bad_request";
  fs::create_directories(dir);
  std::ofstream(dir / "prompts.jsonl")
      << "{\"prompt_ids\": [1, 2, 3]}\n{\"prompt_ids\": [7, 4096]}\n";
  std::ofstream(dir / "cluster.yaml")
      << "model: {path: tiny-moe, load_format: dummy}\n"
      << "runtime: {max_num_seqs: 4, max_model_len: 64}\n"
      << "cluster: {timeout_s: 60, control_endpoint: \"tcp://127.0.0.1:*\"}\n"
      << "pools: {mixed: {tp: 2, moe: ep}}\n";
  Output got = run(std::string(SHARDWISE_MPIEXEC) + " --allow-run-as-root --oversubscribe -np 3 " +
                   SHARDWISE_CLI + " generate --config " + (dir / "cluster.yaml").string() +
                   common_args(dir / "prompts.jsonl"));
  EXPECT_NE(got.exit_code, 0) << got.out;
  auto lines = json_lines(got.out);
  ASSERT_EQ(lines.size(), 2u) << got.out;
  EXPECT_EQ(nlohmann::json::parse(lines[0])["output_ids"].size(), 5u);
  EXPECT_EQ(nlohmann::json::parse(lines[1])["finish_reason"], "error");
  EXPECT_NE(got.out.find("token id 4096 is outside the vocabulary"), std::string::npos) << got.out;
  EXPECT_EQ(got.out.find("MPI_ABORT"), std::string::npos) << got.out;
}

INSTANTIATE_TEST_SUITE_P(Layouts, LayoutTest, ::testing::ValuesIn(layouts()),
                         [](const auto& info) { return info.param.name(); });

}  // namespace
}  // namespace sw

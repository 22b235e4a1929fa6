// Issue 12's reproductions against the `shardwise` executable: huge sizes, wrapped integers,
// huge durations and values that used to be accepted but wrong now end with a one-line
// error naming the file and key and a non-zero exit, never std::bad_alloc, an abort or a
// wrapped value. Parser-level cases live in test_model_config, test_cluster_config,
// test_json_fields and test_control_channel.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/unit/run_command.h"

namespace sw {
namespace {

namespace fs = std::filesystem;

using CliRun = testing_util::CommandRun;

// `prefix` runs before the command in the same shell (e.g. a ulimit).
CliRun run(const std::string& args, const std::string& prefix = "") {
  return testing_util::run_cli(args, "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1; " + prefix);
}

// A model folder whose config.json is tiny-dense's shape with `overrides` applied.
std::string model_dir(const std::string& name, const nlohmann::json& overrides) {
  nlohmann::json c = {{"model_type", "llama"},    {"vocab_size", 128},
                      {"hidden_size", 64},        {"intermediate_size", 128},
                      {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                      {"num_key_value_heads", 2}, {"max_position_embeddings", 256},
                      {"eos_token_id", 0}};
  for (const auto& [k, v] : overrides.items()) c[k] = v;
  const fs::path dir = fs::path(::testing::TempDir()) / ("limits_" + name);
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << c.dump();
  return dir.string();
}

std::string write_file(const std::string& name, const std::string& text) {
  const fs::path path = fs::path(::testing::TempDir()) / name;
  std::ofstream(path) << text;
  return path.string();
}

void expect_clean_error(const CliRun& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.exit_code, -1) << "killed by a signal: " << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("bad_alloc"), std::string::npos) << r.out;
}

const char* kGenerate =
    "generate --load-format dummy --prompt-ids 1,2,3 --max-new-tokens 2 --model ";

// "vocab_size/hidden_size/intermediate_size = 1e12 with dummy weights -> std::bad_alloc".
TEST(InputLimits, HugeModelSizesAreConfigErrors) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size"}) {
    const std::string dir = model_dir(std::string("huge_") + key, {{key, 1000000000000LL}});
    expect_clean_error(run(kGenerate + dir),
                       dir + "/config.json: key '" + key + "': expected an integer in [1, ");
  }
}

// "num_hidden_layers 4294967299 builds 3 layers".
TEST(InputLimits, WrappedLayerCountIsAnError) {
  const std::string dir = model_dir("layers", {{"num_hidden_layers", 4294967299LL}});
  expect_clean_error(run(kGenerate + dir),
                     "key 'num_hidden_layers': expected an integer in "
                     "[1, 512], got number 4294967299");
}

// "rope_theta: -1 or rms_norm_eps: -1 run and emit NaN-derived tokens with exit 0;
// max_position_embeddings <= 0 accepted".
TEST(InputLimits, NonPositiveRopeEpsAndPositionsAreErrors) {
  expect_clean_error(run(kGenerate + model_dir("theta", {{"rope_theta", -1}})),
                     "key 'rope_theta': expected a number > 0, got -1");
  expect_clean_error(run(kGenerate + model_dir("eps", {{"rms_norm_eps", -1}})),
                     "key 'rms_norm_eps': expected a number > 0, got -1");
  expect_clean_error(run(kGenerate + model_dir("maxpos", {{"max_position_embeddings", 0}})),
                     "key 'max_position_embeddings': expected an integer in [1, 16777216], got "
                     "number 0");
}

// "prompt id 4294967301 runs as 5; max_new_tokens 4294967299 gives 3 tokens" (the prompts
// file is read through JsonFields, which no longer narrows).
TEST(InputLimits, WrappedPromptIntegersAreErrors) {
  const std::string ids = write_file("wrapped_ids.jsonl", "{\"prompt_ids\": [1, 4294967301]}\n");
  expect_clean_error(
      run("generate --model tiny-dense --load-format dummy --max-new-tokens 2 --prompts " + ids),
      "key 'prompt_ids': expected a list of integers, each an integer in [-2147483648, "
      "2147483647], got array [1,4294967301]");
  const std::string tokens =
      write_file("wrapped_max.jsonl", "{\"prompt_ids\": [1, 2], \"max_new_tokens\": 4294967299}\n");
  expect_clean_error(
      run("generate --model tiny-dense --load-format dummy --max-new-tokens 2 --prompts " + tokens),
      "prompt (2 tokens) + max_new_tokens (4294967299) = 4294967301 exceeds max_model_len 4096");
}

// Cluster files: huge durations, huge memory, inproc endpoints and repeated keys.
TEST(InputLimits, ClusterFileErrorsFromThePlanCommand) {
  const std::string base = "model: {path: tiny-moe}\npools: {mixed: {tp: 2}}\n";
  struct Case {
    const char* extra;
    const char* needle;
  };
  const Case cases[] = {
      {"runtime: {device_memory_gib: 1e300}\n",
       "key 'runtime.device_memory_gib': expected a number of GiB in [0, 65536]"},
      {"cluster: {timeout_s: 1e10}\n",
       "key 'cluster.timeout_s': expected a number of seconds in (0, 1e+06], got \"1e10\""},
      {"cluster: {heartbeat_interval_s: 1e12}\n",
       "key 'cluster.heartbeat_interval_s': expected a number of seconds in [0.001, 3600]"},
      {"cluster: {control_endpoint: \"inproc://ctl\"}\n",
       "cluster.control_endpoint: 'inproc://ctl' only connects threads of one process, but this "
       "job runs 3 processes"},
      {"runtime: {kv_block_size: 16}\nruntime: {kv_block_size: 2000000000}\n",
       "key 'runtime': duplicate key (first at line 3, again at line 4)"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::string path = write_file(fmt::format("cluster_{}.yaml", i++), base + c.extra);
    CliRun r = run("plan --config " + path);
    expect_clean_error(r, c.needle);
    EXPECT_NE(r.out.find(path + ": "), std::string::npos) << r.out;
  }
  // The largest device memory allowed still plans a positive budget.
  const std::string ok =
      write_file("cluster_max_mem.yaml", base + "runtime: {device_memory_gib: 65536}\n");
  CliRun r = run("plan --config " + ok);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("memory      budget 58982.4 GiB per worker"), std::string::npos) << r.out;
}

// Within every bound a model can still be far larger than the machine: the last line of
// defence in main() turns std::bad_alloc into one line and exit 1 instead of an abort (rc
// 134). The address space is capped so the allocation fails the same way on any machine.
TEST(InputLimits, OutOfMemoryIsOneLineAndExitOne) {
  const std::string dir = model_dir("oom", {{"hidden_size", 4096},
                                            {"intermediate_size", 262144},
                                            {"num_attention_heads", 32},
                                            {"num_key_value_heads", 8},
                                            {"num_hidden_layers", 1}});
  CliRun r = run(kGenerate + dir, "ulimit -v 3000000;");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("shardwise: out of memory (std::bad_alloc)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace sw

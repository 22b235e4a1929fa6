// The `shardwise` executable end to end: reproducible generate with --json, --dump-logits
// against the HF fixture logits, and clear errors with non-zero exits.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/npy.h"
#include "kernels/backend.h"
#include "model/safetensors.h"
#include "tests/unit/run_command.h"
#include "tests/unit/test_paths.h"

namespace sw {
namespace {

using CliRun = testing_util::CommandRun;

CliRun run(const std::string& args) { return testing_util::run_cli(args); }

TEST(Cli, GenerateIsReproducibleAndPrintsJson) {
  const std::string args =
      "generate --model tiny-moe --load-format dummy --prompt-ids 1,2,3 --max-new-tokens 8 --json";
  CliRun a = run(args), b = run(args);
  ASSERT_EQ(a.exit_code, 0) << a.out;
  ASSERT_EQ(b.exit_code, 0) << b.out;
  auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["prompt_ids"], nlohmann::json({1, 2, 3}));
  ASSERT_TRUE(ja["output_ids"].is_array());
  EXPECT_LE(ja["output_ids"].size(), 8u);
  EXPECT_EQ(ja["output_ids"], jb["output_ids"]);
  EXPECT_TRUE(ja["timing"].contains("ttft_ms"));
  EXPECT_TRUE(ja["timing"].contains("total_ms"));
  EXPECT_GT(ja["timing"]["total_ms"].get<double>(), 0.0);
  // Seeded sampling is reproducible too, and differs from greedy (and between seeds): with
  // 8 tokens drawn from 1024 at temperature 1, equal sequences would mean sampling was skipped.
  const std::string sampled = args + " --ignore-eos --temperature 1.0 --top-p 0.9 --seed ";
  CliRun s1 = run(sampled + "3"), s2 = run(sampled + "3"), s3 = run(sampled + "4");
  CliRun greedy = run(args + " --ignore-eos");
  for (const CliRun* r : {&s1, &s2, &s3, &greedy}) ASSERT_EQ(r->exit_code, 0) << r->out;
  const auto ids = [](const CliRun& r) { return nlohmann::json::parse(r.out)["output_ids"]; };
  EXPECT_EQ(ids(greedy).size(), 8u);
  EXPECT_EQ(ids(s1), ids(s2));
  EXPECT_NE(ids(s1), ids(greedy));
  EXPECT_NE(ids(s1), ids(s3));
}

// Decode graphs (recorded ops on the CPU backend) and a KV cache sized from memory after a
// profile step give the tokens of the default eager run with a cache sized to the prompts.
TEST(Cli, DecodeGraphsAndMemorySizedKvCacheGiveTheSameTokens) {
  const std::string args = std::string("generate --model tiny-moe --load-format dummy --prompts ") +
                           testing_paths::source_dir() + "/launch/prompts/sample.jsonl" +
                           " --max-new-tokens 10 --ignore-eos --json --seed 5";
  CliRun eager = run(args);
  CliRun graphed = run(args + " --graph-max-batch 8 --gpu-memory-utilization 0.02");
  ASSERT_EQ(eager.exit_code, 0) << eager.out;
  ASSERT_EQ(graphed.exit_code, 0) << graphed.out;
  std::istringstream a(eager.out), b(graphed.out);
  std::string la, lb;
  int lines = 0;
  while (std::getline(a, la)) {
    if (la.empty() || la[0] != '{') continue;
    do {
      ASSERT_TRUE(std::getline(b, lb)) << graphed.out;
    } while (lb.empty() || lb[0] != '{');
    EXPECT_EQ(nlohmann::json::parse(la)["output_ids"], nlohmann::json::parse(lb)["output_ids"])
        << "line " << lines;
    ++lines;
  }
  EXPECT_GE(lines, 3);
  // Too small a fraction is refused with the numbers, not a crash.
  CliRun tiny = run(args + " --gpu-memory-utilization 0.000001");
  EXPECT_NE(tiny.exit_code, 0);
  EXPECT_NE(tiny.out.find("gpu_memory_utilization"), std::string::npos) << tiny.out;
}

// output_ids of every JSON line of a generate run, in order.
std::vector<nlohmann::json> output_ids_of(const CliRun& r) {
  std::vector<nlohmann::json> ids;
  std::istringstream lines(r.out);
  for (std::string l; std::getline(lines, l);)
    if (!l.empty() && l[0] == '{') ids.push_back(nlohmann::json::parse(l)["output_ids"]);
  return ids;
}

// On a GPU: decode steps replayed from CUDA graphs (the default there) give the tokens of
// eager decode steps. float32 for the comparison: a graph's grouped GEMM is a different
// kernel from the eager per-expert cuBLAS calls, so bfloat16 logits may differ in rounding
// (bfloat16 must still run through graphs and produce every token).
TEST(CliCuda, DecodeGraphsGiveTheEagerTokens) {
  if (kernels::cuda_device_count() <= 0) GTEST_SKIP() << "no CUDA device: cuda_device_count() == 0";
  for (const char* model : {"tiny-moe", "tiny-dense"}) {
    SCOPED_TRACE(model);
    const std::string base = std::string("generate --device cuda --load-format dummy --model ") +
                             model + " --prompts " + testing_paths::source_dir() +
                             "/launch/prompts/sample.jsonl --max-new-tokens 12 --ignore-eos " +
                             "--json --seed 5";
    CliRun eager = run(base + " --graph-max-batch 0");
    CliRun graphed = run(base);
    ASSERT_EQ(eager.exit_code, 0) << eager.out;
    ASSERT_EQ(graphed.exit_code, 0) << graphed.out;
    EXPECT_EQ(graphed.out.find("graphs off"), std::string::npos) << graphed.out;
    const auto want = output_ids_of(eager), got = output_ids_of(graphed);
    ASSERT_EQ(want.size(), 4u) << eager.out;
    EXPECT_EQ(got, want);
    CliRun bf16 = run(base + " --dtype bfloat16");
    ASSERT_EQ(bf16.exit_code, 0) << bf16.out;
    const auto b = output_ids_of(bf16);
    ASSERT_EQ(b.size(), 4u) << bf16.out;
    EXPECT_EQ(b[0].size(), 12u);
    EXPECT_EQ(b[2].size(), 8u);  // the prompt's own max_new_tokens
  }
}

TEST(Cli, PromptsFileGivesOneJsonLinePerPrompt) {
  auto path = std::filesystem::path(::testing::TempDir()) / "prompts.jsonl";
  std::ofstream(path)
      << "{\"prompt_ids\": [5, 6, 7]}\n\n{\"prompt_ids\": [9], \"max_new_tokens\": 3}\n";
  CliRun r = run("generate --model tiny-dense --prompts " + path.string() +
                 " --max-new-tokens 5 --ignore-eos --json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::istringstream lines(r.out);
  std::string l1, l2;
  std::getline(lines, l1);
  std::getline(lines, l2);
  auto j1 = nlohmann::json::parse(l1), j2 = nlohmann::json::parse(l2);
  EXPECT_EQ(j1["index"], 0);
  EXPECT_EQ(j1["output_ids"].size(), 5u);
  EXPECT_EQ(j2["prompt_ids"], nlohmann::json({9}));
  EXPECT_EQ(j2["output_ids"].size(), 3u);
}

TEST(Cli, BadRequestIsRejectedAndTheOthersAreServed) {
  auto path = std::filesystem::path(::testing::TempDir()) / "mixed_prompts.jsonl";
  std::ofstream(path)
      << "{\"prompt_ids\": [1, 2]}\n{\"prompt_ids\": [1, 5000]}\n{\"prompt_ids\": [3]}\n";
  CliRun r = run("generate --model tiny-dense --prompts " + path.string() +
                 " --max-new-tokens 3 --ignore-eos --json");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  std::istringstream lines(r.out);
  std::vector<nlohmann::json> js;
  for (std::string l; std::getline(lines, l);)
    if (!l.empty() && l[0] == '{') js.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(js.size(), 3u) << r.out;
  EXPECT_EQ(js[0]["output_ids"].size(), 3u);
  EXPECT_EQ(js[1]["finish_reason"], "error");
  EXPECT_NE(
      js[1]["error"].get<std::string>().find("request 1: token id 5000 is outside the vocabulary"),
      std::string::npos);
  EXPECT_EQ(js[2]["output_ids"].size(), 3u);
  EXPECT_NE(r.out.find("1 of 3 request(s) rejected"), std::string::npos) << r.out;
}

TEST(Cli, DumpLogitsMatchesTransformers) {
  const std::string dir = testing_paths::fixtures_dir() + "/hf/llama";
  std::ifstream in(dir + "/reference.json");
  auto ref = nlohmann::json::parse(in)["cases"][1];
  std::string ids;
  for (int id : ref["prompt_ids"]) {
    if (!ids.empty()) ids.push_back(',');
    ids.append(std::to_string(id));
  }
  auto out = std::filesystem::path(::testing::TempDir()) / "llama_logits.npy";
  CliRun r = run("generate --model " + dir + " --prompt-ids " + ids + " --max-new-tokens " +
                 std::to_string(ref["greedy_ids"].size()) + " --ignore-eos --json --dump-logits " +
                 out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["output_ids"], ref["greedy_ids"]);
  auto got = read_npy(out.string());
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  auto file = model::SafetensorsFile::open(dir + "/reference.safetensors");
  ASSERT_TRUE(file.ok());
  auto want = (*file)->read(ref["logits_tensor"].get<std::string>(), model::TensorSlice::whole(),
                            DType::kF32);
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(got->shape(), want->shape());  // [prompt + generated - 1, vocab]
  double scale = 1, diff = 0;
  for (int64_t i = 0; i < want->numel(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(want->data_as<float>()[i])));
    diff = std::max(
        diff, static_cast<double>(std::abs(got->data_as<float>()[i] - want->data_as<float>()[i])));
  }
  EXPECT_LE(diff / scale, 1e-4);
}

// `plan --print-world-size` and `--launch-env`, which the launch scripts (launch/mpirun/,
// launch/slurm/) size their jobs from: exact output for shipped configs and for written ones
// whose node and GPU counts are worked out here by hand.
TEST(Cli, PlanPrintsWorldSizeAndLaunchEnv) {
  const std::string configs = testing_paths::source_dir() + "/launch/configs/";
  struct Case {
    std::string config, world, env;
  };
  auto write = [](const std::string& name, const std::string& yaml) {
    auto path = std::filesystem::path(::testing::TempDir()) / name;
    std::ofstream(path) << yaml;
    return path.string();
  };
  // 1 + 2 workers; emulated nodes of 2 ranks: node 0 = {coordinator, 1}, node 1 = {2}, so each
  // node's workers need one GPU.
  const std::string two_nodes = write("launch_env_2x2.yaml",
                                      "model: {path: tiny-moe, load_format: dummy}\n"
                                      "runtime: {device: cuda}\n"
                                      "cluster: {ranks_per_node: 2}\n"
                                      "pools: {mixed: {tp: 2}}\n");
  // ranks_per_node above the world size: one node of 3, whose 2 workers need 2 GPUs.
  const std::string capped = write("launch_env_capped.yaml",
                                   "model: {path: tiny-moe, load_format: dummy}\n"
                                   "runtime: {device: cuda}\n"
                                   "cluster: {ranks_per_node: 100}\n"
                                   "pools: {mixed: {tp: 2}}\n");
  for (const Case& c : std::vector<Case>{
           // prefill tp 2 + decode 2 x dp 2 = 7 ranks in emulated nodes of 4 (CPU: no GPUs).
           {configs + "disaggregated.yaml", "7\n",
            "SW_WORLD_SIZE=7\nSW_NODES=2\nSW_RANKS_PER_NODE=4\nSW_GPUS_PER_RANK=0\n"
            "SW_GPUS_PER_NODE=0\nSW_DEVICE=cpu\n"},
           // 1 + 8 + 8 ranks, 9 a node: node 0 holds the coordinator and 8 GPU workers.
           {configs + "2node-16gpu-disagg-qwen3moe.yaml", "17\n",
            "SW_WORLD_SIZE=17\nSW_NODES=2\nSW_RANKS_PER_NODE=9\nSW_GPUS_PER_RANK=1\n"
            "SW_GPUS_PER_NODE=8\nSW_DEVICE=cuda\n"},
           // ranks_per_node 0 (real hosts, which plan cannot see): one node of all 9 ranks.
           {configs + "1node-8gpu-mixtral.yaml", "9\n",
            "SW_WORLD_SIZE=9\nSW_NODES=1\nSW_RANKS_PER_NODE=9\nSW_GPUS_PER_RANK=1\n"
            "SW_GPUS_PER_NODE=8\nSW_DEVICE=cuda\n"},
           {configs + "cpu-local-disagg.yaml", "3\n",
            "SW_WORLD_SIZE=3\nSW_NODES=1\nSW_RANKS_PER_NODE=3\nSW_GPUS_PER_RANK=0\n"
            "SW_GPUS_PER_NODE=0\nSW_DEVICE=cpu\n"},
           {two_nodes, "3\n",
            "SW_WORLD_SIZE=3\nSW_NODES=2\nSW_RANKS_PER_NODE=2\nSW_GPUS_PER_RANK=1\n"
            "SW_GPUS_PER_NODE=1\nSW_DEVICE=cuda\n"},
           {capped, "3\n",
            "SW_WORLD_SIZE=3\nSW_NODES=1\nSW_RANKS_PER_NODE=3\nSW_GPUS_PER_RANK=1\n"
            "SW_GPUS_PER_NODE=2\nSW_DEVICE=cuda\n"},
       }) {
    SCOPED_TRACE(c.config);
    CliRun world = run("plan --config " + c.config + " --print-world-size");
    EXPECT_EQ(world.exit_code, 0);
    EXPECT_EQ(world.out, c.world);
    CliRun bare = run("plan --config " + c.config + " --world-size");  // no value: prints it
    EXPECT_EQ(bare.exit_code, 0);
    EXPECT_EQ(bare.out, c.world);
    CliRun env = run("plan --config " + c.config + " --launch-env");
    EXPECT_EQ(env.exit_code, 0);
    EXPECT_EQ(env.out, c.env);
  }
  // The --world-size check is unchanged; the printing flags exclude each other and --json.
  EXPECT_EQ(run("plan --config " + configs + "disaggregated.yaml --world-size 7").exit_code, 0);
  CliRun wrong = run("plan --config " + configs + "disaggregated.yaml --world-size 6");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.out.find("world size 6 does not match the config"), std::string::npos)
      << wrong.out;
  CliRun both = run("plan --config " + configs + "disaggregated.yaml --print-world-size --json");
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.out.find("excludes"), std::string::npos) << both.out;
  // An impossible layout prints no number a script could take for -np.
  const std::string bad = write("launch_env_bad.yaml",
                                "model: {path: tiny-moe, load_format: dummy}\n"
                                "pools: {mixed: {tp: 3}}\n");
  CliRun impossible = run("plan --config " + bad + " --print-world-size");
  EXPECT_NE(impossible.exit_code, 0);
  EXPECT_EQ(impossible.out.rfind("shardwise plan: ", 0), 0u) << impossible.out;
}

// One process, a small workload: the table on stdout, and the JSON (exact lengths with
// --ignore-eos, one record per request), the CSV and the PNG (drawn by gnuplot) on disk.
TEST(Cli, BenchThroughputWritesTheTableJsonCsvAndPlot) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "bench_cli";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string json_path = (dir / "r.json").string(), csv_path = (dir / "r.csv").string(),
                    png_path = (dir / "r.png").string();
  // launch/setup.sh installs gnuplot; without it --plot is an error, so it is left out.
  const bool plot = std::system("command -v gnuplot >/dev/null 2>&1") == 0;
  CliRun r =
      run("bench throughput --model tiny-moe --load-format dummy --threads 1 "
          "--num-prompts 9 --random-input-len 20 --random-output-len 6 "
          "--random-range-ratio 0.5 --ignore-eos --seed 4 --metric-percentiles 50,99 "
          "--goodput e2el:60000 --result-filename " +
          json_path + " --csv " + csv_path + (plot ? " --plot " + png_path : std::string()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* line :
       {"============ Serving Benchmark Result ============",
        "Successful requests:                     9 ", "P99 TPOT (ms):", "Request goodput (req/s):",
        "Layout:                                  "
        "1 process (cpu)"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
  std::ifstream jf(json_path);
  const auto j = nlohmann::json::parse(jf);
  EXPECT_EQ(j["completed"], 9);
  EXPECT_EQ(j["failed"], 0);
  ASSERT_EQ(j["requests"].size(), 9u);
  int64_t total = 0;
  for (const auto& q : j["requests"]) {
    EXPECT_EQ(q["output_len"], q["expected_output_len"]);
    EXPECT_GE(q["output_len"].get<int64_t>(), 3);
    EXPECT_LE(q["output_len"].get<int64_t>(), 9);
    total += q["output_len"].get<int64_t>();
  }
  EXPECT_EQ(j["total_output_tokens"], total);
  std::ifstream cf(csv_path);
  std::string header, values, extra;
  std::getline(cf, header);
  std::getline(cf, values);
  EXPECT_NE(header.find("p50_ttft_ms"), std::string::npos);
  EXPECT_EQ(std::count(header.begin(), header.end(), ','),
            std::count(values.begin(), values.end(), ','));
  EXPECT_FALSE(std::getline(cf, extra) && !extra.empty());
  if (!plot) GTEST_SKIP() << "no gnuplot: the table, JSON and CSV were checked, not the plot";
  std::ifstream pf(png_path, std::ios::binary);
  char magic[8] = {};
  pf.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  EXPECT_GT(std::filesystem::file_size(png_path), 10000u);
}

TEST(Cli, BadInputGivesAClearErrorAndNonZeroExit) {
  struct Case {
    std::string args, needle;
  };
  const std::string dir = testing_paths::fixtures_dir() + "/hf/llama";
  for (const Case& c : std::vector<Case>{
           {"generate --model no-such-model --prompt-ids 1", "unknown model 'no-such-model'"},
           {"generate --model tiny-moe --prompt-ids 1,x,3",
            "'x' is not a token id (0 to 2147483647)"},
           {"generate --model tiny-moe --prompt-ids 1,99999",
            "token id 99999 is outside the vocabulary"},
           {"generate --model tiny-moe --prompt-ids 1,2,",
            "--prompt-ids: empty token id in '1,2,'"},
           {"generate --model tiny-moe --prompt-ids 1,,2",
            "--prompt-ids: empty token id in '1,,2'"},
           {"generate --model tiny-moe --prompt-ids 1,-2", "--prompt-ids: '-2' is not a token id"},
           {"generate --model tiny-moe --prompt-ids 1 --dtype int8", "unknown dtype 'int8'"},
           {"generate --model tiny-moe --prompt-ids 1 --load-format pt",
            "unknown load format 'pt'"},
           {"generate --model " + dir + " --prompt-ids 1 --load-format dummy --max-new-tokens 300",
            "301 exceeds max_model_len 256"},
           {"generate --model tiny-moe --prompts /nonexistent.jsonl",
            "cannot open '/nonexistent.jsonl'"},
           {"generate --model tiny-moe", "needs --prompt-ids or --prompts"},
           {"generate --model tiny-moe --prompt-ids 1 --scheduler-policy lifo",
            "scheduler policy 'lifo': expected decode_priority or fcfs"},
           {"generate --config launch/configs/tiny-moe-ep4.yaml --prompt-ids 1 --dtype bfloat16",
            "--dtype cannot be used with --config: set model.dtype in"},
           {"generate --config launch/configs/tiny-moe-ep4.yaml --prompt-ids 1 --num-kv-blocks 9",
            "--num-kv-blocks cannot be used with --config: set runtime.num_kv_blocks in"},
           {"generate --config launch/configs/tiny-moe-ep4.yaml --prompt-ids 1 --threads 2",
            "--threads cannot be used with --config: cluster workers use every core"},
           {"generate --model tiny-moe --prompt-ids 1 --temperature -1",
            "request 0: temperature must be a finite number >= 0, got -1"},
           {"generate --model tiny-moe --prompt-ids 1 --top-p 2.5",
            "request 0: top_p must be in (0, 1], got 2.5"},
           {"generate --model tiny-moe --prompt-ids 1 --top-k -5",
            "request 0: top_k must be >= 0 (0 = off), got -5"},
           {"generate --model tiny-moe --prompt-ids 1 --threads 100000",
            "100000 threads requested; expected 0 (all cores) to 1024"},
           {"generate --model tiny-moe --prompt-ids 1 --endpoint tcp://127.0.0.1:9",
            "--endpoint sends the prompts to a running server: it cannot be used with --model"},
           {"generate --endpoint tcp://127.0.0.1:9 --prompt-ids 1 --dtype bfloat16",
            "--dtype cannot be used with it"},
           {"serve --model tiny-moe --endpoint inproc://x", "serve endpoint 'inproc://x'"},
           {"serve", "needs --model (one process) or --config"},
           {"serve --config launch/configs/cpu-local-mixed.yaml --dtype float16",
            "--dtype cannot be used with --config: set model.dtype in"},
           {"bench throughput --model tiny-moe --load-format dummy --request-rate 0",
            "--request-rate: expected a number of requests per second > 0 or inf, got '0'"},
           {"bench throughput --model tiny-moe --load-format dummy --goodput latency:5",
            "--goodput: 'latency' is not ttft, tpot or e2el"},
           {"bench throughput --model tiny-moe --load-format dummy --metric-percentiles 100",
            "--metric-percentiles: 100 is not in (0, 100)"},
           {"bench throughput --model tiny-moe --load-format dummy --metric-percentiles 50,90,",
            "--metric-percentiles: '' is not a number"},
           {"bench throughput --model tiny-moe --load-format dummy --random-range-ratio 1.5",
            "--random-range-ratio must be in [0, 1), got 1.5"},
           {"bench throughput --model tiny-moe --load-format dummy --dataset-name jsonl",
            "--dataset-name jsonl needs --dataset-path"},
           {"bench throughput --model tiny-moe --load-format dummy --burstiness 0",
            "--burstiness must be a finite number > 0, got 0"},
           {"bench serve", "--backend shardwise needs --endpoint"},
           {"bench serve --endpoint tcp://127.0.0.1:9 --server-timeout 0.3 --num-prompts 2",
            "serve endpoint tcp://127.0.0.1:9: no reply within 0.3 s"},
       }) {
    CliRun r = run(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.out.find(c.needle), std::string::npos) << c.args << "\n" << r.out;
  }
  CliRun v = run("--version");
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.out.find("shardwise "), std::string::npos);
  CliRun h = run("generate --help");
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("--dump-logits"), std::string::npos);
}

}  // namespace
}  // namespace sw

// `shardwise generate`: load a model (folder or preset), run prompts through the generation
// loop on one backend, print tokens (text or JSON lines) and optionally dump logits (.npy).
#include <mpi.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "comm/control/control_channel.h"
#include "common/json_fields.h"
#include "common/npy.h"
#include "coordinator/distributed_executor.h"
#include "kernels/backend.h"
#include "model/model_config.h"
#include "model/weight_source.h"
#include "worker/cluster_runtime.h"
#include "worker/generator.h"
#include "worker/model_runner.h"
#include "worker/model_weights.h"

namespace sw::cli {

namespace {

struct GenerateArgs {
  std::string config;  // cluster YAML: run partitioned under mpirun
  bool verbose = false;
  std::string model;
  std::string load_format = "auto";
  std::string dtype = "float32";
  std::string device = "cpu";
  std::string prompt_ids;
  std::string prompts_file;
  int max_new_tokens = 16;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  uint64_t seed = 0;
  uint64_t dummy_seed = 0;
  bool ignore_eos = false;
  bool json = false;
  std::string dump_logits;
  int64_t num_kv_blocks = 0;
  double gpu_memory_utilization = -1;  // < 0: 0.9 on cuda, off on cpu
  int graph_max_batch = -1;            // < 0: 256 on cuda, 0 (eager) on cpu
  int kv_block_size = 16;
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;
  int threads = 0;
};

Result<std::vector<int32_t>> parse_ids(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a == std::string::npos) return invalid_argument("{}: empty token id in '{}'", what, text);
    item = item.substr(a, b - a + 1);
    char* end = nullptr;
    long v = std::strtol(item.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > INT32_MAX)
      return invalid_argument("{}: '{}' is not a non-negative token id", what, item);
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return invalid_argument("{}: no token ids", what);
  return ids;
}

Result<std::vector<worker::GenerationRequest>> build_requests(const GenerateArgs& a) {
  worker::GenerationRequest base;
  base.max_new_tokens = a.max_new_tokens;
  base.sampling.temperature = a.temperature;
  base.sampling.top_k = a.top_k;
  base.sampling.top_p = a.top_p;
  base.sampling.seed = a.seed;
  base.ignore_eos = a.ignore_eos;
  base.return_logits = !a.dump_logits.empty();
  std::vector<worker::GenerationRequest> reqs;
  if (!a.prompt_ids.empty()) {
    SW_ASSIGN_OR_RETURN(base.prompt_ids, parse_ids(a.prompt_ids, "--prompt-ids"));
    reqs.push_back(base);
    return reqs;
  }
  std::ifstream in(a.prompts_file);
  if (!in) return not_found("--prompts: cannot open '{}'", a.prompts_file);
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = fmt::format("{}:{}", a.prompts_file, lineno);
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return invalid_argument("{}: expected one JSON object per line", where);
    JsonFields f(j, where);
    worker::GenerationRequest r = base;
    SW_ASSIGN_OR_RETURN(std::vector<int> ids, f.required<std::vector<int>>("prompt_ids"));
    if (ids.empty()) return invalid_argument("{}: key 'prompt_ids': empty prompt", where);
    for (int id : ids)
      if (id < 0) return invalid_argument("{}: key 'prompt_ids': negative token id {}", where, id);
    r.prompt_ids.assign(ids.begin(), ids.end());
    SW_ASSIGN_OR_RETURN(r.max_new_tokens, f.optional<int>("max_new_tokens", r.max_new_tokens));
    SW_ASSIGN_OR_RETURN(r.sampling.temperature,
                        f.optional<float>("temperature", r.sampling.temperature));
    SW_ASSIGN_OR_RETURN(r.sampling.top_k, f.optional<int32_t>("top_k", r.sampling.top_k));
    SW_ASSIGN_OR_RETURN(r.sampling.top_p, f.optional<float>("top_p", r.sampling.top_p));
    SW_ASSIGN_OR_RETURN(r.sampling.seed, f.optional<uint64_t>("seed", r.sampling.seed));
    reqs.push_back(std::move(r));
  }
  if (reqs.empty()) return invalid_argument("--prompts: '{}' holds no prompts", a.prompts_file);
  return reqs;
}

// KV blocks that hold every request at once (requests that will be rejected aside), >= 1.
int64_t kv_blocks_for(const std::vector<worker::GenerationRequest>& requests, int block_size,
                      int64_t max_len) {
  int64_t blocks = 0;
  for (const auto& r : requests) {
    const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.max_new_tokens;
    if (r.max_new_tokens < 1 || total > max_len) continue;
    blocks += (total + block_size - 1) / block_size;
  }
  return std::max<int64_t>(blocks, 1);
}

std::string logits_path(const std::string& path, size_t index, size_t count) {
  if (count == 1) return path;
  std::string stem = path, ext;
  if (path.size() > 4 && path.substr(path.size() - 4) == ".npy") {
    stem = path.substr(0, path.size() - 4);
    ext = ".npy";
  }
  return fmt::format("{}_{}{}", stem, index, ext);
}

Status emit_results(const GenerateArgs& a, const std::vector<worker::GenerationResult>& results,
                    const worker::GenerationStats& st) {
  std::string first_error;
  size_t num_errors = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    if (r.finish_reason == "error") {
      if (a.json) {
        std::cout << nlohmann::json{{"index", i},
                                    {"prompt_ids", r.prompt_ids},
                                    {"finish_reason", "error"},
                                    {"error", r.error}}
                         .dump()
                  << "\n";
      }
      if (!a.json) std::cout << fmt::format("[{}] error: {}\n", i, r.error);
      if (num_errors++ == 0) first_error = r.error;
      continue;
    }
    const double decode_ms = r.total_ms - r.ttft_ms;
    const double decode_tps = r.output_ids.size() > 1 && decode_ms > 0
                                  ? (r.output_ids.size() - 1) * 1000.0 / decode_ms
                                  : 0.0;
    if (a.json) {
      nlohmann::json j = {{"index", i},
                          {"prompt_ids", r.prompt_ids},
                          {"output_ids", r.output_ids},
                          {"finish_reason", r.finish_reason},
                          {"num_preemptions", r.num_preemptions},
                          {"timing",
                           {{"ttft_ms", r.ttft_ms},
                            {"total_ms", r.total_ms},
                            {"decode_tokens_per_s", decode_tps}}}};
      std::cout << j.dump() << "\n";
    } else {
      std::cout << fmt::format(
          "[{}] prompt={} -> output={} ({}, ttft {:.1f} ms, total {:.1f} ms)\n", i,
          fmt::join(r.prompt_ids, ","), fmt::join(r.output_ids, ","), r.finish_reason, r.ttft_ms,
          r.total_ms);
    }
    if (!a.dump_logits.empty()) {
      std::string path = logits_path(a.dump_logits, i, results.size());
      SW_RETURN_IF_ERROR(write_npy(path, r.logits.data_as<float>(), r.logits.shape()));
    }
  }
  std::cout.flush();
  spdlog::info(
      "{} request(s), {} prompt + {} generated tokens in {} steps, {:.1f} ms ({:.1f} tok/s), {} "
      "preemption(s)",
      results.size(), st.prompt_tokens, st.generated_tokens, st.num_steps, st.wall_ms,
      st.wall_ms > 0 ? st.generated_tokens * 1000.0 / st.wall_ms : 0.0, st.num_preemptions);
  if (a.verbose) {
    for (size_t l = 0; l < st.moe_layers.size(); ++l) {
      const auto& m = st.moe_layers[l];
      std::cerr << fmt::format(
          "moe layer {}: tokens per expert [{}], dropped {} of {} ({:.1f}%), imbalance {:.2f}\n", l,
          fmt::join(m.tokens_per_expert, " "), m.num_dropped, m.num_assignments,
          m.num_assignments ? 100.0 * m.num_dropped / m.num_assignments : 0.0, m.imbalance);
    }
  }
  if (num_errors > 0)
    return invalid_argument("{} of {} request(s) rejected; the first: {}", num_errors,
                            results.size(), first_error);
  return Status();
}

Status run_generate(const GenerateArgs& a) {
  SW_ASSIGN_OR_RETURN(model::ModelConfig config, model::load_model_config(a.model));
  SW_ASSIGN_OR_RETURN(model::LoadFormat format, model::parse_load_format(a.load_format));
  SW_ASSIGN_OR_RETURN(DType dtype, parse_dtype(a.dtype));
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF16)
    return invalid_argument("--dtype: expected float32, bfloat16 or float16, got '{}'", a.dtype);
  SW_ASSIGN_OR_RETURN(auto requests, build_requests(a));

  const bool cuda = a.device == "cuda";
  const int graph_max_batch =
      a.graph_max_batch >= 0 ? a.graph_max_batch : (cuda ? std::min(a.max_num_seqs, 256) : 0);
  std::unique_ptr<kernels::Backend> backend;
  if (a.device == "cpu") {
    backend = kernels::make_cpu_backend(a.threads, graph_max_batch > 0);
  } else if (a.device == "cuda") {
    SW_ASSIGN_OR_RETURN(backend, kernels::make_cuda_backend(0));
  } else {
    return invalid_argument("--device: expected cpu or cuda, got '{}'", a.device);
  }
  for (kernels::Op op :
       {kernels::Op::kGemm, kernels::Op::kAttentionPrefill, kernels::Op::kAttentionDecode})
    if (!backend->supports(op, dtype))
      return unimplemented("the {} backend does not support {} in {}", backend->name(),
                           kernels::op_name(op), dtype_name(dtype));

  const auto t_load = std::chrono::steady_clock::now();
  SW_ASSIGN_OR_RETURN(auto source,
                      model::open_weight_source(config, a.model, format, a.dummy_seed));
  SW_ASSIGN_OR_RETURN(worker::ModelWeights weights,
                      worker::load_model_weights(config, *source, *backend, dtype));
  spdlog::info(
      "loaded {} ({}, {} parameters) from {} in {:.0f} ms", a.model, config.model_type,
      config.num_parameters(), source->describe(),
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_load).count());

  worker::KvCacheOptions kv;
  kv.block_size = a.kv_block_size;
  if (a.kv_block_size <= 0)
    return invalid_argument("--kv-block-size must be positive, got {}", a.kv_block_size);
  kv.num_blocks = a.num_kv_blocks;
  const double utilization =
      a.gpu_memory_utilization >= 0 ? a.gpu_memory_utilization : (cuda ? 0.9 : 0.0);
  const bool fit_to_memory = kv.num_blocks <= 0 && utilization > 0;
  const int64_t profile_tokens =
      std::min<int64_t>(a.max_num_batched_tokens, config.max_position_embeddings);
  if (fit_to_memory) {  // room for the profile step now; the rest once it has run
    kv.num_blocks = (profile_tokens + kv.block_size - 1) / kv.block_size;
  } else if (kv.num_blocks <= 0) {  // enough for every request at once (rejected ones aside)
    kv.num_blocks = kv_blocks_for(requests, kv.block_size, config.max_position_embeddings);
  }
  worker::ModelRunner runner(config, std::move(weights), *backend, kv);
  if (fit_to_memory) {
    const int64_t longest = (config.max_position_embeddings + kv.block_size - 1) / kv.block_size;
    SW_ASSIGN_OR_RETURN(int64_t blocks,
                        runner.fit_kv_cache_to_memory(utilization, profile_tokens, longest));
    spdlog::info("KV cache: {} blocks of {} tokens ({:.2f} GiB) from gpu_memory_utilization {}",
                 blocks, kv.block_size,
                 static_cast<double>(blocks * runner.kv_block_bytes()) / (1 << 30), utilization);
  }
  runner.set_decode_graphs(graph_max_batch);
  runner.set_collect_moe_metrics(a.verbose);
  worker::Generator gen(runner, worker::SchedulerOptions{a.max_num_seqs, a.max_num_batched_tokens});
  SW_ASSIGN_OR_RETURN(auto results, gen.generate(requests));

  return emit_results(a, results, gen.stats());
}

// Under mpirun: rank 0 coordinates (scheduler, KV placement, output), the other ranks each
// run their shard. A failure on rank 0 before the workers start tells them to exit.
// `*fatal` is set once ranks may be stuck waiting for each other (then the job is aborted);
// errors found identically on every rank (config, plan, prompts) are reported by rank 0.
Status run_generate_cluster(const GenerateArgs& a, bool* fatal) {
  *fatal = false;
  bool rank_specific = false;
  auto started = worker::start_cluster(a.config, &rank_specific);
  if (!started.ok()) {
    *fatal = rank_specific;
    return started.status();
  }
  worker::ClusterRuntime rt = std::move(started).value();
  const bool coordinator = rt.rank() == 0;
  std::vector<worker::GenerationRequest> requests;
  Status setup;
  int64_t num_blocks = 0;
  std::unique_ptr<comm::ControlChannel> channel;
  std::string endpoint;
  if (coordinator) {
    auto reqs = build_requests(a);
    auto ch = comm::ControlChannel::coordinator(rt.cluster.comm);
    if (!reqs.ok()) {
      setup = reqs.status();
    } else if (!ch.ok()) {
      setup = ch.status();
    } else {
      requests = std::move(reqs).value();
      channel = std::move(ch).value();
      endpoint = channel->endpoint();
      // KV blocks: what the smallest rank of the instance can hold, capped at what these
      // requests can ever use (the CPU backend zero-fills what it allocates).
      num_blocks = INT64_MAX;
      for (const auto& rp : rt.plan.ranks)
        if (!rp.coord.coordinator) num_blocks = std::min(num_blocks, rp.kv_blocks);
      num_blocks = std::min(num_blocks, kv_blocks_for(requests, rt.cluster.runtime.kv_block_size,
                                                      rt.model.max_position_embeddings));
    }
    if (!setup.ok()) num_blocks = -1;
  }
  SW_RETURN_IF_ERROR(rt.world->broadcast(&num_blocks, 1, DType::kI64, 0));
  if (num_blocks < 0) return coordinator ? setup : Status();
  *fatal = true;
  int64_t len = static_cast<int64_t>(endpoint.size());
  SW_RETURN_IF_ERROR(rt.world->broadcast(&len, 1, DType::kI64, 0));
  endpoint.resize(static_cast<size_t>(len));
  SW_RETURN_IF_ERROR(rt.world->broadcast(endpoint.data(), len, DType::kU8, 0));

  if (!coordinator) {
    auto engine = worker::build_worker_engine(rt, num_blocks);
    if (!engine.ok()) return engine.status().with_context(fmt::format("rank {}", rt.rank()));
    return worker::run_worker(rt, *engine, endpoint);
  }
  SW_ASSIGN_OR_RETURN(auto executor,
                      coordinator::DistributedExecutor::create(rt, *channel, num_blocks));
  executor->set_collect_moe_metrics(a.verbose);
  worker::Generator gen(*executor,
                        worker::SchedulerOptions{rt.cluster.runtime.max_num_seqs,
                                                 rt.cluster.runtime.max_num_batched_tokens});
  auto results = gen.generate(requests);
  Status stop = executor->shutdown();
  // A failed step may leave workers inside a collective: keep the job-wide abort for that.
  if (!results.ok()) return results.status();
  SW_RETURN_IF_ERROR(stop);
  *fatal = false;  // every worker has been told to exit: nobody is left waiting
  return emit_results(a, *results, gen.stats());
}

}  // namespace

std::function<int()> add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* g = app.add_subcommand(
      "generate",
      "Generate tokens for prompts: one process (--model), or partitioned under mpirun (--config)");
  auto* model_opt =
      g->add_option("--model", a->model, "Model folder (config.json + safetensors) or preset name");
  auto* config_opt = g->add_option("--config", a->config,
                                   "Cluster YAML: run the partitioned model under mpirun (model, "
                                   "dtype and runtime from the file)");
  model_opt->excludes(config_opt);
  g->add_flag("--verbose", a->verbose,
              "Print per-layer MoE metrics (tokens per expert, drops, imbalance)");
  g->add_option("--load-format", a->load_format, "auto|safetensors|dummy")->capture_default_str();
  g->add_option("--dtype", a->dtype, "float32|bfloat16|float16 (weights and activations)")
      ->capture_default_str();
  g->add_option("--device", a->device, "cpu|cuda")->capture_default_str();
  auto* ids =
      g->add_option("--prompt-ids", a->prompt_ids, "Comma-separated prompt token ids, e.g. 1,2,3");
  auto* file = g->add_option("--prompts", a->prompts_file,
                             "JSONL file: one {\"prompt_ids\": [...]} per line");
  ids->excludes(file);
  g->add_option("--max-new-tokens", a->max_new_tokens, "Tokens to generate per prompt")
      ->capture_default_str();
  g->add_option("--temperature", a->temperature, "0 = greedy")->capture_default_str();
  g->add_option("--top-k", a->top_k, "0 = off")->capture_default_str();
  g->add_option("--top-p", a->top_p, "1 = off")->capture_default_str();
  g->add_option("--seed", a->seed, "Sampling seed (per request; reproducible)")
      ->capture_default_str();
  g->add_option("--dummy-seed", a->dummy_seed, "Seed of --load-format dummy weights")
      ->capture_default_str();
  g->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at the model's eos_token_id");
  g->add_flag("--json", a->json, "One JSON object per prompt per line");
  g->add_option("--dump-logits", a->dump_logits,
                "Write float32 logits [prompt + generated - 1, vocab] to this .npy (several "
                "prompts: _<i> appended)");
  g->add_option("--num-kv-blocks", a->num_kv_blocks,
                "KV cache blocks (0 = enough for every prompt)")
      ->capture_default_str();
  g->add_option("--gpu-memory-utilization", a->gpu_memory_utilization,
                "Fraction of device memory for weights, the step workspace and the KV cache, "
                "which takes what a profile step leaves (default 0.9 on cuda; on cpu the "
                "cache is sized to the prompts unless this is given)");
  g->add_option("--graph-max-batch", a->graph_max_batch,
                "Decode steps of up to this many sequences replay captured graphs (default 256 "
                "on cuda, 0 = eager on cpu, where graphs record ops for testing)");
  g->add_option("--kv-block-size", a->kv_block_size, "Tokens per KV block")->capture_default_str();
  g->add_option("--max-num-seqs", a->max_num_seqs, "Sequences per step")->capture_default_str();
  g->add_option("--max-num-batched-tokens", a->max_num_batched_tokens,
                "Tokens per step (prefill is chunked)")
      ->capture_default_str();
  g->add_option("--threads", a->threads, "CPU threads (0 = all cores)")->capture_default_str();
  return [a, ids, file, model_opt, config_opt]() {
    if (ids->count() == 0 && file->count() == 0) {
      std::cerr << "error: generate needs --prompt-ids or --prompts\n";
      return 2;
    }
    if (model_opt->count() == 0 && config_opt->count() == 0) {
      std::cerr << "error: generate needs --model or --config\n";
      return 2;
    }
    Status s;
    if (config_opt->count() > 0) {
      MPI_Init(nullptr, nullptr);
      int rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      bool fatal = false;
      s = run_generate_cluster(*a, &fatal);
      if (!s.ok() && (fatal || rank == 0)) {
        std::cerr << fmt::format("error (rank {}): {}\n", rank, s.message());
        std::cerr.flush();
      }
      // Peers may be blocked in a collective with this rank: take the whole job down.
      if (!s.ok() && fatal) MPI_Abort(MPI_COMM_WORLD, 1);
      MPI_Finalize();
    } else {
      s = run_generate(*a);
      if (!s.ok()) std::cerr << "error: " << s.message() << "\n";
    }
    return s.ok() ? 0 : 1;
  };
}

}  // namespace sw::cli

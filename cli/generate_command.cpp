// `shardwise generate`: run a fixed list of prompts through the engine and print tokens (text
// or JSON lines), optionally dumping logits (.npy). One process (--model: the engine with one
// local instance) or a cluster under mpirun (--config: coordinator/cluster_job runs the job).
// This file only builds the engine, feeds it and prints.
#include <spdlog/spdlog.h>

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/prompts.h"
#include "common/npy.h"
#include "coordinator/cluster_job.h"
#include "coordinator/local_engine.h"

namespace sw::cli {

namespace {

using coordinator::Clock;
using coordinator::RequestSpec;

struct GenerateArgs {
  std::string config;  // cluster YAML: run partitioned under mpirun
  bool verbose = false;
  std::string model;
  std::string load_format = "auto";
  std::string dtype = "float32";
  std::string device = "cpu";
  std::string prompt_ids;
  std::string prompts_file;
  int64_t max_new_tokens = 16;
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
  std::string scheduler_policy = "decode_priority";
  int64_t long_prefill_token_threshold = 0;
  int threads = 0;
};

// What one prompt ended with: the request's record, or why it was rejected.
struct Outcome {
  std::vector<int32_t> prompt_ids;
  std::string error;  // rejected: never ran
  const coordinator::Request* request = nullptr;
};

Result<std::vector<RequestSpec>> build_requests(const GenerateArgs& a) {
  RequestSpec base;
  base.max_new_tokens = a.max_new_tokens;
  base.sampling.temperature = a.temperature;
  base.sampling.top_k = a.top_k;
  base.sampling.top_p = a.top_p;
  base.sampling.seed = a.seed;
  base.ignore_eos = a.ignore_eos;
  base.return_logits = !a.dump_logits.empty();
  if (a.prompt_ids.empty()) return read_prompts_file(a.prompts_file, base);
  SW_ASSIGN_OR_RETURN(base.prompt_ids, parse_token_list(a.prompt_ids, "--prompt-ids"));
  return std::vector<RequestSpec>{base};
}

// KV blocks per dp group that hold every request at once (ones too long for max_len aside).
int64_t kv_blocks_for(const std::vector<RequestSpec>& requests, int block_size, int64_t max_len) {
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

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

Status emit_results(const GenerateArgs& a, const std::vector<Outcome>& outcomes,
                    const coordinator::Engine& engine) {
  std::string first_error;
  size_t num_errors = 0;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    const coordinator::Request* r = o.request;
    std::string error = o.error;
    if (r && r->state != coordinator::RequestState::kFinished)
      error = fmt::format("request {}: {}", i,
                          r->error.empty() ? coordinator::request_state_name(r->state) : r->error);
    if (!error.empty()) {
      if (a.json) {
        std::cout << nlohmann::json{{"index", i},
                                    {"prompt_ids", o.prompt_ids},
                                    {"finish_reason", "error"},
                                    {"error", error}}
                         .dump()
                  << "\n";
      } else {
        std::cout << fmt::format("[{}] error: {}\n", i, error);
      }
      if (num_errors++ == 0) first_error = error;
      continue;
    }
    const double ttft_ms = ms_between(r->arrival, r->first_token);
    const double total_ms = ms_between(r->arrival, r->finished);
    const double decode_ms = total_ms - ttft_ms;
    const double decode_tps = r->output_ids.size() > 1 && decode_ms > 0
                                  ? (r->output_ids.size() - 1) * 1000.0 / decode_ms
                                  : 0.0;
    const char* reason = coordinator::finish_reason_name(r->finish_reason);
    if (a.json) {
      nlohmann::json j = {
          {"index", i},
          {"prompt_ids", o.prompt_ids},
          {"output_ids", r->output_ids},
          {"finish_reason", reason},
          {"num_preemptions", r->num_preemptions},
          {"timing",
           {{"ttft_ms", ttft_ms}, {"total_ms", total_ms}, {"decode_tokens_per_s", decode_tps}}}};
      std::cout << j.dump() << "\n";
    } else {
      std::cout << fmt::format(
          "[{}] prompt={} -> output={} ({}, ttft {:.1f} ms, total {:.1f} ms)\n", i,
          fmt::join(o.prompt_ids, ","), fmt::join(r->output_ids, ","), reason, ttft_ms, total_ms);
    }
    if (a.verbose && r->kv_bytes > 0)
      std::cerr << fmt::format(
          "request {}: KV transfer {:.1f} KiB in {:.2f} ms, {:.0f}% of it while the prefill "
          "step ran\n",
          i, static_cast<double>(r->kv_bytes) / 1024.0, r->kv_transfer_ms,
          100.0 * r->kv_hidden_share);
    if (!a.dump_logits.empty())
      SW_RETURN_IF_ERROR(write_npy(logits_path(a.dump_logits, i, outcomes.size()),
                                   r->logits.data_as<float>(), r->logits.shape()));
  }
  std::cout.flush();
  const auto& sched = engine.scheduler().stats();
  Clock::time_point first = Clock::now();  // the first request's arrival: what the run took
  for (const Outcome& o : outcomes)
    if (o.request) first = std::min(first, o.request->arrival);
  const double wall_ms = ms_between(first, Clock::now());
  spdlog::info(
      "{} request(s), {} prompt + {} generated tokens in {} steps, {:.1f} ms ({:.1f} tok/s), {} "
      "preemption(s), {} KV transfer(s) of {:.1f} KiB ({} failed)",
      outcomes.size(), sched.prompt_tokens, sched.generated_tokens, engine.stats().num_steps,
      wall_ms, wall_ms > 0 ? sched.generated_tokens * 1000.0 / wall_ms : 0.0, sched.num_preemptions,
      sched.kv_transfers, static_cast<double>(sched.kv_bytes) / 1024.0, sched.kv_transfer_failures);
  if (a.verbose) {
    const auto& layers = engine.stats().moe_layers;
    for (size_t l = 0; l < layers.size(); ++l) {
      const auto& m = layers[l];
      std::cerr << fmt::format(
          "moe layer {}: tokens per expert [{}], dropped {} of {} ({:.1f}%), imbalance {:.2f}\n", l,
          fmt::join(m.tokens_per_expert, " "), m.num_dropped, m.num_assignments,
          m.num_assignments ? 100.0 * m.num_dropped / m.num_assignments : 0.0, m.imbalance);
    }
  }
  if (!engine.health().ok()) return engine.health();
  if (num_errors > 0)
    return invalid_argument("{} of {} request(s) rejected; the first: {}", num_errors,
                            outcomes.size(), first_error);
  return Status();
}

// Adds every request, steps the engine until all have ended, prints.
Status run_requests(const GenerateArgs& a, const std::vector<RequestSpec>& requests,
                    coordinator::Engine& engine) {
  std::vector<Outcome> outcomes(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    outcomes[i].prompt_ids = requests[i].prompt_ids;
    auto id = engine.add(requests[i]);
    if (!id.ok()) {
      outcomes[i].error = fmt::format("request {}: {}", i, id.status().message());
      continue;
    }
    outcomes[i].request = engine.request(*id);
  }
  while (engine.has_unfinished()) SW_RETURN_IF_ERROR(engine.step().status());
  return emit_results(a, outcomes, engine);
}

Status run_local(const GenerateArgs& a) {
  SW_ASSIGN_OR_RETURN(auto requests, build_requests(a));
  coordinator::LocalEngineOptions o;
  o.model = a.model;
  o.load_format = a.load_format;
  o.dtype = a.dtype;
  o.device = a.device;
  o.dummy_seed = a.dummy_seed;
  o.threads = a.threads;
  o.kv_block_size = a.kv_block_size;
  o.num_kv_blocks = a.num_kv_blocks;
  o.gpu_memory_utilization = a.gpu_memory_utilization;
  o.graph_max_batch = a.graph_max_batch;
  o.engine.collect_moe_metrics = a.verbose;
  o.engine.scheduler.max_num_seqs = a.max_num_seqs;
  o.engine.scheduler.max_num_batched_tokens = a.max_num_batched_tokens;
  o.engine.scheduler.long_prefill_token_threshold = a.long_prefill_token_threshold;
  SW_ASSIGN_OR_RETURN(o.engine.scheduler.policy,
                      coordinator::parse_scheduler_policy(a.scheduler_policy));
  if (a.max_num_seqs < 1 || a.max_num_batched_tokens < 1 || a.long_prefill_token_threshold < 0)
    return invalid_argument(
        "--max-num-seqs ({}) and --max-num-batched-tokens ({}) must be >= 1, "
        "--long-prefill-token-threshold ({}) >= 0",
        a.max_num_seqs, a.max_num_batched_tokens, a.long_prefill_token_threshold);
  // Without a size or a memory share, the cache holds every prompt at once.
  o.fallback_kv_blocks = kv_blocks_for(requests, a.kv_block_size, INT64_MAX);
  SW_ASSIGN_OR_RETURN(auto local, coordinator::LocalEngine::create(o));
  return run_requests(a, requests, local->engine());
}

int run_cluster(const GenerateArgs& a) {
  std::vector<RequestSpec> requests;  // read on rank 0 only
  coordinator::ClusterJobOptions jo;
  jo.collect_moe_metrics = a.verbose;
  jo.prepare = [&](const worker::ClusterRuntime& rt) -> Result<int64_t> {
    SW_ASSIGN_OR_RETURN(requests, build_requests(a));
    // The plan's KV estimate can be far more than these prompts use; the CPU backend
    // zero-fills what it allocates, so do not take more.
    return kv_blocks_for(requests, rt.cluster.runtime.kv_block_size, rt.plan.max_model_len);
  };
  return coordinator::run_cluster_job(
      a.config, jo, [&](coordinator::Engine& engine, const worker::ClusterRuntime&) {
        return run_requests(a, requests, engine);
      });
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
                                   "dtype, runtime limits and scheduler from the file)");
  model_opt->excludes(config_opt);
  g->add_flag("--verbose", a->verbose,
              "Print per-layer MoE metrics (tokens per expert, drops, imbalance) and each "
              "request's KV transfer (bytes, time, share during the prefill step)");
  // Options the cluster file owns: refused next to --config, naming the key to use instead.
  std::vector<std::pair<CLI::Option*, const char*>> file_owned;
  auto owned = [&](CLI::Option* o, const char* key) {
    file_owned.emplace_back(o, key);
    return o;
  };
  owned(g->add_option("--load-format", a->load_format, "auto|safetensors|dummy"),
        "model.load_format")
      ->capture_default_str();
  owned(g->add_option("--dtype", a->dtype, "float32|bfloat16|float16 (weights and activations)"),
        "model.dtype")
      ->capture_default_str();
  owned(g->add_option("--device", a->device, "cpu|cuda"), "runtime.device")->capture_default_str();
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
  owned(g->add_option("--dummy-seed", a->dummy_seed, "Seed of --load-format dummy weights"),
        "model.dummy_seed")
      ->capture_default_str();
  g->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at the model's eos_token_id");
  g->add_flag("--json", a->json, "One JSON object per prompt per line");
  g->add_option("--dump-logits", a->dump_logits,
                "Write float32 logits [prompt + generated - 1, vocab] to this .npy (several "
                "prompts: _<i> appended)");
  owned(g->add_option("--num-kv-blocks", a->num_kv_blocks,
                      "KV cache blocks (0 = enough for every prompt)"),
        "runtime.num_kv_blocks")
      ->capture_default_str();
  owned(g->add_option("--gpu-memory-utilization", a->gpu_memory_utilization,
                      "Fraction of device memory for weights, the step workspace and the KV "
                      "cache, which takes what a profile step leaves (default 0.9 on cuda; on "
                      "cpu the cache is sized to the prompts unless this is given)"),
        "runtime.gpu_memory_utilization");
  owned(g->add_option("--graph-max-batch", a->graph_max_batch,
                      "Decode steps of up to this many sequences replay captured graphs (default "
                      "256 on cuda, 0 = eager on cpu, where graphs record ops for testing)"),
        "(no key: cluster workers run eagerly)");
  owned(g->add_option("--kv-block-size", a->kv_block_size, "Tokens per KV block"),
        "runtime.kv_block_size")
      ->capture_default_str();
  owned(g->add_option("--max-num-seqs", a->max_num_seqs, "Sequences per step"),
        "runtime.max_num_seqs")
      ->capture_default_str();
  owned(g->add_option("--max-num-batched-tokens", a->max_num_batched_tokens,
                      "Tokens per step (prefill is chunked)"),
        "runtime.max_num_batched_tokens")
      ->capture_default_str();
  owned(g->add_option("--scheduler-policy", a->scheduler_policy,
                      "decode_priority (decodes first, then prefill chunks) or fcfs (oldest "
                      "request first, whatever its phase)"),
        "scheduler.policy")
      ->capture_default_str();
  owned(g->add_option("--long-prefill-token-threshold", a->long_prefill_token_threshold,
                      "Most tokens of one prefill chunk, so long prompts advance side by side "
                      "(0 = a chunk may take the whole step)"),
        "scheduler.long_prefill_token_threshold")
      ->capture_default_str();
  owned(g->add_option("--threads", a->threads, "CPU threads (0 = all cores)"),
        "(no key: cluster workers use every core)")
      ->capture_default_str();
  return [a, ids, file, model_opt, config_opt, file_owned]() {
    if (ids->count() == 0 && file->count() == 0) {
      std::cerr << "error: generate needs --prompt-ids or --prompts\n";
      return 2;
    }
    if (model_opt->count() == 0 && config_opt->count() == 0) {
      std::cerr << "error: generate needs --model or --config\n";
      return 2;
    }
    if (config_opt->count() > 0) {
      for (const auto& [opt, key] : file_owned)
        if (opt->count() > 0) {
          std::cerr << fmt::format("error: {} cannot be used with --config: set {} in {}\n",
                                   opt->get_name(), key, a->config);
          return 2;
        }
      return run_cluster(*a);
    }
    Status s = run_local(*a);
    if (!s.ok()) std::cerr << "error: " << s.message() << "\n";
    return s.ok() ? 0 : 1;
  };
}

}  // namespace sw::cli

// Engine flags and start-up shared by generate, serve and bench (see engine_args.h).
#include "cli/engine_args.h"

#include <spdlog/spdlog.h>

#include <iostream>

#include "coordinator/cluster_job.h"
#include "coordinator/local_engine.h"
#include "model/model_config.h"

namespace sw::cli {

EngineFlags::EngineFlags(CLI::App* g, EngineArgs* a, const std::string& kv_blocks_help) : args_(a) {
  model_ = g->add_option("--model", a->model,
                         "Model folder (config.json + safetensors) or preset name: one process");
  config_ = g->add_option("--config", a->config,
                          "Cluster YAML: run the partitioned model under mpirun (model, dtype, "
                          "runtime limits and scheduler from the file)");
  model_->excludes(config_);
  auto owned = [&](CLI::Option* o, const char* key) {
    file_owned_.emplace_back(o, key);
    return o;
  };
  owned(g->add_option("--load-format", a->load_format, "auto|safetensors|dummy"),
        "model.load_format")
      ->capture_default_str();
  owned(g->add_option("--dtype", a->dtype, "float32|bfloat16|float16 (weights and activations)"),
        "model.dtype")
      ->capture_default_str();
  owned(g->add_option("--device", a->device, "cpu|cuda"), "runtime.device")->capture_default_str();
  owned(g->add_option("--dummy-seed", a->dummy_seed, "Seed of --load-format dummy weights"),
        "model.dummy_seed")
      ->capture_default_str();
  owned(g->add_option("--num-kv-blocks", a->num_kv_blocks, kv_blocks_help), "runtime.num_kv_blocks")
      ->capture_default_str();
  owned(g->add_option("--gpu-memory-utilization", a->gpu_memory_utilization,
                      "Fraction of device memory for weights, the step workspace and the KV "
                      "cache, which takes what a profile step leaves (default 0.9 on cuda; on "
                      "cpu see --num-kv-blocks)"),
        "runtime.gpu_memory_utilization");
  owned(g->add_option("--graph-max-batch", a->graph_max_batch,
                      "Decode steps of up to this many sequences replay captured graphs (default "
                      "256 on cuda, 0 = eager on cpu, where graphs record ops for testing)"),
        "!cluster workers run eagerly");
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
        "!cluster workers use every core")
      ->capture_default_str();
}

bool EngineFlags::check(std::ostream& err) const {
  if (model_->count() == 0 && config_->count() == 0) {
    err << "error: needs --model (one process) or --config (a cluster under mpirun)\n";
    return false;
  }
  if (config_->count() > 0)
    for (const auto& [opt, key] : file_owned_)
      if (opt->count() > 0) {
        // A key starting with '!' is not a cluster-file key but why the flag has none.
        if (key[0] == '!')
          err << fmt::format("error: {} cannot be used with --config: {}\n", opt->get_name(),
                             key + 1);
        else
          err << fmt::format("error: {} cannot be used with --config: set {} in {}\n",
                             opt->get_name(), key, args_->config);
        return false;
      }
  return true;
}

std::string EngineFlags::given_engine_flag() const {
  for (const auto& [opt, key] : file_owned_)
    if (opt->count() > 0) return opt->get_name();
  return "";
}

namespace {

using coordinator::serve::ServerInfo;

Status run_local(const EngineArgs& a, const EngineRunOptions& ro, const EngineDriver& drive) {
  if (a.max_num_seqs < 1 || a.max_num_batched_tokens < 1 || a.long_prefill_token_threshold < 0)
    return invalid_argument(
        "--max-num-seqs ({}) and --max-num-batched-tokens ({}) must be >= 1, "
        "--long-prefill-token-threshold ({}) >= 0",
        a.max_num_seqs, a.max_num_batched_tokens, a.long_prefill_token_threshold);
  if (a.kv_block_size < 1) return invalid_argument("--kv-block-size must be >= 1");
  SW_ASSIGN_OR_RETURN(model::ModelConfig config, model::load_model_config(a.model));
  ServerInfo info;
  info.model = a.model;
  info.model_type = config.model_type;
  info.vocab_size = config.vocab_size;
  info.max_model_len = config.max_position_embeddings;
  info.eos_token_ids = config.eos_token_ids;
  info.device = a.device;
  info.dtype = a.dtype;
  int64_t cap = 0;
  if (ro.prepare) {
    SW_ASSIGN_OR_RETURN(cap, ro.prepare(info, a.kv_block_size));
  }
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
  o.fallback_kv_blocks = cap;
  o.engine.collect_moe_metrics = ro.collect_moe_metrics;
  o.engine.scheduler.max_num_seqs = a.max_num_seqs;
  o.engine.scheduler.max_num_batched_tokens = a.max_num_batched_tokens;
  o.engine.scheduler.long_prefill_token_threshold = a.long_prefill_token_threshold;
  SW_ASSIGN_OR_RETURN(o.engine.scheduler.policy,
                      coordinator::parse_scheduler_policy(a.scheduler_policy));
  SW_ASSIGN_OR_RETURN(auto local, coordinator::LocalEngine::create(o));
  return drive(local->engine(), info);
}

ServerInfo cluster_info(const worker::ClusterRuntime& rt) {
  ServerInfo info;
  info.model = rt.cluster.model.path;
  info.model_type = rt.model.model_type;
  info.vocab_size = rt.model.vocab_size;
  info.max_model_len = rt.plan.max_model_len;
  info.eos_token_ids = rt.model.eos_token_ids;
  info.device = rt.plan.device;
  info.dtype = rt.plan.dtype;
  info.world_size = rt.plan.world_size;
  info.pools = rt.plan.pools;
  return info;
}

}  // namespace

int run_engine(const EngineArgs& a, const EngineRunOptions& ro, const EngineDriver& drive) {
  if (a.config.empty()) {
    Status s = run_local(a, ro, drive);
    if (!s.ok()) std::cerr << "error: " << s.message() << "\n";
    return s.ok() ? 0 : 1;
  }
  coordinator::ClusterJobOptions jo;
  jo.collect_moe_metrics = ro.collect_moe_metrics;
  jo.workers_ignore_signals = ro.workers_ignore_signals;
  if (ro.prepare)
    jo.prepare = [&](const worker::ClusterRuntime& rt) -> Result<int64_t> {
      return ro.prepare(cluster_info(rt), rt.cluster.runtime.kv_block_size);
    };
  return coordinator::run_cluster_job(
      a.config, jo, [&](coordinator::Engine& engine, const worker::ClusterRuntime& rt) {
        return drive(engine, cluster_info(rt));
      });
}

}  // namespace sw::cli

// Building the single-process engine: backend, weights, runner, KV cache size, engine.
#include "coordinator/local_engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "coordinator/local_executor.h"
#include "model/model_config.h"
#include "model/shard_spec.h"
#include "model/weight_source.h"
#include "worker/model_weights.h"

namespace sw::coordinator {

LocalEngine::~LocalEngine() {
  if (engine_) {
    Status st = engine_->shutdown();
    if (!st.ok()) spdlog::warn("engine shutdown: {}", st.message());
    engine_.reset();  // its executor's thread uses the runner and backend
  }
}

Result<std::unique_ptr<LocalEngine>> LocalEngine::create(const LocalEngineOptions& o) {
  SW_ASSIGN_OR_RETURN(model::ModelConfig config, model::load_model_config(o.model));
  SW_ASSIGN_OR_RETURN(model::LoadFormat format, model::parse_load_format(o.load_format));
  SW_ASSIGN_OR_RETURN(DType dtype, parse_dtype(o.dtype));
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF16)
    return invalid_argument("dtype: expected float32, bfloat16 or float16, got '{}'", o.dtype);
  if (o.kv_block_size <= 0)
    return invalid_argument("kv_block_size must be positive, got {}", o.kv_block_size);
  const bool cuda = o.device == "cuda";
  const auto& sched = o.engine.scheduler;
  const int graph_max_batch =
      o.graph_max_batch >= 0 ? o.graph_max_batch : (cuda ? std::min(sched.max_num_seqs, 256) : 0);

  std::unique_ptr<LocalEngine> e(new LocalEngine());
  kernels::BackendOptions bo;
  bo.num_threads = o.threads;
  bo.graphs = graph_max_batch > 0;
  SW_ASSIGN_OR_RETURN(e->backend_, kernels::make_backend(o.device, bo));
  for (kernels::Op op :
       {kernels::Op::kGemm, kernels::Op::kAttentionPrefill, kernels::Op::kAttentionDecode})
    if (!e->backend_->supports(op, dtype))
      return unimplemented("the {} backend does not support {} in {}", e->backend_->name(),
                           kernels::op_name(op), dtype_name(dtype));

  const auto t_load = std::chrono::steady_clock::now();
  SW_ASSIGN_OR_RETURN(auto source,
                      model::open_weight_source(config, o.model, format, o.dummy_seed));
  SW_ASSIGN_OR_RETURN(worker::ModelWeights weights,
                      worker::load_model_weights(config, *source, *e->backend_, dtype));
  spdlog::info(
      "loaded {} ({}, {} parameters) from {} in {:.0f} ms", o.model, config.model_type,
      config.num_parameters(), source->describe(),
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_load).count());

  const int64_t max_len =
      sched.max_model_len > 0 ? sched.max_model_len : config.max_position_embeddings;
  if (max_len > config.max_position_embeddings)
    return invalid_argument("max_model_len {} exceeds the model's max_position_embeddings {}",
                            max_len, config.max_position_embeddings);
  worker::KvCacheOptions kv;
  kv.block_size = o.kv_block_size;
  // No step can hold more than max_num_seqs sequences of max_model_len tokens.
  const int64_t per_seq = (max_len + kv.block_size - 1) / kv.block_size;
  const int64_t most_usable = per_seq * sched.max_num_seqs;
  const double utilization =
      o.gpu_memory_utilization >= 0 ? o.gpu_memory_utilization : (cuda ? 0.9 : 0.0);
  const bool fit_to_memory = o.num_kv_blocks <= 0 && utilization > 0;
  const int64_t profile_tokens = std::min<int64_t>(sched.max_num_batched_tokens, max_len);
  if (o.num_kv_blocks > 0) {
    kv.num_blocks = o.num_kv_blocks;
  } else if (fit_to_memory) {  // room for the profile step now; the rest once it has run
    kv.num_blocks = (profile_tokens + kv.block_size - 1) / kv.block_size;
  } else {
    kv.num_blocks = std::clamp<int64_t>(o.fallback_kv_blocks, 1, most_usable);
  }
  // Refuse a cache the device cannot hold before allocating it (the weights are there already).
  const int64_t block_bytes = model::ShardSpec::full(config).kv_block_bytes(
      config.head_dim, kv.block_size, static_cast<int64_t>(dtype_size(dtype)));
  const kernels::MemoryInfo mem = e->backend_->memory_info();
  if (block_bytes <= 0 || kv.num_blocks > (mem.total_bytes - mem.in_use_bytes) / block_bytes)
    return resource_exhausted(
        "KV cache of {} blocks x {} tokens ({:.1f} GiB) does not fit the {} device's {:.1f} GiB "
        "({:.1f} GiB in use); lower --num-kv-blocks or --kv-block-size",
        kv.num_blocks, kv.block_size,
        static_cast<double>(kv.num_blocks) * static_cast<double>(block_bytes) / (1 << 30),
        e->backend_->name(), static_cast<double>(mem.total_bytes) / (1 << 30),
        static_cast<double>(mem.in_use_bytes) / (1 << 30));
  e->runner_ = std::make_unique<worker::ModelRunner>(config, std::move(weights), *e->backend_, kv);
  if (fit_to_memory) {
    const int64_t longest = (max_len + kv.block_size - 1) / kv.block_size;
    SW_ASSIGN_OR_RETURN(kv.num_blocks,
                        e->runner_->fit_kv_cache_to_memory(utilization, profile_tokens, longest));
    spdlog::info("KV cache: {} blocks of {} tokens ({:.2f} GiB) from gpu_memory_utilization {}",
                 kv.num_blocks, kv.block_size,
                 static_cast<double>(kv.num_blocks * e->runner_->kv_block_bytes()) / (1 << 30),
                 utilization);
  }
  e->runner_->set_decode_graphs(graph_max_batch);

  EngineOptions eo = o.engine;
  eo.scheduler.max_model_len = max_len;
  e->engine_ = std::make_unique<Engine>(config, eo);
  InstanceSpec spec;
  spec.name = "local instance";
  spec.num_kv_blocks = kv.num_blocks;
  spec.kv_block_size = kv.block_size;
  e->engine_->add_instance(spec, std::make_unique<LocalExecutor>(*e->runner_));
  return e;
}

}  // namespace sw::coordinator

// Helpers shared by the engine tests: build a runner for a config (dummy or fixture
// weights) on the CPU backend, drive it step by step with a KV pool deciding the blocks (as
// the scheduler would), and compare logits.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/engine.h"
#include "coordinator/kv_block_pool.h"
#include "coordinator/local_executor.h"
#include "kernels/backend.h"
#include "model/model_config.h"
#include "model/weight_source.h"
#include "worker/model_runner.h"
#include "worker/model_weights.h"

namespace sw::testing {

// One sequence's new tokens for a step.
struct SequenceInput {
  int64_t seq_id = 0;
  std::vector<int32_t> tokens;  // appended after what the cache holds
  bool sample = true;
  kernels::SamplingRow sampling;
  bool keep_logits = false;
};

struct TestEngine {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<worker::ModelRunner> runner;
  std::unique_ptr<coordinator::KvBlockPool> pool;  // the blocks of runner's cache

  // Appends each input's tokens to its sequence (created on first use) and runs the step.
  // When the pool cannot hold the batch nothing changes and the error says so.
  Result<worker::StepResult> step(const std::vector<SequenceInput>& batch) {
    int64_t need = 0;
    for (const auto& in : batch)
      need += pool->blocks_needed(in.seq_id, static_cast<int64_t>(in.tokens.size()));
    if (need > pool->num_free_blocks())
      return resource_exhausted("this batch needs {} more block(s), {} of {} free", need,
                                pool->num_free_blocks(), pool->num_blocks());
    worker::StepMetadata meta;
    for (const auto& in : batch) {
      if (!pool->has_sequence(in.seq_id)) SW_RETURN_IF_ERROR(pool->add_sequence(in.seq_id));
      worker::StepSequence s;
      s.seq_id = in.seq_id;
      s.tokens = in.tokens;
      s.start_pos = pool->num_tokens(in.seq_id);
      SW_RETURN_IF_ERROR(
          pool->append(in.seq_id, static_cast<int64_t>(in.tokens.size()), &meta.copies));
      s.block_table = pool->block_table(in.seq_id);
      s.sample = in.sample;
      s.sampling = in.sampling;
      s.keep_logits = in.keep_logits;
      meta.seqs.push_back(std::move(s));
    }
    return runner->execute(meta);
  }
  Status free_sequence(int64_t seq) { return pool->free_sequence(seq); }
  // After the runner's cache was resized (fit_kv_cache_to_memory): an empty pool of its size.
  void reset_pool() {
    pool = std::make_unique<coordinator::KvBlockPool>(runner->num_kv_blocks(),
                                                      runner->kv_block_size());
  }
};

inline TestEngine make_engine(const model::ModelConfig& config, const model::WeightSource& source,
                              DType dtype = DType::kF32, int64_t num_blocks = 512,
                              int block_size = 16,
                              std::unique_ptr<kernels::Backend> backend = nullptr) {
  TestEngine e;
  e.backend = backend ? std::move(backend) : kernels::make_cpu_backend(0);
  auto weights = worker::load_model_weights(config, source, *e.backend, dtype);
  EXPECT_TRUE(weights.ok()) << weights.status().to_string();
  e.runner = std::make_unique<worker::ModelRunner>(config, std::move(weights).value(), *e.backend,
                                                   worker::KvCacheOptions{num_blocks, block_size});
  e.reset_pool();
  return e;
}

struct GenerationResult {
  std::vector<int32_t> output_ids;
  std::string finish_reason;  // "length" | "stop" | "error"
  std::string error;
  int num_preemptions = 0;
  Tensor logits;
};
struct GenerationStats {
  int64_t num_preemptions = 0;
  int64_t num_steps = 0;
};

// Runs every request to completion through an Engine with one local instance over `runner`
// (its whole KV cache). A request the engine rejects gets finish_reason "error".
inline Result<std::vector<GenerationResult>> generate(
    worker::ModelRunner& runner, const std::vector<coordinator::RequestSpec>& requests,
    coordinator::SchedulerOptions options = {}, GenerationStats* stats = nullptr) {
  coordinator::EngineOptions eo;
  eo.scheduler = options;
  coordinator::Engine engine(runner.config(), eo);
  coordinator::InstanceSpec spec;
  spec.num_kv_blocks = runner.num_kv_blocks();
  spec.kv_block_size = runner.kv_block_size();
  engine.add_instance(spec, std::make_unique<coordinator::LocalExecutor>(runner));
  std::vector<int64_t> ids(requests.size(), -1);
  std::vector<GenerationResult> out(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    auto id = engine.add(requests[i]);
    if (id.ok()) {
      ids[i] = *id;
    } else {
      out[i].finish_reason = "error";
      out[i].error = fmt::format("request {}: {}", i, id.status().message());
    }
  }
  while (engine.has_unfinished()) SW_RETURN_IF_ERROR(engine.step().status());
  SW_RETURN_IF_ERROR(engine.health());
  for (size_t i = 0; i < requests.size(); ++i) {
    if (ids[i] < 0) continue;
    const coordinator::Request* r = engine.request(ids[i]);
    out[i].output_ids = r->output_ids;
    out[i].finish_reason = coordinator::finish_reason_name(r->finish_reason);
    out[i].error = r->error;
    out[i].num_preemptions = r->num_preemptions;
    out[i].logits = r->logits;
  }
  if (stats) {
    stats->num_preemptions = engine.scheduler().stats().num_preemptions;
    stats->num_steps = engine.stats().num_steps;
  }
  SW_RETURN_IF_ERROR(engine.shutdown());
  if (!engine.scheduler().kv().all_free())
    return internal_error("KV blocks still held after every request ended");
  return out;
}

// One sequence's new tokens for a step (logits kept unless asked otherwise).
inline SequenceInput input(int64_t seq, std::vector<int32_t> tokens, bool keep_logits = true) {
  SequenceInput in;
  in.seq_id = seq;
  in.tokens = std::move(tokens);
  in.keep_logits = keep_logits;
  return in;
}

inline model::ModelConfig config_from_json(const nlohmann::json& j) {
  auto c = model::parse_model_config(j, "test-config");
  EXPECT_TRUE(c.ok()) << c.status().to_string();
  return c.value();
}

// Small configs of every supported family, with awkward sizes (head counts not powers of
// two, a layer count that is odd), used with dummy weights.
inline std::vector<nlohmann::json> family_configs() {
  nlohmann::json base = {{"vocab_size", 211},
                         {"hidden_size", 96},
                         {"intermediate_size", 160},
                         {"num_hidden_layers", 3},
                         {"num_attention_heads", 6},
                         {"num_key_value_heads", 2},
                         {"head_dim", 16},
                         {"rms_norm_eps", 1e-5},
                         {"rope_theta", 10000.0},
                         {"max_position_embeddings", 512},
                         {"tie_word_embeddings", false}};
  std::vector<nlohmann::json> out;
  auto llama = base;
  llama["model_type"] = "llama";
  out.push_back(llama);
  auto qwen2 = base;  // q/k/v biases, tied embeddings
  qwen2["model_type"] = "qwen2";
  qwen2["tie_word_embeddings"] = true;
  out.push_back(qwen2);
  auto qwen3 = base;  // q/k norm
  qwen3["model_type"] = "qwen3";
  out.push_back(qwen3);
  auto mixtral = base;
  mixtral["model_type"] = "mixtral";
  mixtral["num_local_experts"] = 5;
  mixtral["num_experts_per_tok"] = 2;
  mixtral["intermediate_size"] = 48;
  out.push_back(mixtral);
  auto qwen3_moe = base;
  qwen3_moe["model_type"] = "qwen3_moe";
  qwen3_moe["num_experts"] = 7;
  qwen3_moe["num_experts_per_tok"] = 3;
  qwen3_moe["moe_intermediate_size"] = 40;
  qwen3_moe["norm_topk_prob"] = false;
  qwen3_moe["mlp_only_layers"] = {1};
  out.push_back(qwen3_moe);
  auto llama3 = base;  // llama3 RoPE scaling
  llama3["model_type"] = "llama";
  llama3["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 8.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 64}};
  out.push_back(llama3);
  return out;
}

// max |a - b| / max(1, max |b|): "relative to the logit scale".
inline double max_rel_diff(const float* a, const float* b, int64_t n) {
  double scale = 1.0, diff = 0.0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  for (int64_t i = 0; i < n; ++i) diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
  return diff / scale;
}

inline std::vector<int32_t> seeded_tokens(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> t(n);
  uint32_t x = seed * 2654435761u + 12345u;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    t[i] = static_cast<int32_t>(1 + (x >> 8) % (vocab - 1));
  }
  return t;
}

}  // namespace sw::testing

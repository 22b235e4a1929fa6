// Helpers shared by the engine tests: build a runner for a config (dummy or fixture
// weights) on the CPU backend, and compare logits.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/model_config.h"
#include "model/weight_source.h"
#include "worker/generator.h"
#include "worker/model_runner.h"
#include "worker/model_weights.h"

namespace sw::testing {

struct TestEngine {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<worker::ModelRunner> runner;
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
  return e;
}

// One sequence's new tokens for a step (logits kept unless asked otherwise).
inline worker::SequenceInput input(int64_t seq, std::vector<int32_t> tokens,
                                   bool keep_logits = true) {
  worker::SequenceInput in;
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

// ModelConfig: the architecture of one model, parsed from a Hugging Face config.json.
// Supported model_type values: llama, mistral, qwen2, qwen3 (dense) and mixtral, qwen3_moe
// (MoE). To add a family: extend ModelFamily, parse its keys in model_config.cpp, and name
// its weights in weight_catalog.cpp.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace sw::model {

enum class ModelFamily { kLlama, kMistral, kQwen2, kQwen3, kMixtral, kQwen3Moe };
const char* family_name(ModelFamily f);

struct RopeScaling {
  std::string type = "default";  // default | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string source;  // config.json path or "preset:<name>", for error messages
  std::string model_type;
  ModelFamily family = ModelFamily::kLlama;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense MLP width (Mixtral: the expert width)
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int num_key_value_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry biases (Qwen2)
  bool qk_norm = false;         // per-head RMSNorm on q and k before RoPE (Qwen3)
  std::vector<int> eos_token_ids;

  // MoE (num_experts == 0: dense)
  int num_experts = 0;
  int num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  bool norm_topk_prob = true;  // renormalise the top-k routing weights (Mixtral: always)
  int decoder_sparse_step = 1;
  std::vector<int> mlp_only_layers;

  bool is_moe() const { return num_experts > 0; }
  // Whether layer `layer` has an MoE FFN (Qwen3-MoE: not in mlp_only_layers and
  // (layer + 1) % decoder_sparse_step == 0; Mixtral: every layer).
  bool is_moe_layer(int layer) const;
  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
  // Parameter count (weights only), for memory estimates and benchmarks.
  int64_t num_parameters() const;
  // Parameters touched per token (active experts only), for decode-step rooflines.
  int64_t num_active_parameters() const;
};

// Parses a config.json object; `source` names the file in errors.
Result<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source);
// `model` is a directory holding config.json, a config.json path, or a preset name.
Result<ModelConfig> load_model_config(const std::string& model);

}  // namespace sw::model

// config.json parsing per model family, with errors naming the file and key.
#include "model/model_config.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/json_fields.h"
#include "common/limits.h"
#include "common/text_file.h"
#include "model/presets.h"

namespace sw::model {

namespace fs = std::filesystem;

const char* family_name(ModelFamily f) {
  switch (f) {
    case ModelFamily::kLlama: return "llama";
    case ModelFamily::kMistral: return "mistral";
    case ModelFamily::kQwen2: return "qwen2";
    case ModelFamily::kQwen3: return "qwen3";
    case ModelFamily::kMixtral: return "mixtral";
    case ModelFamily::kQwen3Moe: return "qwen3_moe";
  }
  return "unknown";
}

bool ModelConfig::is_moe_layer(int layer) const {
  if (!is_moe()) return false;
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end())
    return false;
  return (layer + 1) % decoder_sparse_step == 0;
}

int64_t ModelConfig::num_parameters() const {
  int64_t attn = hidden_size * (q_size() + 2 * kv_size()) + q_size() * hidden_size;
  int64_t total = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + hidden_size;
  for (int l = 0; l < num_hidden_layers; ++l) {
    total += attn + 2 * hidden_size;
    if (is_moe_layer(l))
      total += num_experts * 3 * hidden_size * moe_intermediate_size + num_experts * hidden_size;
    else
      total += 3 * hidden_size * intermediate_size;
  }
  return total;
}

int64_t ModelConfig::num_active_parameters() const {
  int64_t attn = hidden_size * (q_size() + 2 * kv_size()) + q_size() * hidden_size;
  int64_t total = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2) + hidden_size;
  for (int l = 0; l < num_hidden_layers; ++l) {
    total += attn + 2 * hidden_size;
    if (is_moe_layer(l))
      total +=
          num_experts_per_tok * 3 * hidden_size * moe_intermediate_size + num_experts * hidden_size;
    else
      total += 3 * hidden_size * intermediate_size;
  }
  return total;
}

namespace {

using limits::kMaxAttentionHeads;
using limits::kMaxExperts;
using limits::kMaxHeadDim;
using limits::kMaxHiddenSize;
using limits::kMaxIntermediateSize;
using limits::kMaxLayers;
using limits::kMaxPositionEmbeddings;
using limits::kMaxVocabSize;

// A finite number > 0 (rope_theta, rms_norm_eps, RoPE scaling factors): zero or a negative
// value runs, but every token it produces derives from NaN or inf.
Status positive_number(const JsonFields& f, const std::string& key, double v) {
  if (!(v > 0))
    return invalid_argument("{}: key '{}': expected a number > 0, got {}", f.source(),
                            f.key_path(key), v);
  return Status();
}

Status parse_rope(const JsonFields& f, ModelConfig& c) {
  // transformers >= 5 nests RoPE settings under "rope_parameters"; older configs keep
  // rope_theta at top level and scaling under "rope_scaling".
  SW_ASSIGN_OR_RETURN(c.rope_theta, f.optional<double>("rope_theta", c.rope_theta));
  SW_RETURN_IF_ERROR(positive_number(f, "rope_theta", c.rope_theta));
  const char* nested_key = f.has("rope_parameters") ? "rope_parameters"
                           : f.has("rope_scaling")  ? "rope_scaling"
                                                    : nullptr;
  if (!nested_key) return Status();
  const nlohmann::json& rj = f.raw(nested_key);
  if (!rj.is_object())
    return invalid_argument("{}: key '{}': expected an object or null", f.source(), nested_key);
  JsonFields r(rj, f.source(), nested_key);
  SW_ASSIGN_OR_RETURN(c.rope_theta, r.optional<double>("rope_theta", c.rope_theta));
  SW_RETURN_IF_ERROR(positive_number(r, "rope_theta", c.rope_theta));
  std::string type;
  SW_ASSIGN_OR_RETURN(type, r.optional<std::string>("rope_type", ""));
  if (type.empty()) {
    SW_ASSIGN_OR_RETURN(type, r.optional<std::string>("type", "default"));
  }
  if (type != "default" && type != "linear" && type != "llama3")
    return invalid_argument(
        "{}: key '{}.rope_type': unsupported RoPE scaling '{}' (supported: default, linear, "
        "llama3)",
        f.source(), nested_key, type);
  RopeScaling& rs = c.rope_scaling;
  rs.type = type;
  SW_ASSIGN_OR_RETURN(rs.factor, r.optional<double>("factor", 1.0));
  SW_ASSIGN_OR_RETURN(rs.low_freq_factor, r.optional<double>("low_freq_factor", 1.0));
  SW_ASSIGN_OR_RETURN(rs.high_freq_factor, r.optional<double>("high_freq_factor", 4.0));
  SW_ASSIGN_OR_RETURN(
      rs.original_max_position_embeddings,
      r.optional_in<int64_t>("original_max_position_embeddings", 8192, 1, kMaxPositionEmbeddings));
  SW_RETURN_IF_ERROR(positive_number(r, "factor", rs.factor));
  SW_RETURN_IF_ERROR(positive_number(r, "low_freq_factor", rs.low_freq_factor));
  SW_RETURN_IF_ERROR(positive_number(r, "high_freq_factor", rs.high_freq_factor));
  // llama3 blends between the two wavelengths and divides by their factors' difference.
  if (type == "llama3" && !(rs.high_freq_factor > rs.low_freq_factor))
    return invalid_argument(
        "{}: key '{}': llama3 RoPE scaling needs high_freq_factor ({}) > low_freq_factor ({})",
        f.source(), r.key_path("high_freq_factor"), rs.high_freq_factor, rs.low_freq_factor);
  return Status();
}

Status parse_eos(const JsonFields& f, ModelConfig& c) {
  if (!f.has("eos_token_id")) return Status();
  const nlohmann::json& e = f.raw("eos_token_id");
  if (e.is_number()) {
    SW_ASSIGN_OR_RETURN(int id, f.required<int>("eos_token_id"));
    c.eos_token_ids = {id};
  } else {
    SW_ASSIGN_OR_RETURN(c.eos_token_ids, f.required<std::vector<int>>("eos_token_id"));
  }
  for (int id : c.eos_token_ids)
    if (id < 0 || id >= c.vocab_size)
      return invalid_argument(
          "{}: key 'eos_token_id': token {} is outside the vocabulary [0, {}) (vocab_size)",
          f.source(), id, c.vocab_size);
  return Status();
}

// All weights, counted in floating point: each size is bounded, but not their product, and
// the int64 counts (num_parameters(), the partitioner's bytes) may only run once it is.
Status check_total_size(const std::string& source, const ModelConfig& c) {
  const double h = static_cast<double>(c.hidden_size);
  const double attn = h * static_cast<double>(c.q_size() + 2 * c.kv_size()) +
                      static_cast<double>(c.q_size()) * h + 2 * h;
  const double dense = 3 * h * static_cast<double>(c.intermediate_size);
  const double moe = static_cast<double>(c.num_experts) *
                     (3 * h * static_cast<double>(c.moe_intermediate_size) + h);
  double total = static_cast<double>(c.vocab_size) * h * 2 + h;
  for (int l = 0; l < c.num_hidden_layers; ++l) total += attn + (c.is_moe_layer(l) ? moe : dense);
  if (total > static_cast<double>(limits::kMaxParameters))
    return invalid_argument(
        "{}: the sizes in this config.json add up to {:.3g} parameters, more than the limit of "
        "{:.3g} (hidden_size {}, intermediate_size {}, num_hidden_layers {}, vocab_size {}, "
        "num_experts {})",
        source, total, static_cast<double>(limits::kMaxParameters), c.hidden_size,
        c.intermediate_size, c.num_hidden_layers, c.vocab_size, c.num_experts);
  return Status();
}

}  // namespace

Result<ModelConfig> parse_model_config(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return invalid_argument("{}: expected a JSON object at top level", source);
  JsonFields f(j, source);
  ModelConfig c;
  c.source = source;
  SW_ASSIGN_OR_RETURN(c.model_type, f.required<std::string>("model_type"));
  if (c.model_type == "llama")
    c.family = ModelFamily::kLlama;
  else if (c.model_type == "mistral")
    c.family = ModelFamily::kMistral;
  else if (c.model_type == "qwen2")
    c.family = ModelFamily::kQwen2;
  else if (c.model_type == "qwen3")
    c.family = ModelFamily::kQwen3;
  else if (c.model_type == "mixtral")
    c.family = ModelFamily::kMixtral;
  else if (c.model_type == "qwen3_moe")
    c.family = ModelFamily::kQwen3Moe;
  else
    return invalid_argument(
        "{}: key 'model_type': unsupported model type '{}' (supported: llama, mistral, qwen2, "
        "qwen3, mixtral, qwen3_moe)",
        source, c.model_type);

  // Every size is bounded (common/limits.h) before anything multiplies or allocates with it.
  SW_ASSIGN_OR_RETURN(c.vocab_size, f.required_in<int64_t>("vocab_size", 1, kMaxVocabSize));
  SW_ASSIGN_OR_RETURN(c.hidden_size, f.required_in<int64_t>("hidden_size", 1, kMaxHiddenSize));
  SW_ASSIGN_OR_RETURN(c.num_hidden_layers, f.required_in<int>("num_hidden_layers", 1, kMaxLayers));
  SW_ASSIGN_OR_RETURN(c.num_attention_heads,
                      f.required_in<int>("num_attention_heads", 1, kMaxAttentionHeads));
  SW_ASSIGN_OR_RETURN(
      c.num_key_value_heads,
      f.optional_in<int>("num_key_value_heads", c.num_attention_heads, 1, kMaxAttentionHeads));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return invalid_argument(
        "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source,
        c.num_attention_heads, c.num_key_value_heads);
  if (f.has("head_dim")) {
    SW_ASSIGN_OR_RETURN(c.head_dim, f.required_in<int64_t>("head_dim", 1, kMaxHeadDim));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      return invalid_argument(
          "{}: no 'head_dim' and hidden_size ({}) is not divisible by num_attention_heads ({})",
          source, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
    if (c.head_dim > kMaxHeadDim)
      return invalid_argument(
          "{}: no 'head_dim' and hidden_size / num_attention_heads = {} exceeds the head_dim "
          "limit of {}",
          source, c.head_dim, kMaxHeadDim);
  }
  if (c.head_dim % 2 != 0)
    return invalid_argument("{}: key 'head_dim': RoPE needs an even head_dim, got {}", source,
                            c.head_dim);
  SW_ASSIGN_OR_RETURN(c.rms_norm_eps, f.optional<double>("rms_norm_eps", 1e-6));
  SW_RETURN_IF_ERROR(positive_number(f, "rms_norm_eps", c.rms_norm_eps));
  SW_ASSIGN_OR_RETURN(
      c.max_position_embeddings,
      f.optional_in<int64_t>("max_position_embeddings", 4096, 1, kMaxPositionEmbeddings));
  SW_ASSIGN_OR_RETURN(c.tie_word_embeddings, f.optional<bool>("tie_word_embeddings", false));
  SW_RETURN_IF_ERROR(parse_rope(f, c));
  SW_RETURN_IF_ERROR(parse_eos(f, c));

  // Qwen2 always has q/k/v biases; others declare it with attention_bias.
  SW_ASSIGN_OR_RETURN(c.attention_bias,
                      f.optional<bool>("attention_bias", c.family == ModelFamily::kQwen2));
  c.qk_norm = c.family == ModelFamily::kQwen3 || c.family == ModelFamily::kQwen3Moe;

  SW_ASSIGN_OR_RETURN(c.intermediate_size,
                      f.required_in<int64_t>("intermediate_size", 1, kMaxIntermediateSize));
  if (c.family == ModelFamily::kMixtral) {
    SW_ASSIGN_OR_RETURN(c.num_experts, f.required_in<int>("num_local_experts", 1, kMaxExperts));
    SW_ASSIGN_OR_RETURN(c.num_experts_per_tok, f.required<int>("num_experts_per_tok"));
    c.moe_intermediate_size = c.intermediate_size;
    c.norm_topk_prob = true;
  } else if (c.family == ModelFamily::kQwen3Moe) {
    SW_ASSIGN_OR_RETURN(c.num_experts, f.required_in<int>("num_experts", 1, kMaxExperts));
    SW_ASSIGN_OR_RETURN(c.num_experts_per_tok, f.required<int>("num_experts_per_tok"));
    SW_ASSIGN_OR_RETURN(c.moe_intermediate_size,
                        f.required_in<int64_t>("moe_intermediate_size", 1, kMaxIntermediateSize));
    SW_ASSIGN_OR_RETURN(c.norm_topk_prob, f.optional<bool>("norm_topk_prob", false));
    SW_ASSIGN_OR_RETURN(c.decoder_sparse_step,
                        f.optional_in<int>("decoder_sparse_step", 1, 1, kMaxLayers));
    SW_ASSIGN_OR_RETURN(c.mlp_only_layers, f.optional<std::vector<int>>("mlp_only_layers", {}));
    for (int l : c.mlp_only_layers)
      if (l < 0 || l >= c.num_hidden_layers)
        return invalid_argument("{}: key 'mlp_only_layers': layer {} is outside 0..{}", source, l,
                                c.num_hidden_layers - 1);
  }
  if (c.is_moe()) {
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.num_experts)
      return invalid_argument(
          "{}: key 'num_experts_per_tok': expected 1..{} (the number of experts), got {}", source,
          c.num_experts, c.num_experts_per_tok);
  }
  SW_RETURN_IF_ERROR(check_total_size(source, c));
  return c;
}

Result<ModelConfig> load_model_config(const std::string& model) {
  std::string path = model;
  std::error_code ec;
  if (fs::is_directory(model, ec)) path = (fs::path(model) / "config.json").string();
  if (!fs::exists(path, ec)) {
    if (model.find('/') == std::string::npos && !fs::exists(model, ec)) {
      SW_ASSIGN_OR_RETURN(std::string text, preset_config_json(model));
      auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      return parse_model_config(j, "preset:" + model);
    }
    return not_found(
        "model config '{}' not found (expected a folder with config.json, a config.json path, or a "
        "preset name)",
        path);
  }
  SW_ASSIGN_OR_RETURN(std::string text,
                      read_text_file(path, limits::kMaxConfigFileBytes, "the model config"));
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument("{}: not valid JSON", path);
  return parse_model_config(j, path);
}

}  // namespace sw::model

// config.json parsing per model family, with errors naming the file and key.
#include "model/model_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/json_fields.h"
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

Status parse_rope(const JsonFields& f, ModelConfig& c) {
  // transformers >= 5 nests RoPE settings under "rope_parameters"; older configs keep
  // rope_theta at top level and scaling under "rope_scaling".
  SW_ASSIGN_OR_RETURN(c.rope_theta, f.optional<double>("rope_theta", c.rope_theta));
  const char* nested_key = f.has("rope_parameters") ? "rope_parameters"
                           : f.has("rope_scaling")  ? "rope_scaling"
                                                    : nullptr;
  if (!nested_key) return Status();
  const nlohmann::json& rj = f.raw(nested_key);
  if (!rj.is_object())
    return invalid_argument("{}: key '{}': expected an object or null", f.source(), nested_key);
  JsonFields r(rj, f.source(), nested_key);
  SW_ASSIGN_OR_RETURN(c.rope_theta, r.optional<double>("rope_theta", c.rope_theta));
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
  c.rope_scaling.type = type;
  SW_ASSIGN_OR_RETURN(c.rope_scaling.factor, r.optional<double>("factor", 1.0));
  SW_ASSIGN_OR_RETURN(c.rope_scaling.low_freq_factor, r.optional<double>("low_freq_factor", 1.0));
  SW_ASSIGN_OR_RETURN(c.rope_scaling.high_freq_factor, r.optional<double>("high_freq_factor", 4.0));
  SW_ASSIGN_OR_RETURN(c.rope_scaling.original_max_position_embeddings,
                      r.optional<int64_t>("original_max_position_embeddings", 8192));
  return Status();
}

Status parse_eos(const JsonFields& f, ModelConfig& c) {
  if (!f.has("eos_token_id")) return Status();
  const nlohmann::json& e = f.raw("eos_token_id");
  if (e.is_number_integer()) {
    c.eos_token_ids = {e.get<int>()};
  } else {
    SW_ASSIGN_OR_RETURN(c.eos_token_ids, f.required<std::vector<int>>("eos_token_id"));
  }
  return Status();
}

Status positive(const std::string& source, const char* key, int64_t v) {
  if (v <= 0)
    return invalid_argument("{}: key '{}': expected a positive integer, got {}", source, key, v);
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

  SW_ASSIGN_OR_RETURN(c.vocab_size, f.required<int64_t>("vocab_size"));
  SW_ASSIGN_OR_RETURN(c.hidden_size, f.required<int64_t>("hidden_size"));
  SW_ASSIGN_OR_RETURN(c.num_hidden_layers, f.required<int>("num_hidden_layers"));
  SW_ASSIGN_OR_RETURN(c.num_attention_heads, f.required<int>("num_attention_heads"));
  SW_RETURN_IF_ERROR(positive(source, "vocab_size", c.vocab_size));
  SW_RETURN_IF_ERROR(positive(source, "hidden_size", c.hidden_size));
  SW_RETURN_IF_ERROR(positive(source, "num_hidden_layers", c.num_hidden_layers));
  SW_RETURN_IF_ERROR(positive(source, "num_attention_heads", c.num_attention_heads));
  SW_ASSIGN_OR_RETURN(c.num_key_value_heads,
                      f.optional<int>("num_key_value_heads", c.num_attention_heads));
  SW_RETURN_IF_ERROR(positive(source, "num_key_value_heads", c.num_key_value_heads));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return invalid_argument(
        "{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source,
        c.num_attention_heads, c.num_key_value_heads);
  if (f.has("head_dim")) {
    SW_ASSIGN_OR_RETURN(c.head_dim, f.required<int64_t>("head_dim"));
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      return invalid_argument(
          "{}: no 'head_dim' and hidden_size ({}) is not divisible by num_attention_heads ({})",
          source, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  SW_RETURN_IF_ERROR(positive(source, "head_dim", c.head_dim));
  if (c.head_dim % 2 != 0)
    return invalid_argument("{}: key 'head_dim': RoPE needs an even head_dim, got {}", source,
                            c.head_dim);
  SW_ASSIGN_OR_RETURN(c.rms_norm_eps, f.optional<double>("rms_norm_eps", 1e-6));
  SW_ASSIGN_OR_RETURN(c.max_position_embeddings,
                      f.optional<int64_t>("max_position_embeddings", 4096));
  SW_ASSIGN_OR_RETURN(c.tie_word_embeddings, f.optional<bool>("tie_word_embeddings", false));
  SW_RETURN_IF_ERROR(parse_rope(f, c));
  SW_RETURN_IF_ERROR(parse_eos(f, c));

  // Qwen2 always has q/k/v biases; others declare it with attention_bias.
  SW_ASSIGN_OR_RETURN(c.attention_bias,
                      f.optional<bool>("attention_bias", c.family == ModelFamily::kQwen2));
  c.qk_norm = c.family == ModelFamily::kQwen3 || c.family == ModelFamily::kQwen3Moe;

  if (c.family == ModelFamily::kMixtral) {
    SW_ASSIGN_OR_RETURN(c.intermediate_size, f.required<int64_t>("intermediate_size"));
    SW_ASSIGN_OR_RETURN(c.num_experts, f.required<int>("num_local_experts"));
    SW_ASSIGN_OR_RETURN(c.num_experts_per_tok, f.required<int>("num_experts_per_tok"));
    c.moe_intermediate_size = c.intermediate_size;
    c.norm_topk_prob = true;
  } else if (c.family == ModelFamily::kQwen3Moe) {
    SW_ASSIGN_OR_RETURN(c.intermediate_size, f.required<int64_t>("intermediate_size"));
    SW_ASSIGN_OR_RETURN(c.num_experts, f.required<int>("num_experts"));
    SW_ASSIGN_OR_RETURN(c.num_experts_per_tok, f.required<int>("num_experts_per_tok"));
    SW_ASSIGN_OR_RETURN(c.moe_intermediate_size, f.required<int64_t>("moe_intermediate_size"));
    SW_ASSIGN_OR_RETURN(c.norm_topk_prob, f.optional<bool>("norm_topk_prob", false));
    SW_ASSIGN_OR_RETURN(c.decoder_sparse_step, f.optional<int>("decoder_sparse_step", 1));
    SW_ASSIGN_OR_RETURN(c.mlp_only_layers, f.optional<std::vector<int>>("mlp_only_layers", {}));
    SW_RETURN_IF_ERROR(positive(source, "decoder_sparse_step", c.decoder_sparse_step));
    for (int l : c.mlp_only_layers)
      if (l < 0 || l >= c.num_hidden_layers)
        return invalid_argument("{}: key 'mlp_only_layers': layer {} is outside 0..{}", source, l,
                                c.num_hidden_layers - 1);
  } else {
    SW_ASSIGN_OR_RETURN(c.intermediate_size, f.required<int64_t>("intermediate_size"));
  }
  SW_RETURN_IF_ERROR(positive(source, "intermediate_size", c.intermediate_size));
  if (c.is_moe()) {
    SW_RETURN_IF_ERROR(positive(source, "moe_intermediate_size", c.moe_intermediate_size));
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.num_experts)
      return invalid_argument(
          "{}: key 'num_experts_per_tok': expected 1..{} (the number of experts), got {}", source,
          c.num_experts, c.num_experts_per_tok);
  }
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
  std::ifstream in(path);
  if (!in) return not_found("cannot read '{}'", path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument("{}: not valid JSON", path);
  return parse_model_config(j, path);
}

}  // namespace sw::model

// Weight names per family (HF checkpoint conventions).
#include "model/weight_catalog.h"

#include <fmt/format.h>

namespace sw::model {

std::string layer_weight_name(int layer, const std::string& suffix) {
  return fmt::format("model.layers.{}.{}", layer, suffix);
}

std::string router_weight_name(const ModelConfig& c, int layer) {
  return layer_weight_name(layer, c.family == ModelFamily::kMixtral ? "block_sparse_moe.gate.weight"
                                                                    : "mlp.gate.weight");
}

std::string expert_weight_name(const ModelConfig& c, int layer, int expert, ExpertProj proj) {
  if (c.family == ModelFamily::kMixtral) {
    // Mixtral: w1 = gate, w3 = up, w2 = down.
    const char* w = proj == ExpertProj::kGate ? "w1" : proj == ExpertProj::kUp ? "w3" : "w2";
    return layer_weight_name(layer,
                             fmt::format("block_sparse_moe.experts.{}.{}.weight", expert, w));
  }
  const char* p = proj == ExpertProj::kGate ? "gate_proj"
                  : proj == ExpertProj::kUp ? "up_proj"
                                            : "down_proj";
  return layer_weight_name(layer, fmt::format("mlp.experts.{}.{}.weight", expert, p));
}

std::vector<WeightSpec> weight_catalog(const ModelConfig& c) {
  const int64_t H = c.hidden_size;
  std::vector<WeightSpec> w;
  w.push_back({"model.embed_tokens.weight", {c.vocab_size, H}, WeightKind::kEmbedding});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto L = [&](const std::string& s) { return layer_weight_name(l, s); };
    w.push_back({L("input_layernorm.weight"), {H}, WeightKind::kNorm});
    w.push_back({L("self_attn.q_proj.weight"), {c.q_size(), H}, WeightKind::kLinear});
    w.push_back({L("self_attn.k_proj.weight"), {c.kv_size(), H}, WeightKind::kLinear});
    w.push_back({L("self_attn.v_proj.weight"), {c.kv_size(), H}, WeightKind::kLinear});
    if (c.attention_bias) {
      w.push_back({L("self_attn.q_proj.bias"), {c.q_size()}, WeightKind::kBias});
      w.push_back({L("self_attn.k_proj.bias"), {c.kv_size()}, WeightKind::kBias});
      w.push_back({L("self_attn.v_proj.bias"), {c.kv_size()}, WeightKind::kBias});
    }
    if (c.qk_norm) {
      w.push_back({L("self_attn.q_norm.weight"), {c.head_dim}, WeightKind::kNorm});
      w.push_back({L("self_attn.k_norm.weight"), {c.head_dim}, WeightKind::kNorm});
    }
    w.push_back({L("self_attn.o_proj.weight"), {H, c.q_size()}, WeightKind::kLinear});
    w.push_back({L("post_attention_layernorm.weight"), {H}, WeightKind::kNorm});
    if (c.is_moe_layer(l)) {
      const int64_t I = c.moe_intermediate_size;
      w.push_back({router_weight_name(c, l), {c.num_experts, H}, WeightKind::kRouter});
      for (int e = 0; e < c.num_experts; ++e) {
        w.push_back({expert_weight_name(c, l, e, ExpertProj::kGate), {I, H}, WeightKind::kLinear});
        w.push_back({expert_weight_name(c, l, e, ExpertProj::kUp), {I, H}, WeightKind::kLinear});
        w.push_back({expert_weight_name(c, l, e, ExpertProj::kDown), {H, I}, WeightKind::kLinear});
      }
    } else {
      const int64_t I = c.intermediate_size;
      w.push_back({L("mlp.gate_proj.weight"), {I, H}, WeightKind::kLinear});
      w.push_back({L("mlp.up_proj.weight"), {I, H}, WeightKind::kLinear});
      w.push_back({L("mlp.down_proj.weight"), {H, I}, WeightKind::kLinear});
    }
  }
  w.push_back({"model.norm.weight", {H}, WeightKind::kNorm});
  if (!c.tie_word_embeddings)
    w.push_back({"lm_head.weight", {c.vocab_size, H}, WeightKind::kLinear});
  return w;
}

}  // namespace sw::model

// libFuzzer harness: HF config.json parsing (model/model_config.cpp) on arbitrary text.
// Checks that an accepted config respects the bounds of common/limits.h and that the derived
// counts (parameters, the weight catalogue) compute without overflow (UBSan) on it.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "common/limits.h"
#include "fuzz/fuzz_check.h"
#include "model/model_config.h"
#include "model/weight_catalog.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto c = sw::model::parse_model_config(j, "fuzz/config.json");
  if (!c.ok()) return 0;
  namespace L = sw::limits;
  FUZZ_CHECK(c->vocab_size >= 1 && c->vocab_size <= L::kMaxVocabSize);
  FUZZ_CHECK(c->hidden_size >= 1 && c->hidden_size <= L::kMaxHiddenSize);
  FUZZ_CHECK(c->num_hidden_layers >= 1 && c->num_hidden_layers <= L::kMaxLayers);
  FUZZ_CHECK(c->head_dim >= 2 && c->head_dim <= L::kMaxHeadDim && c->head_dim % 2 == 0);
  FUZZ_CHECK(c->num_attention_heads % c->num_key_value_heads == 0);
  FUZZ_CHECK(c->num_experts >= 0 && c->num_experts <= L::kMaxExperts);
  FUZZ_CHECK(c->max_position_embeddings >= 1 &&
             c->max_position_embeddings <= L::kMaxPositionEmbeddings);
  FUZZ_CHECK(c->rope_theta > 0 && c->rms_norm_eps > 0);
  for (int id : c->eos_token_ids) FUZZ_CHECK(id >= 0 && id < c->vocab_size);
  const int64_t params = c->num_parameters();
  FUZZ_CHECK(params > 0 && params <= L::kMaxParameters);
  FUZZ_CHECK(c->num_active_parameters() <= params);
  // The catalogue has ~3 entries per expert and layer: build it only when that is small.
  if (int64_t{c->num_hidden_layers} * (c->num_experts + 1) <= 4096) {
    int64_t catalog_params = 0;
    for (const auto& w : sw::model::weight_catalog(*c)) catalog_params += sw::shape_numel(w.shape);
    FUZZ_CHECK(catalog_params > 0);
  }
  return 0;
}

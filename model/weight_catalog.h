// The weights a model needs, by Hugging Face name and full shape. Used to generate dummy
// weights, to check a checkpoint before loading, and by the loader to name what it reads.
#pragma once

#include <string>
#include <vector>

#include "common/tensor.h"
#include "model/model_config.h"

namespace sw::model {

enum class WeightKind {
  kEmbedding,  // [V, H]
  kLinear,     // [out, in], torch.nn.Linear layout
  kRouter,     // [E, H]
  kNorm,       // [H] or [head_dim], multiplies a normalised input
  kBias,       // [out]
};

struct WeightSpec {
  std::string name;
  Shape shape;
  WeightKind kind;
};

enum class ExpertProj { kGate, kUp, kDown };

// HF names. Layer weights are "model.layers.<l>.<...>".
std::string layer_weight_name(int layer, const std::string& suffix);
std::string router_weight_name(const ModelConfig& c, int layer);
std::string expert_weight_name(const ModelConfig& c, int layer, int expert, ExpertProj proj);

// Every weight of the model, in load order.
std::vector<WeightSpec> weight_catalog(const ModelConfig& c);

}  // namespace sw::model

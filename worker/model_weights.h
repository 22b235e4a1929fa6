// ModelWeights: one model's weights on a backend's device, in the layout the runner uses
// (gate and up fused as [2I, H]; experts stacked as [E, 2I, H] and [E, H, I]).
#pragma once

#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "model/model_config.h"
#include "model/weight_source.h"

namespace sw::worker {

struct LayerWeights {
  Tensor input_norm, post_norm;  // [H]
  Tensor q_w, k_w, v_w, o_w;     // [Hq*D, H], [Hk*D, H], [Hk*D, H], [H, Hq*D]
  Tensor q_b, k_b, v_b;          // biases or undefined
  Tensor q_norm, k_norm;         // [D] or undefined
  bool moe = false;
  Tensor gate_up_w, down_w;              // dense: [2I, H], [H, I]
  Tensor router_w;                       // MoE: [E, H]
  Tensor experts_gate_up, experts_down;  // MoE: [E, 2I, H], [E, H, I]
};

struct ModelWeights {
  Tensor embed;       // [V, H]
  Tensor final_norm;  // [H]
  Tensor lm_head;     // [V, H] (the embedding when tied)
  std::vector<LayerWeights> layers;
};

// Reads every weight from `source` as `dtype` and places it on `backend`'s device.
Result<ModelWeights> load_model_weights(const model::ModelConfig& config,
                                        const model::WeightSource& source,
                                        kernels::Backend& backend, DType dtype);

}  // namespace sw::worker

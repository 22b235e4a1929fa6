// ModelWeights: one model's weights on a backend's device, in the layout the runner uses
// (gate and up fused as [2I, H]; experts stacked as [E, 2I, H] and [E, H, I]).
#pragma once

#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "model/model_config.h"
#include "model/shard_spec.h"
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

using model::ShardSpec;

struct ModelWeights {
  ShardSpec shard;
  Tensor embed;       // [V_local, H] rows [vocab_begin, vocab_end) (stage with the embedding)
  Tensor final_norm;  // [H] (stage with the LM head)
  Tensor lm_head;     // [V_local, H] (the embedding rows when tied)
  std::vector<LayerWeights> layers;  // layers [layer_begin, layer_end), local index
};

// Reads the weights of `shard` from `source` as `dtype` (only those slices are read) and
// places them on `backend`'s device. Layer tensors carry local sizes: q_w [Hq_local*D, H],
// o_w [H, Hq_local*D], gate_up_w [2*I_local, H], experts_* [E_local, ...].
Result<ModelWeights> load_model_weights(const model::ModelConfig& config,
                                        const model::WeightSource& source,
                                        kernels::Backend& backend, DType dtype,
                                        const ShardSpec& shard);
inline Result<ModelWeights> load_model_weights(const model::ModelConfig& config,
                                               const model::WeightSource& source,
                                               kernels::Backend& backend, DType dtype) {
  return load_model_weights(config, source, backend, dtype, ShardSpec::full(config));
}

}  // namespace sw::worker

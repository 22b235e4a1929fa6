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

// Which part of the model a rank holds (see parallel::RankPlan). full() is the whole model.
struct ShardSpec {
  int layer_begin = 0, layer_end = 0;  // [begin, end) of the model's layers
  bool has_embedding = true, has_lm_head = true;
  int q_head_begin = 0, q_head_end = 0;
  int kv_head_begin = 0, kv_head_end = 0;
  int64_t vocab_begin = 0, vocab_end = 0;
  int64_t ffn_begin = 0, ffn_end = 0;          // dense FFN intermediate slice
  int expert_begin = 0, expert_end = 0;        // experts held
  int64_t moe_ffn_begin = 0, moe_ffn_end = 0;  // expert intermediate slice
  static ShardSpec full(const model::ModelConfig& c);
  int num_layers() const { return layer_end - layer_begin; }
  int num_q_heads() const { return q_head_end - q_head_begin; }
  int num_kv_heads() const { return kv_head_end - kv_head_begin; }
  int num_experts() const { return expert_end - expert_begin; }
};

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

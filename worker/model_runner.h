// ModelRunner: executes one step of the model for a batch that mixes prefill chunks and
// decode tokens of different sequences, over a paged KV cache, and samples on the device.
// The forward knows nothing of parallelism; parallel/ wraps it for TP/PP/EP.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "model/model_config.h"
#include "moe/expert_ffn.h"
#include "worker/kv_block_pool.h"
#include "worker/model_weights.h"

namespace sw::worker {

struct KvCacheOptions {
  int64_t num_blocks = 256;
  int block_size = 16;
};

struct SequenceInput {
  int64_t seq_id = 0;
  std::vector<int32_t> tokens;  // new tokens, appended after what the cache already holds
  bool sample = true;           // sample a token from the last position's logits
  kernels::SamplingRow sampling;
  bool keep_logits = false;  // return float32 logits for every new token's position
};

struct StepResult {
  std::vector<int32_t> sampled;  // per input: the sampled token, or -1 when !sample
  // Host float32 [rows, V] for inputs with keep_logits, in input order; logits_row[i] is the
  // first row of input i (or -1).
  Tensor logits;
  std::vector<int64_t> logits_row;
  std::vector<moe::MoeLayerMetrics> moe_metrics;  // per MoE layer, when collect_moe_metrics
};

// Inverse RoPE frequencies with the config's rope_scaling applied: float32 [head_dim / 2].
std::vector<float> rope_inv_freq(const model::ModelConfig& config);

class ModelRunner {
 public:
  ModelRunner(model::ModelConfig config, ModelWeights weights, kernels::Backend& backend,
              KvCacheOptions kv);

  const model::ModelConfig& config() const { return config_; }
  kernels::Backend& backend() { return backend_; }
  KvBlockPool& kv_pool() { return pool_; }
  void set_collect_moe_metrics(bool on) { collect_moe_metrics_ = on; }

  // Appends each input's tokens to its sequence's cache (creating the sequence on first
  // use) and runs the model. If the KV cache cannot hold the batch, nothing is appended and
  // kResourceExhausted names the shortfall.
  Result<StepResult> step(const std::vector<SequenceInput>& batch);
  Status free_sequence(int64_t seq_id) { return pool_.free_sequence(seq_id); }

 private:
  Status run_layer(int layer, const Tensor& positions, const Tensor& slots, Tensor& hidden,
                   Tensor& residual, int64_t num_decode, const Tensor& dec_seq_lens,
                   const Tensor& dec_tables, const Tensor& pre_qsl, const Tensor& pre_seq_lens,
                   const Tensor& pre_tables, std::vector<moe::MoeLayerMetrics>* metrics);
  Tensor upload_i32(const std::vector<int32_t>& v, Shape shape);

  model::ModelConfig config_;
  ModelWeights weights_;
  kernels::Backend& backend_;
  KvBlockPool pool_;
  std::vector<Tensor> k_cache_, v_cache_;  // per layer [num_blocks, block_size, Hk, D]
  Tensor inv_freq_;
  DType dtype_;
  bool collect_moe_metrics_ = false;
};

}  // namespace sw::worker

// ShardSpec: which part of the model one rank holds — layers, attention and KV heads, vocab
// rows, dense FFN columns, experts and expert columns. The partitioner fills one per worker
// (parallel::RankPlan embeds it); the weight loader reads exactly these slices; the runner's
// KV cache is sized from it. full() is the whole model (one process).
#pragma once

#include <cstdint>

#include "model/model_config.h"

namespace sw::model {

struct ShardSpec {
  int layer_begin = 0, layer_end = 0;  // [begin, end) of the model's layers
  bool has_embedding = true, has_lm_head = true;
  int q_head_begin = 0, q_head_end = 0;        // attention heads
  int kv_head_begin = 0, kv_head_end = 0;      // KV heads (replicated when tp > KV heads)
  int64_t vocab_begin = 0, vocab_end = 0;      // vocab-parallel embedding / LM head rows
  int64_t ffn_begin = 0, ffn_end = 0;          // dense FFN intermediate slice
  int expert_begin = 0, expert_end = 0;        // experts held
  int64_t moe_ffn_begin = 0, moe_ffn_end = 0;  // expert intermediate slice

  static ShardSpec full(const ModelConfig& c);
  int num_layers() const { return layer_end - layer_begin; }
  int num_q_heads() const { return q_head_end - q_head_begin; }
  int num_kv_heads() const { return kv_head_end - kv_head_begin; }
  int num_experts() const { return expert_end - expert_begin; }
  // Bytes of one KV block of `block_size` tokens over this shard's layers (K and V):
  //   layers x 2 x local KV heads x head_dim x block_size x dtype bytes.
  // The one place the formula lives: the plan's memory budget and the runner's cache use it.
  int64_t kv_block_bytes(int64_t head_dim, int block_size, int64_t dtype_bytes) const {
    return int64_t{num_layers()} * 2 * num_kv_heads() * head_dim * block_size * dtype_bytes;
  }
  bool operator==(const ShardSpec&) const = default;
};

}  // namespace sw::model

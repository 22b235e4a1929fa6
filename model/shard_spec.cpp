// ShardSpec::full: the whole model as one shard.
#include "model/shard_spec.h"

namespace sw::model {

ShardSpec ShardSpec::full(const ModelConfig& c) {
  ShardSpec s;
  s.layer_end = c.num_hidden_layers;
  s.q_head_end = c.num_attention_heads;
  s.kv_head_end = c.num_key_value_heads;
  s.vocab_end = c.vocab_size;
  s.ffn_end = c.intermediate_size;
  s.expert_end = c.num_experts;
  s.moe_ffn_end = c.moe_intermediate_size;
  return s;
}

}  // namespace sw::model

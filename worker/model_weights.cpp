// Weight loading: read from the source on the host, fuse where the runner wants it, upload.
#include "worker/model_weights.h"

#include <cstring>

#include "model/weight_catalog.h"

namespace sw::worker {

using model::ExpertProj;
using model::TensorSlice;

namespace {

class Uploader {
 public:
  Uploader(const model::WeightSource& src, kernels::Backend& backend, DType dtype)
      : src_(src), backend_(backend), dtype_(dtype) {}

  Result<Tensor> upload(const Tensor& host) {
    Tensor dev = backend_.alloc(host.shape(), host.dtype());
    SW_RETURN_IF_ERROR(backend_.copy(host, dev));
    return dev;
  }
  Result<Tensor> load(const std::string& name, const TensorSlice& slice = TensorSlice::whole()) {
    SW_ASSIGN_OR_RETURN(Tensor host, src_.read(name, slice, dtype_));
    return upload(host);
  }
  // Reads a slice of each named weight into consecutive rows of one host tensor.
  Status read_rows_into(const std::vector<std::string>& names, const TensorSlice& slice,
                        Tensor& host, int64_t row_offset) {
    for (const auto& name : names) {
      SW_ASSIGN_OR_RETURN(Tensor part, src_.read(name, slice, dtype_));
      Tensor dst = host.rows(row_offset, row_offset + part.dim(0));
      if (dst.nbytes() != part.nbytes())
        return invalid_argument("weight '{}' slice {} has shape {}, expected rows of {}", name,
                                slice.to_string(), shape_str(part.shape()), shape_str(dst.shape()));
      std::memcpy(dst.data(), part.data(), part.nbytes());
      row_offset += part.dim(0);
    }
    return Status();
  }

 private:
  const model::WeightSource& src_;
  kernels::Backend& backend_;
  DType dtype_;
};

}  // namespace

Result<ModelWeights> load_model_weights(const model::ModelConfig& c,
                                        const model::WeightSource& source,
                                        kernels::Backend& backend, DType dtype,
                                        const ShardSpec& sh) {
  Uploader up(source, backend, dtype);
  ModelWeights w;
  w.shard = sh;
  const int64_t H = c.hidden_size, D = c.head_dim;
  const TensorSlice vocab_rows = TensorSlice::rows(sh.vocab_begin, sh.vocab_end);
  if (sh.has_embedding) {
    SW_ASSIGN_OR_RETURN(w.embed, up.load("model.embed_tokens.weight", vocab_rows));
  }
  if (sh.has_lm_head) {
    SW_ASSIGN_OR_RETURN(w.final_norm, up.load("model.norm.weight"));
    if (c.tie_word_embeddings && sh.has_embedding) {
      w.lm_head = w.embed;
    } else {
      SW_ASSIGN_OR_RETURN(
          w.lm_head, up.load(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight",
                             vocab_rows));
    }
  }
  const TensorSlice q_rows = TensorSlice::rows(sh.q_head_begin * D, sh.q_head_end * D);
  const TensorSlice kv_rows = TensorSlice::rows(sh.kv_head_begin * D, sh.kv_head_end * D);
  for (int l = sh.layer_begin; l < sh.layer_end; ++l) {
    auto L = [&](const std::string& s) { return model::layer_weight_name(l, s); };
    LayerWeights lw;
    SW_ASSIGN_OR_RETURN(lw.input_norm, up.load(L("input_layernorm.weight")));
    SW_ASSIGN_OR_RETURN(lw.post_norm, up.load(L("post_attention_layernorm.weight")));
    SW_ASSIGN_OR_RETURN(lw.q_w, up.load(L("self_attn.q_proj.weight"), q_rows));
    SW_ASSIGN_OR_RETURN(lw.k_w, up.load(L("self_attn.k_proj.weight"), kv_rows));
    SW_ASSIGN_OR_RETURN(lw.v_w, up.load(L("self_attn.v_proj.weight"), kv_rows));
    SW_ASSIGN_OR_RETURN(lw.o_w,
                        up.load(L("self_attn.o_proj.weight"),
                                TensorSlice::cols(H, sh.q_head_begin * D, sh.q_head_end * D)));
    if (c.attention_bias) {
      SW_ASSIGN_OR_RETURN(lw.q_b, up.load(L("self_attn.q_proj.bias"), q_rows));
      SW_ASSIGN_OR_RETURN(lw.k_b, up.load(L("self_attn.k_proj.bias"), kv_rows));
      SW_ASSIGN_OR_RETURN(lw.v_b, up.load(L("self_attn.v_proj.bias"), kv_rows));
    }
    if (c.qk_norm) {
      SW_ASSIGN_OR_RETURN(lw.q_norm, up.load(L("self_attn.q_norm.weight")));
      SW_ASSIGN_OR_RETURN(lw.k_norm, up.load(L("self_attn.k_norm.weight")));
    }
    lw.moe = c.is_moe_layer(l);
    if (lw.moe) {
      const int64_t I = sh.moe_ffn_end - sh.moe_ffn_begin, E = sh.num_experts();
      const TensorSlice in_rows = TensorSlice::rows(sh.moe_ffn_begin, sh.moe_ffn_end);
      const TensorSlice down_cols = TensorSlice::cols(H, sh.moe_ffn_begin, sh.moe_ffn_end);
      SW_ASSIGN_OR_RETURN(lw.router_w, up.load(model::router_weight_name(c, l)));
      Tensor gate_up = Tensor::empty({E * 2 * I, H}, dtype);
      Tensor down = Tensor::empty({E * H, I}, dtype);
      for (int64_t e = 0; e < E; ++e) {
        const int expert = sh.expert_begin + static_cast<int>(e);
        SW_RETURN_IF_ERROR(
            up.read_rows_into({model::expert_weight_name(c, l, expert, ExpertProj::kGate),
                               model::expert_weight_name(c, l, expert, ExpertProj::kUp)},
                              in_rows, gate_up, e * 2 * I));
        SW_RETURN_IF_ERROR(up.read_rows_into(
            {model::expert_weight_name(c, l, expert, ExpertProj::kDown)}, down_cols, down, e * H));
      }
      SW_ASSIGN_OR_RETURN(lw.experts_gate_up, up.upload(gate_up.reshape({E, 2 * I, H})));
      SW_ASSIGN_OR_RETURN(lw.experts_down, up.upload(down.reshape({E, H, I})));
    } else {
      const int64_t I = sh.ffn_end - sh.ffn_begin;
      const TensorSlice in_rows = TensorSlice::rows(sh.ffn_begin, sh.ffn_end);
      Tensor gate_up = Tensor::empty({2 * I, H}, dtype);
      SW_RETURN_IF_ERROR(up.read_rows_into({L("mlp.gate_proj.weight"), L("mlp.up_proj.weight")},
                                           in_rows, gate_up, 0));
      SW_ASSIGN_OR_RETURN(lw.gate_up_w, up.upload(gate_up));
      SW_ASSIGN_OR_RETURN(lw.down_w, up.load(L("mlp.down_proj.weight"),
                                             TensorSlice::cols(H, sh.ffn_begin, sh.ffn_end)));
    }
    w.layers.push_back(std::move(lw));
  }
  return w;
}

}  // namespace sw::worker

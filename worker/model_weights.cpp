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
  Result<Tensor> load(const std::string& name) {
    SW_ASSIGN_OR_RETURN(Tensor host, src_.read(name, TensorSlice::whole(), dtype_));
    return upload(host);
  }
  // Reads each named [rows_i, K] weight into consecutive rows of one host tensor.
  Status read_rows_into(const std::vector<std::string>& names, Tensor& host, int64_t row_offset) {
    for (const auto& name : names) {
      SW_ASSIGN_OR_RETURN(Tensor part, src_.read(name, TensorSlice::whole(), dtype_));
      Tensor dst = host.rows(row_offset, row_offset + part.dim(0));
      if (dst.nbytes() != part.nbytes())
        return invalid_argument("weight '{}' has shape {}, expected rows of {}", name,
                                shape_str(part.shape()), shape_str(dst.shape()));
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
                                        kernels::Backend& backend, DType dtype) {
  Uploader up(source, backend, dtype);
  ModelWeights w;
  SW_ASSIGN_OR_RETURN(w.embed, up.load("model.embed_tokens.weight"));
  SW_ASSIGN_OR_RETURN(w.final_norm, up.load("model.norm.weight"));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    SW_ASSIGN_OR_RETURN(w.lm_head, up.load("lm_head.weight"));
  }
  const int64_t H = c.hidden_size;
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    auto L = [&](const std::string& s) { return model::layer_weight_name(l, s); };
    LayerWeights lw;
    SW_ASSIGN_OR_RETURN(lw.input_norm, up.load(L("input_layernorm.weight")));
    SW_ASSIGN_OR_RETURN(lw.post_norm, up.load(L("post_attention_layernorm.weight")));
    SW_ASSIGN_OR_RETURN(lw.q_w, up.load(L("self_attn.q_proj.weight")));
    SW_ASSIGN_OR_RETURN(lw.k_w, up.load(L("self_attn.k_proj.weight")));
    SW_ASSIGN_OR_RETURN(lw.v_w, up.load(L("self_attn.v_proj.weight")));
    SW_ASSIGN_OR_RETURN(lw.o_w, up.load(L("self_attn.o_proj.weight")));
    if (c.attention_bias) {
      SW_ASSIGN_OR_RETURN(lw.q_b, up.load(L("self_attn.q_proj.bias")));
      SW_ASSIGN_OR_RETURN(lw.k_b, up.load(L("self_attn.k_proj.bias")));
      SW_ASSIGN_OR_RETURN(lw.v_b, up.load(L("self_attn.v_proj.bias")));
    }
    if (c.qk_norm) {
      SW_ASSIGN_OR_RETURN(lw.q_norm, up.load(L("self_attn.q_norm.weight")));
      SW_ASSIGN_OR_RETURN(lw.k_norm, up.load(L("self_attn.k_norm.weight")));
    }
    lw.moe = c.is_moe_layer(l);
    if (lw.moe) {
      const int64_t I = c.moe_intermediate_size, E = c.num_experts;
      SW_ASSIGN_OR_RETURN(lw.router_w, up.load(model::router_weight_name(c, l)));
      Tensor gate_up = Tensor::empty({E * 2 * I, H}, dtype);
      Tensor down = Tensor::empty({E * H, I}, dtype);
      for (int e = 0; e < E; ++e) {
        SW_RETURN_IF_ERROR(up.read_rows_into({model::expert_weight_name(c, l, e, ExpertProj::kGate),
                                              model::expert_weight_name(c, l, e, ExpertProj::kUp)},
                                             gate_up, e * 2 * I));
        SW_RETURN_IF_ERROR(up.read_rows_into(
            {model::expert_weight_name(c, l, e, ExpertProj::kDown)}, down, e * H));
      }
      SW_ASSIGN_OR_RETURN(lw.experts_gate_up, up.upload(gate_up.reshape({E, 2 * I, H})));
      SW_ASSIGN_OR_RETURN(lw.experts_down, up.upload(down.reshape({E, H, I})));
    } else {
      const int64_t I = c.intermediate_size;
      Tensor gate_up = Tensor::empty({2 * I, H}, dtype);
      SW_RETURN_IF_ERROR(
          up.read_rows_into({L("mlp.gate_proj.weight"), L("mlp.up_proj.weight")}, gate_up, 0));
      SW_ASSIGN_OR_RETURN(lw.gate_up_w, up.upload(gate_up));
      SW_ASSIGN_OR_RETURN(lw.down_w, up.load(L("mlp.down_proj.weight")));
    }
    w.layers.push_back(std::move(lw));
  }
  return w;
}

}  // namespace sw::worker

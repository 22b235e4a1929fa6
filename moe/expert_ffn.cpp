// Single-rank MoE FFN built from backend ops, and the router step it shares with expert
// parallelism (top-k, combine weights, and what batch-priority routing scores by).
#include "moe/expert_ffn.h"

#include <algorithm>

#include "moe/capacity.h"

namespace sw::moe {

const char* priority_score_name(PriorityScore s) {
  return s == PriorityScore::kCombine ? "combine" : "router";
}

int64_t capacity_for(const MoeOptions& o, int64_t num_tokens, int num_experts) {
  if (!o.capacity_factor) return o.capacity;
  return expert_capacity(o.capacity_factor, o.top_k, num_tokens, num_experts);
}

Result<RoutedTopk> route_topk(kernels::Backend& b, const Tensor& logits, const MoeOptions& o) {
  const int64_t T = logits.dim(0);
  RoutedTopk r;
  r.ids = b.alloc({T, o.top_k}, DType::kI32);
  r.weights = b.alloc({T, o.top_k}, DType::kF32);
  // Without renormalisation the combine weights are the router's probabilities already.
  const bool separate = o.policy != kernels::DropPolicy::kOrder &&
                        o.priority_score == PriorityScore::kRouter && o.renormalize;
  if (separate) {
    r.priority_weights = b.alloc({T, o.top_k}, DType::kF32);
    SW_RETURN_IF_ERROR(
        b.router_topk(logits, o.top_k, o.renormalize, r.ids, r.weights, &r.priority_weights));
  } else {
    SW_RETURN_IF_ERROR(b.router_topk(logits, o.top_k, o.renormalize, r.ids, r.weights));
    r.priority_weights = r.weights;
  }
  return r;
}

Status moe_ffn(kernels::Backend& b, const Tensor& x, const Tensor& router_w,
               const Tensor& w_gate_up, const Tensor& w_down, const MoeOptions& o, Tensor& out,
               MoeLayerMetrics* metrics) {
  const int64_t T = x.dim(0);
  const int E = static_cast<int>(router_w.dim(0));
  const int64_t I2 = w_gate_up.dim(1);
  const int64_t H = x.dim(1);
  const int k = o.top_k;
  Tensor logits = b.alloc({T, E}, x.dtype());
  SW_RETURN_IF_ERROR(b.gemm(x, router_w, logits));
  SW_ASSIGN_OR_RETURN(RoutedTopk routed, route_topk(b, logits, o));
  const Tensor& topk_w = routed.weights;
  Tensor dest = b.alloc({T, k}, DType::kI32);
  Tensor offsets = b.alloc({E + 1}, DType::kI32);
  SW_RETURN_IF_ERROR(b.moe_assign(routed.ids, routed.priority_weights, E, capacity_for(o, T, E),
                                  o.policy, dest, offsets));
  // Rows past the kept count are never read: the buffer is sized for the dropless worst case.
  const int64_t R = T * k;
  Tensor permuted = b.alloc({R, H}, x.dtype());
  SW_RETURN_IF_ERROR(b.moe_permute(x, dest, permuted));
  Tensor gate_up = b.alloc({R, I2}, x.dtype());
  SW_RETURN_IF_ERROR(b.grouped_gemm(permuted, w_gate_up, offsets, gate_up));
  Tensor act = b.alloc({R, I2 / 2}, x.dtype());
  SW_RETURN_IF_ERROR(b.silu_and_mul(gate_up, act));
  Tensor y = b.alloc({R, H}, x.dtype());
  SW_RETURN_IF_ERROR(b.grouped_gemm(act, w_down, offsets, y));
  SW_RETURN_IF_ERROR(b.moe_unpermute(y, dest, topk_w, out));
  if (metrics) {
    Tensor host = Tensor::empty({E + 1}, DType::kI32);
    SW_RETURN_IF_ERROR(b.copy(offsets, host));
    SW_RETURN_IF_ERROR(b.synchronize());
    const int32_t* off = host.data_as<int32_t>();
    metrics->tokens_per_expert.assign(E, 0);
    int64_t kept = 0;
    for (int e = 0; e < E; ++e) {
      metrics->tokens_per_expert[e] = off[e + 1] - off[e];
      kept += metrics->tokens_per_expert[e];
    }
    metrics->num_assignments = R;
    metrics->num_dropped = R - kept;
    metrics->finalize();
  }
  return Status();
}

void MoeLayerMetrics::merge(const MoeLayerMetrics& o) {
  if (tokens_per_expert.size() < o.tokens_per_expert.size())
    tokens_per_expert.resize(o.tokens_per_expert.size(), 0);
  for (size_t e = 0; e < o.tokens_per_expert.size(); ++e)
    tokens_per_expert[e] += o.tokens_per_expert[e];
  num_assignments += o.num_assignments;
  num_dropped += o.num_dropped;
}

void MoeLayerMetrics::finalize() {
  int64_t kept = 0, max_load = 0;
  for (int64_t n : tokens_per_expert) {
    kept += n;
    max_load = std::max(max_load, n);
  }
  imbalance = kept > 0
                  ? static_cast<double>(max_load) * static_cast<double>(tokens_per_expert.size()) /
                        static_cast<double>(kept)
                  : 0.0;
}

void merge_layer_metrics(std::vector<MoeLayerMetrics>& into,
                         const std::vector<MoeLayerMetrics>& other) {
  if (into.size() < other.size()) into.resize(other.size());
  for (size_t l = 0; l < other.size(); ++l) {
    into[l].merge(other[l]);
    into[l].finalize();
  }
}

}  // namespace sw::moe

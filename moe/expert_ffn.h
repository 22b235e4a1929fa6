// MoE FFN on one rank: router -> top-k -> expert slots (capacity, drop policy) -> permute ->
// grouped gate/up GEMM -> SiLU-and-mul -> grouped down GEMM -> weighted unpermute.
// Expert parallelism wraps this with dispatch/combine all-to-alls (parallel/ and moe/).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"

namespace sw::moe {

// What batch-priority routing (DropPolicy kPriorityMax / kPrioritySum) scores a token by.
enum class PriorityScore {
  // The router's own probabilities of the token's top-k experts: softmax over all experts,
  // before any top-k renormalisation (V-MoE). max = the top-1 probability, sum = the mass
  // of the top-k. The default.
  kRouter,
  // The combine weights (renormalised when the model renormalises: then `sum` is 1 for every
  // token and orders like kOrder, and `max` ranks by p1 / (p1 + ... + pk)).
  kCombine,
};
const char* priority_score_name(PriorityScore s);  // "router" | "combine"

struct MoeOptions {
  int top_k = 2;
  bool renormalize = true;
  // Per-expert capacity on each source rank: ceil(capacity_factor * top_k * T_local / E),
  // computed per call from the tokens that rank routes; nullopt: `capacity` below.
  std::optional<double> capacity_factor;
  int64_t capacity = -1;  // fixed per-expert capacity when no factor is given; < 0: dropless
  kernels::DropPolicy policy = kernels::DropPolicy::kOrder;
  PriorityScore priority_score = PriorityScore::kRouter;  // read under a priority policy only
};

struct MoeLayerMetrics {
  std::vector<int64_t> tokens_per_expert;  // kept assignments per expert
  int64_t num_assignments = 0;             // T * k
  int64_t num_dropped = 0;
  double imbalance = 0.0;  // max / mean of tokens_per_expert (set by finalize())

  // Adds another count of the same layer (another step, micro-batch or dp group); the
  // imbalance is stale until finalize().
  void merge(const MoeLayerMetrics& other);
  // Derives the imbalance from the counts.
  void finalize();
};
// Merges per-layer lists (layer l into layer l, growing `into` as needed), then finalizes.
void merge_layer_metrics(std::vector<MoeLayerMetrics>& into,
                         const std::vector<MoeLayerMetrics>& other);

// Capacity for `num_tokens` routed tokens under `o` (-1: dropless).
int64_t capacity_for(const MoeOptions& o, int64_t num_tokens, int num_experts);

// The router step shared by the single-rank and the expert-parallel MoE FFN: logits [T, E] ->
// ids int32 [T, k] and combine weights float32 [T, k] (allocated here), plus what moe_assign
// should score by under `o`: the router's probabilities before renormalisation
// (PriorityScore::kRouter with a renormalising model under a priority policy: one more
// [T, k] tensor), else the combine weights themselves.
struct RoutedTopk {
  Tensor ids, weights, priority_weights;
};
Result<RoutedTopk> route_topk(kernels::Backend& backend, const Tensor& logits, const MoeOptions& o);

// x: [T, H]; router_w: [E, H]; w_gate_up: [E, 2I, H]; w_down: [E, H, I]; out: [T, H].
// metrics (optional) costs a device-to-host copy of the expert counts.
Status moe_ffn(kernels::Backend& backend, const Tensor& x, const Tensor& router_w,
               const Tensor& w_gate_up, const Tensor& w_down, const MoeOptions& options,
               Tensor& out, MoeLayerMetrics* metrics = nullptr);

}  // namespace sw::moe

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

struct MoeOptions {
  int top_k = 2;
  bool renormalize = true;
  // Per-expert capacity on each source rank: ceil(capacity_factor * top_k * T_local / E),
  // computed per call from the tokens that rank routes; nullopt: `capacity` below.
  std::optional<double> capacity_factor;
  int64_t capacity = -1;  // fixed per-expert capacity when no factor is given; < 0: dropless
  kernels::DropPolicy policy = kernels::DropPolicy::kOrder;
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

// x: [T, H]; router_w: [E, H]; w_gate_up: [E, 2I, H]; w_down: [E, H, I]; out: [T, H].
// metrics (optional) costs a device-to-host copy of the expert counts.
Status moe_ffn(kernels::Backend& backend, const Tensor& x, const Tensor& router_w,
               const Tensor& w_gate_up, const Tensor& w_down, const MoeOptions& options,
               Tensor& out, MoeLayerMetrics* metrics = nullptr);

}  // namespace sw::moe

// Launchers for the MoE routing ops: router softmax-top-k, capacity/drop-policy slot
// assignment (exactly the CPU order), permute into expert-major rows, weighted unpermute.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

// logits [T, E] (logits_type) -> topk_ids int32 [T, k], topk_weights float32 [T, k]:
// float32 softmax over E, the k largest logits (ties -> lower id), optionally renormalised.
// topk_probs (optional, float32 [T, k]): the same probabilities before renormalisation.
struct RouterTopkParams {
  const void* logits = nullptr;
  ElemType logits_type = ElemType::kF32;
  int32_t* topk_ids = nullptr;
  float* topk_weights = nullptr;
  float* topk_probs = nullptr;
  int64_t tokens = 0;
  int experts = 0, k = 0;
  bool renormalize = false;
};
cudaError_t launch_router_topk(const RouterTopkParams& p, cudaStream_t stream);

// kernels/backend.h's moe_assign in one thread block (policy: 0 order, 1 priority max,
// 2 priority sum, scored by priority_weights [T, k]). scratch: int32 scratch of
// moe_assign_scratch_ints(tokens) elements.
// Limits: num_experts <= kMoeAssignMaxExperts; tokens * k < 2^31.
struct MoeAssignParams {
  const int32_t* topk_ids = nullptr;
  const float* priority_weights = nullptr;
  int32_t* dest_rows = nullptr;
  int32_t* expert_offsets = nullptr;
  int32_t* scratch = nullptr;
  int64_t tokens = 0;
  int k = 0, num_experts = 0;
  int64_t capacity = -1;
  int policy = 0;
};
constexpr int kMoeAssignMaxExperts = 1024;
int64_t moe_assign_scratch_ints(int64_t tokens);
cudaError_t launch_moe_assign(const MoeAssignParams& p, cudaStream_t stream);

// out[dest_rows[t, j]] = x[t] for 0 <= dest < out_rows. x [T, H], out [out_rows, H].
struct MoePermuteParams {
  const void* x = nullptr;
  ElemType x_type = ElemType::kF32;
  const int32_t* dest_rows = nullptr;
  void* out = nullptr;
  ElemType out_type = ElemType::kF32;
  int64_t tokens = 0, k = 0, hidden = 0, out_rows = 0;
};
cudaError_t launch_moe_permute(const MoePermuteParams& p, cudaStream_t stream);

// out[t] = sum_j weights[t, j] * y[dest_rows[t, j]] over 0 <= dest < y_rows, in float32.
struct MoeUnpermuteParams {
  const void* y = nullptr;
  ElemType y_type = ElemType::kF32;
  const int32_t* dest_rows = nullptr;
  const float* weights = nullptr;
  void* out = nullptr;
  ElemType out_type = ElemType::kF32;
  int64_t tokens = 0, k = 0, hidden = 0, y_rows = 0;
};
cudaError_t launch_moe_unpermute(const MoeUnpermuteParams& p, cudaStream_t stream);

}  // namespace sw::kernels::cuda

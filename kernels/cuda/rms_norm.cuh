// Launcher for RMSNorm, optionally fused with the residual add (vLLM's fused_add_rms_norm).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

// out[r] = v / sqrt(mean(v^2) + eps) * weight with v = x[r], or, with a residual,
// residual[r] = round(residual[r] + x[r]) and v = that rounded residual. Shapes [rows, hidden],
// weight [hidden]; every tensor has its own element type.
struct RmsNormParams {
  const void* x = nullptr;
  ElemType x_type = ElemType::kF32;
  const void* weight = nullptr;
  ElemType weight_type = ElemType::kF32;
  void* out = nullptr;
  ElemType out_type = ElemType::kF32;
  void* residual = nullptr;  // null: no residual
  ElemType residual_type = ElemType::kF32;
  int64_t rows = 0, hidden = 0;
  float eps = 1e-6f;
};
cudaError_t launch_rms_norm(const RmsNormParams& p, cudaStream_t stream);

}  // namespace sw::kernels::cuda

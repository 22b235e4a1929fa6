// Launcher for rotary position embedding (NeoX halves or interleaved pairs, partial rotary).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

// In place on q: [T, Hq, D] and k: [T, Hk, D]: the first 2 * half dims of every head are
// rotated by angle = float(positions[t]) * inv_freq[i] (float32 [half]); the rest untouched.
struct RopeParams {
  void* q = nullptr;
  ElemType q_type = ElemType::kF32;
  void* k = nullptr;
  ElemType k_type = ElemType::kF32;
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;
  int64_t tokens = 0, q_heads = 0, k_heads = 0, head_dim = 0, half = 0;
  bool neox = true;
};
cudaError_t launch_rope(const RopeParams& p, cudaStream_t stream);

}  // namespace sw::kernels::cuda

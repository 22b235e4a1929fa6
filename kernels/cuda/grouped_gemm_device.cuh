// Launcher for the grouped expert GEMM that reads expert_offsets on the device, so it can be
// captured in a CUDA graph (cuda_backend.cpp's cuBLAS path copies the offsets to the host
// first, which capture forbids). Built for the memory-bound decode case: few rows per expert,
// so it is a grouped GEMV that streams each used expert's weights once per 8 rows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

// For each expert e in [0, experts): out[r] = x[r] @ w[e]^T for r in [offs[e], offs[e + 1]),
// float32 accumulation, rounded once on store. x: [rows, k], w: [experts, n, k] (k contiguous),
// expert_offsets: int32 [experts + 1] in device memory, out: [rows, n]; x, w, out of `type`.
// Rows past offs[experts] and experts with no rows are not touched (their weights are not
// read). Offsets are not validated here (the host cannot see them); the kernel only clamps
// each expert's range to [0, rows) so bad offsets cannot write out of bounds.
// Limits: experts <= 65535, k < 2^30.
struct GroupedGemmDeviceParams {
  const void* x = nullptr;
  const void* w = nullptr;
  const int32_t* expert_offsets = nullptr;
  void* out = nullptr;
  ElemType type = ElemType::kF32;
  int64_t rows = 0, n = 0, k = 0;
  int experts = 0;
};
cudaError_t launch_grouped_gemm_device(const GroupedGemmDeviceParams& p, cudaStream_t stream);

}  // namespace sw::kernels::cuda

// Launcher for the GEMM bias epilogue kernel, used when cuBLASLt's BIAS epilogue cannot be
// (no algorithm for a shape, so cublasGemmEx runs; or a bias not 16-byte aligned):
// out[m, n] += bias[n].
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

struct BiasAddParams {
  void* out = nullptr;
  ElemType out_type = ElemType::kF32;
  const void* bias = nullptr;
  ElemType bias_type = ElemType::kF32;
  int64_t rows = 0, cols = 0;
};
cudaError_t launch_bias_add(const BiasAddParams& p, cudaStream_t stream);

}  // namespace sw::kernels::cuda

// GemmRunner: row-major out[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]) (+ out) on one stream,
// through cuBLASLt (float32 accumulation and scale; a 16-byte aligned bias via the BIAS
// epilogue, any other through a bias kernel) with plans cached per shape and pointer
// alignment, falling back to cublasGemmEx + the bias kernel when cuBLASLt offers no algorithm.
// float32 runs true FP32 (CUBLAS_COMPUTE_32F, never TF32).
// Host code; add a dtype by mapping it in cuda_gemm.cpp's data_type().
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "common/status.h"
#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

class GemmRunner {
 public:
  GemmRunner() = default;
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // workspace: device memory of workspace_bytes owned by the caller for this object's life.
  Status init(cudaStream_t stream, void* workspace, size_t workspace_bytes);

  // All row-major and contiguous; x, w, out, bias of element type `type`. M, N, K >= 0.
  Status run(const void* x, const void* w, void* out, const void* bias, bool accumulate, int64_t m,
             int64_t n, int64_t k, ElemType type);

  int64_t lt_calls() const { return lt_calls_; }
  int64_t fallback_calls() const { return fallback_calls_; }
  int64_t bias_kernel_calls() const { return bias_kernel_calls_; }

  // cuBLASLt's BIAS epilogue takes only a bias this aligned (bytes); others get the bias
  // kernel after the GEMM.
  static constexpr int kLtBiasAlignment = 16;

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool has_algo = false;
  };
  // (m, n, k, type, bias through the epilogue, accumulate, alignment of x, w, out, bias)
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, bool, int, int, int, int>;
  Result<Plan*> plan_for(const Key& key);

  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
  int64_t lt_calls_ = 0, fallback_calls_ = 0, bias_kernel_calls_ = 0;
};

}  // namespace sw::kernels::cuda

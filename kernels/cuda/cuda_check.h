// Status-returning checks for CUDA runtime and cuBLAS calls in host code: every failure names
// the call, the file and the line. Host-only (uses fmt through common/status.h).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/status.h"

#define SW_CUDA_RETURN_IF_ERROR(expr)                                                     \
  do {                                                                                    \
    const cudaError_t sw_cuda_err_ = (expr);                                              \
    if (sw_cuda_err_ != cudaSuccess) {                                                    \
      (void)cudaGetLastError();                                                           \
      return ::sw::internal_error("{}:{}: {} failed: {} ({})", __FILE__, __LINE__, #expr, \
                                  cudaGetErrorName(sw_cuda_err_),                         \
                                  cudaGetErrorString(sw_cuda_err_));                      \
    }                                                                                     \
  } while (0)

#define SW_CUBLAS_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                                    \
    const cublasStatus_t sw_cublas_st_ = (expr);                                          \
    if (sw_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                           \
      return ::sw::internal_error("{}:{}: {} failed: {} ({})", __FILE__, __LINE__, #expr, \
                                  cublasGetStatusName(sw_cublas_st_),                     \
                                  cublasGetStatusString(sw_cublas_st_));                  \
  } while (0)

// Shared by the CUDA kernels (.cu) and their launch headers: the element-type code passed
// across the host/device boundary, float load/store per element type, and warp/block
// reductions. fmt-free on purpose (nvcc cannot compile fmt 9 in C++20): never include
// common/status.h, common/tensor.h or kernels/backend.h from here or from any .cu file.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/dtype_convert.h"

namespace sw::kernels::cuda {

// Float element types a kernel can read or write; cuda_backend.cpp maps sw::DType onto it.
enum class ElemType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

inline size_t elem_size(ElemType t) { return t == ElemType::kF32 ? 4 : 2; }

#if defined(__CUDACC__)

// Storage tags: each knows its storage type and how to widen/round one element. The 16-bit
// conversions are common/dtype_convert.h's, so rounding is bit-identical to the CPU backend.
struct F32 {
  using Storage = float;
  static __device__ __forceinline__ float load(Storage v) { return v; }
  static __device__ __forceinline__ Storage store(float v) { return v; }
};
struct BF16 {
  using Storage = uint16_t;
  static __device__ __forceinline__ float load(Storage v) { return bf16_bits_to_float(v); }
  static __device__ __forceinline__ Storage store(float v) { return float_to_bf16_bits(v); }
};
struct F16 {
  using Storage = uint16_t;
  static __device__ __forceinline__ float load(Storage v) { return f16_bits_to_float(v); }
  static __device__ __forceinline__ Storage store(float v) { return float_to_f16_bits(v); }
};

// Run-time element type (one uniform branch): for ops whose speed does not hinge on it.
__device__ __forceinline__ float load_elem(const void* base, ElemType t, int64_t i) {
  switch (t) {
    case ElemType::kF32: return static_cast<const float*>(base)[i];
    case ElemType::kBF16: return bf16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
    default: return f16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
  }
}

__device__ __forceinline__ void store_elem(void* base, ElemType t, int64_t i, float v) {
  switch (t) {
    case ElemType::kF32: static_cast<float*>(base)[i] = v; return;
    case ElemType::kBF16: static_cast<uint16_t*>(base)[i] = float_to_bf16_bits(v); return;
    default: static_cast<uint16_t*>(base)[i] = float_to_f16_bits(v); return;
  }
}

// Widens 8 consecutive elements at `p`, which must be 16-byte aligned, with one or two
// 16-byte loads (the vector path of the K/V and weight streaming loops).
template <class CT>
__device__ __forceinline__ void load8_aligned(const typename CT::Storage* p, float* out) {
  if constexpr (sizeof(typename CT::Storage) == 2) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = CT::load(static_cast<uint16_t>(w[i] & 0xffffu));
      out[2 * i + 1] = CT::load(static_cast<uint16_t>(w[i] >> 16));
    }
  } else {
    const float4 a = *reinterpret_cast<const float4*>(p);
    const float4 b = *reinterpret_cast<const float4*>(p + 4);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets it.
// `scratch` holds 32 floats; the call contains barriers, so every thread must reach it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

#endif  // __CUDACC__

}  // namespace sw::kernels::cuda

// Launch helpers return cudaGetLastError() so the host side can check every launch with file
// and line (cuda_backend.cpp's SW_CUDA_RETURN_IF_ERROR).
#define SW_CUDA_LAUNCH_RESULT() cudaGetLastError()

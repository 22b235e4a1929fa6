// Launchers for the simple row/element-wise CUDA ops: add, convert, silu_and_mul, embedding
// and kv_cache_write (one .cu each). Plain pointers and sizes only, no project types, so
// nvcc never sees fmt. To add one: a params struct + launcher here, a .cu beside it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

// x[n] += y[n], both of element type `type`.
struct AddParams {
  void* x = nullptr;
  const void* y = nullptr;
  int64_t n = 0;
  ElemType type = ElemType::kF32;
};
cudaError_t launch_add(const AddParams& p, cudaStream_t stream);

// dst[n] = round(src[n]) between float element types (different types; same type is a copy).
struct ConvertParams {
  const void* src = nullptr;
  ElemType src_type = ElemType::kF32;
  void* dst = nullptr;
  ElemType dst_type = ElemType::kF32;
  int64_t n = 0;
};
cudaError_t launch_convert(const ConvertParams& p, cudaStream_t stream);

// out[rows, inter] = silu(x[:, :inter]) * x[:, inter:] for x: [rows, 2 * inter]; one type.
struct SiluAndMulParams {
  const void* x = nullptr;
  void* out = nullptr;
  int64_t rows = 0, inter = 0;
  ElemType type = ElemType::kF32;
};
cudaError_t launch_silu_and_mul(const SiluAndMulParams& p, cudaStream_t stream);

// out[t] = table[ids[t] - vocab_offset] when that row exists, else zeros.
// ids: int32 [num_tokens]; table: [vocab, hidden]; out: [num_tokens, hidden].
struct EmbeddingParams {
  const int32_t* ids = nullptr;
  const void* table = nullptr;
  ElemType table_type = ElemType::kF32;
  void* out = nullptr;
  ElemType out_type = ElemType::kF32;
  int64_t num_tokens = 0, vocab = 0, hidden = 0, vocab_offset = 0;
};
cudaError_t launch_embedding(const EmbeddingParams& p, cudaStream_t stream);

// k_cache/v_cache rows [slot] = k/v rows [t] (row = Hk * D elements) for slots[t] in
// [0, num_slots); other slots (-1, or out of range as a guard) are skipped.
struct KvCacheWriteParams {
  const void* k = nullptr;
  const void* v = nullptr;
  ElemType in_type = ElemType::kF32;
  const int32_t* slots = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  ElemType cache_type = ElemType::kF32;
  int64_t num_tokens = 0, row = 0, num_slots = 0;
};
cudaError_t launch_kv_cache_write(const KvCacheWriteParams& p, cudaStream_t stream);

}  // namespace sw::kernels::cuda

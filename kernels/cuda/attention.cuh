// Launchers for paged attention: decode (split-K over the context + a reduction kernel) and
// prefill (a host-free tile plan, then tiled online-softmax attention). Both GQA.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

// Cache geometry shared by both kernels: k_cache/v_cache [num_blocks, block_size, Hk, D].
struct PagedCache {
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  ElemType type = ElemType::kF32;
  int64_t num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

// Decode: q [B, Hq, D] (q_type), one query per sequence at position seq_lens[b] - 1 over
// cache positions [0, seq_lens[b]); out [B, Hq, D] (out_type). block_tables int32
// [B, max_blocks]. Work is split over `num_splits` ranges of `split_len` positions; with
// num_splits > 1 the partial results go to partial_acc (float32 [B, Hq, num_splits, D]) and
// partial_ml (float32 [B, Hq, num_splits, 2]) and a reduction kernel writes out.
struct AttentionDecodeParams {
  PagedCache cache;
  const void* q = nullptr;
  ElemType q_type = ElemType::kF32;
  void* out = nullptr;
  ElemType out_type = ElemType::kF32;
  const int32_t* seq_lens = nullptr;
  const int32_t* block_tables = nullptr;
  int batch = 0, num_q_heads = 0, max_blocks = 0;
  int num_splits = 1, split_len = 0;
  float* partial_acc = nullptr;
  float* partial_ml = nullptr;
  float scale = 1.f;
};
// How many splits to use (the host only knows the widest context, max_blocks * block_size)
// so that the grid has at least ~2 blocks per SM. Sets num_splits and split_len.
void plan_attention_decode(AttentionDecodeParams& p, int num_sms);
cudaError_t launch_attention_decode(const AttentionDecodeParams& p, cudaStream_t stream);

// Prefill: q [T, Hq, D]; query_start_loc int32 [B + 1]; seq_lens int32 [B]; block_tables
// int32 [B, max_blocks]; out [T, Hq, D]. tile_plan: int32 scratch of
// prefill_tile_plan_ints(T, B) elements (written by a one-block plan kernel first).
struct AttentionPrefillParams {
  PagedCache cache;
  const void* q = nullptr;
  ElemType q_type = ElemType::kF32;
  void* out = nullptr;
  ElemType out_type = ElemType::kF32;
  const int32_t* query_start_loc = nullptr;
  const int32_t* seq_lens = nullptr;
  const int32_t* block_tables = nullptr;
  int num_tokens = 0, batch = 0, num_q_heads = 0, max_blocks = 0;
  int32_t* tile_plan = nullptr;
  float scale = 1.f;
};
int64_t prefill_tile_plan_ints(int64_t num_tokens, int64_t batch);
cudaError_t launch_attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream);

// Largest head_dim the kernels take (registers and shared memory are sized for it).
constexpr int kMaxAttentionHeadDim = 256;

}  // namespace sw::kernels::cuda

// Device-only helpers for single-block, order-exact work (moe_assign, sample): a stable
// counting pass over items in index order, and a stable LSD radix sort of (uint32 key, int32
// value) pairs built on it. Both need kSortThreads threads per block. Include only from .cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sw::kernels::cuda {

constexpr int kSortThreads = 256;
constexpr int kSortWarps = kSortThreads / 32;

// Shared memory a stable_counting_pass over `bins` bins needs, in uint32 words.
__host__ __device__ constexpr int counting_pass_smem_words(int bins) {
  return bins + kSortWarps * bins;
}

// For items i = 0..n-1 in order, digit(i) in [0, bins) or -1 (no slot): calls
// emit(i, counts[d] + number of earlier items with the same digit), and advances counts[d].
// counts (bins words) carries over between calls; warp_hist has kSortWarps * bins words.
// Every thread of the block must call it (it contains barriers).
template <class DigitFn, class EmitFn>
__device__ void stable_counting_pass(int n, int bins, uint32_t* counts, uint32_t* warp_hist,
                                     DigitFn digit, EmitFn emit) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned lt_mask = (1u << lane) - 1u;
  for (int base = 0; base < n; base += kSortThreads) {
    for (int x = threadIdx.x; x < kSortWarps * bins; x += kSortThreads) warp_hist[x] = 0;
    __syncthreads();
    const int i = base + static_cast<int>(threadIdx.x);
    const int d = i < n ? digit(i) : -1;
    const unsigned peers = __match_any_sync(0xffffffffu, d);
    const int rank = __popc(peers & lt_mask);
    if (d >= 0 && rank == 0) warp_hist[warp * bins + d] = __popc(peers);
    __syncthreads();
    for (int b = threadIdx.x; b < bins; b += kSortThreads) {
      uint32_t run = counts[b];
      for (int w = 0; w < kSortWarps; ++w) {
        const uint32_t c = warp_hist[w * bins + b];
        warp_hist[w * bins + b] = run;
        run += c;
      }
      counts[b] = run;
    }
    __syncthreads();
    if (d >= 0) emit(i, static_cast<int>(warp_hist[warp * bins + d]) + rank);
    __syncthreads();
  }
}

// Stable ascending sort of keys[0..n) with vals, 8 bits per pass (4 passes, so the result
// ends in keys/vals again). smem: counting_pass_smem_words(256) words.
__device__ inline void block_radix_sort_pairs(uint32_t* keys, int32_t* vals, uint32_t* keys_tmp,
                                              int32_t* vals_tmp, int n, uint32_t* smem) {
  uint32_t* counts = smem;
  uint32_t* warp_hist = smem + 256;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = pass * 8;
    uint32_t* src_k = (pass & 1) ? keys_tmp : keys;
    int32_t* src_v = (pass & 1) ? vals_tmp : vals;
    uint32_t* dst_k = (pass & 1) ? keys : keys_tmp;
    int32_t* dst_v = (pass & 1) ? vals : vals_tmp;
    for (int b = threadIdx.x; b < 256; b += kSortThreads) counts[b] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += kSortThreads)
      atomicAdd(&counts[(src_k[i] >> shift) & 0xffu], 1u);
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t run = 0;
      for (int b = 0; b < 256; ++b) {
        const uint32_t c = counts[b];
        counts[b] = run;
        run += c;
      }
    }
    __syncthreads();
    stable_counting_pass(
        n, 256, counts, warp_hist,
        [&](int i) { return static_cast<int>((src_k[i] >> shift) & 0xffu); },
        [&](int i, int pos) {
          dst_k[pos] = src_k[i];
          dst_v[pos] = src_v[i];
        });
    __syncthreads();
  }
}

// Float -> uint32 whose ascending order is DEScending float order (-0 folded into +0, so
// equal floats compare equal as they do in C++).
__device__ __forceinline__ uint32_t descending_key(float f) {
  if (f == 0.f) f = 0.f;
  const uint32_t u = __float_as_uint(f);
  const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~ordered;
}

}  // namespace sw::kernels::cuda

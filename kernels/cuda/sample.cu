// Sampling, one block per row. Greedy: a block argmax (ties -> lowest id, NaN never wins).
// Otherwise the exact CPU procedure: a stable radix sort of the whole row by descending
// logit (ties keep the lower id first), p = expf(z - m) in that order, the float32 prefix sum
// taken left to right by one thread (so every c_r is bit-identical to the CPU's up to expf's
// last ulp), then binary searches for the top-p cut and the inverse-CDF draw. Correct first:
// the full sort costs ~ms per row batch at 150k vocab; a top-k-first path (radix select of
// the k best, then a shared-memory sort) is the planned speed-up.
#include <climits>

#include "common/rng.h"
#include "kernels/cuda/block_sort.cuh"
#include "kernels/cuda/sample.cuh"

namespace sw::kernels::cuda {
namespace {

constexpr int kChunk = 2048;

__device__ __forceinline__ bool argmax_better(float v, int i, float bv, int bi) {
  const bool nv = isnan(v), nb = isnan(bv);
  if (i == INT_MAX) return false;
  if (bi == INT_MAX) return true;
  if (nv != nb) return nb;  // a number beats NaN
  if (nv) return i < bi;
  return v > bv || (v == bv && i < bi);
}

// First index r in [lo, hi) with c[r] >= x (c non-decreasing), or hi.
__device__ int64_t lower_bound_ge(const float* c, int64_t lo, int64_t hi, float x) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (c[mid] >= x) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

__global__ void __launch_bounds__(kSortThreads) sample_kernel(SampleParams p) {
  __shared__ uint32_t sort_smem[counting_pass_smem_words(256)];
  __shared__ float cbuf[kChunk];
  __shared__ float red_v[kSortWarps];
  __shared__ int red_i[kSortWarps];
  const int64_t row = blockIdx.x, v_count = p.vocab, base = row * v_count;
  const SampleRowParams cfg = p.row_params[row];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // ---- argmax ---------------------------------------------------------------------------
  float bv = NAN;
  int bi = INT_MAX;
  for (int64_t i = threadIdx.x; i < v_count; i += kSortThreads) {
    const float v = load_elem(p.logits, p.type, base + i);
    if (argmax_better(v, static_cast<int>(i), bv, bi)) {
      bv = v;
      bi = static_cast<int>(i);
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (argmax_better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  if (lane == 0) {
    red_v[warp] = bv;
    red_i[warp] = bi;
  }
  __syncthreads();
  bv = red_v[0];
  bi = red_i[0];
  for (int w = 1; w < kSortWarps; ++w)
    if (argmax_better(red_v[w], red_i[w], bv, bi)) {
      bv = red_v[w];
      bi = red_i[w];
    }
  if (bi == INT_MAX) bi = 0;
  const float temp = cfg.temperature;
  const float m = bv / temp;
  if (!(temp > 0.f) || !isfinite(m) || p.scratch == nullptr) {
    if (threadIdx.x == 0) p.out[row] = bi;
    return;  // uniform over the block
  }

  // ---- sort the row by descending logit (stable: ties keep the lower id first) -------------
  const int n_all = static_cast<int>(v_count);
  uint32_t* keys = p.scratch + row * 4 * v_count;
  uint32_t* keys_tmp = keys + v_count;
  int32_t* ids = reinterpret_cast<int32_t*>(keys + 2 * v_count);
  int32_t* ids_tmp = ids + v_count;
  for (int i = threadIdx.x; i < n_all; i += kSortThreads) {
    keys[i] = descending_key(load_elem(p.logits, p.type, base + i));
    ids[i] = i;
  }
  __syncthreads();
  block_radix_sort_pairs(keys, ids, keys_tmp, ids_tmp, n_all, sort_smem);
  const int n = cfg.top_k > 0 && cfg.top_k < n_all ? cfg.top_k : n_all;

  // ---- c_r = p_0 + ... + p_r in float32, left to right -------------------------------------
  float* c = reinterpret_cast<float*>(keys_tmp);
  for (int r = threadIdx.x; r < n; r += kSortThreads)
    c[r] = expf(load_elem(p.logits, p.type, base + ids[r]) / temp - m);
  __syncthreads();
  float run = 0.f;  // meaningful in thread 0 only
  for (int c0 = 0; c0 < n; c0 += kChunk) {
    const int len = min(kChunk, n - c0);
    for (int i = threadIdx.x; i < len; i += kSortThreads) cbuf[i] = c[c0 + i];
    __syncthreads();
    if (threadIdx.x == 0)
      for (int i = 0; i < len; ++i) {
        run += cbuf[i];
        cbuf[i] = run;
      }
    __syncthreads();
    for (int i = threadIdx.x; i < len; i += kSortThreads) c[c0 + i] = cbuf[i];
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  int64_t keep = n;
  if (cfg.top_p < 1.f) {
    const float threshold = cfg.top_p * c[n - 1];
    keep = lower_bound_ge(c, 0, n - 1, threshold) + 1;  // CPU: first keep with c[keep-1] >= thr
  }
  const float target = philox_uniform(cfg.seed, cfg.offset, 0) * c[keep - 1];
  int64_t r = lower_bound_ge(c, 0, keep, target);
  if (r >= keep) r = keep - 1;
  p.out[row] = ids[r];
}

}  // namespace

int64_t sample_scratch_words(int64_t rows, int64_t vocab) { return 4 * rows * vocab; }

cudaError_t launch_sample(const SampleParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.vocab <= 0 || p.vocab > INT_MAX / 4) return cudaErrorInvalidValue;
  sample_kernel<<<static_cast<unsigned>(p.rows), kSortThreads, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

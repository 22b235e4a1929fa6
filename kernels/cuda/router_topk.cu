// Router softmax-top-k: one warp per token. The k picks are k warp-wide argmax rounds, each
// over the entries that come after the previous pick in (logit desc, id asc) order, so ties go
// to the lower expert id with no marks to keep. Softmax and renormalisation in float32; the
// probabilities before renormalisation optionally go to topk_probs too.
#include <climits>

#include "kernels/cuda/moe.cuh"

namespace sw::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kNone = INT_MAX;

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  return i != kNone && (bi == kNone || v > bv || (v == bv && i < bi));
}

__global__ void router_topk_kernel(RouterTopkParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (t >= p.tokens) return;
  const int e_count = p.experts;
  const int64_t base = t * e_count;
  float prev_v = INFINITY, m = 0.f, denom = 0.f, kept = 0.f;
  int prev_i = -1;
  for (int j = 0; j < p.k; ++j) {
    float bv = -INFINITY;
    int bi = kNone;
    for (int e = lane; e < e_count; e += 32) {
      const float v = load_elem(p.logits, p.logits_type, base + e);
      const bool after = v < prev_v || (v == prev_v && e > prev_i);
      if (after && better(v, e, bv, bi)) {
        bv = v;
        bi = e;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (bi == kNone) bi = 0;  // only NaN rows get here; the CPU order is undefined for them
    prev_v = bv;
    prev_i = bi;
    if (j == 0) {
      m = bv;
      float part = 0.f;
      for (int e = lane; e < e_count; e += 32)
        part += expf(load_elem(p.logits, p.logits_type, base + e) - m);
      denom = warp_sum(part);
    }
    const float w = expf(bv - m) / denom;
    kept += w;
    if (lane == 0) {
      p.topk_ids[t * p.k + j] = bi;
      p.topk_weights[t * p.k + j] = w;
      if (p.topk_probs) p.topk_probs[t * p.k + j] = w;
    }
  }
  if (p.renormalize && lane == 0)
    for (int j = 0; j < p.k; ++j) p.topk_weights[t * p.k + j] /= kept;
}

}  // namespace

cudaError_t launch_router_topk(const RouterTopkParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.k <= 0) return cudaSuccess;
  const int64_t blocks = (p.tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  router_topk_kernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

// Paged decode attention, split-K: a block owns (sequence, KV head, up to 8 of its GQA query
// heads, one range of positions), so each K/V row is read once for the whole group. Each warp
// walks 32 positions at a time: lane = position for the q.k dot products (K rows read with
// 16-byte loads when aligned), then lanes own head_dim slices for p.V. Online softmax in
// float32; warps and then splits are merged by their (max, sum) pairs. Extend: tune
// kWarps / split sizes per GPU in plan_attention_decode.
#include <math.h>

#include <algorithm>

#include "kernels/cuda/attention.cuh"

namespace sw::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kHeadsPerBlock = 8;
constexpr int kDPerLane = kMaxAttentionHeadDim / 32;

// Widens 8 consecutive elements starting at `p` (16-byte aligned when kVec).
template <class CT, bool kVec>
__device__ __forceinline__ void load8(const typename CT::Storage* p, float* out) {
  if constexpr (kVec) {
    load8_aligned<CT>(p, out);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = CT::load(p[i]);
  }
}

template <class CT, bool kVec>
__global__ void __launch_bounds__(kThreads) attention_decode_kernel(AttentionDecodeParams p) {
  using S = typename CT::Storage;
  extern __shared__ float smem[];
  const int D = p.cache.head_dim, hk = p.cache.num_kv_heads, bs = p.cache.block_size;
  const int group = p.num_q_heads / hk;
  const int chunks = (group + kHeadsPerBlock - 1) / kHeadsPerBlock;
  const int split = blockIdx.x, kvh = blockIdx.y / chunks, chunk = blockIdx.y % chunks;
  const int b = blockIdx.z;
  const int h0 = kvh * group + chunk * kHeadsPerBlock;
  const int nh = min(kHeadsPerBlock, group - chunk * kHeadsPerBlock);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  float* qs = smem;                                 // [kHeadsPerBlock][D]
  float* wacc = qs + kHeadsPerBlock * D;            // [kWarps][kHeadsPerBlock][D]
  float* wml = wacc + kWarps * kHeadsPerBlock * D;  // [kWarps][kHeadsPerBlock][2]

  int len = p.seq_lens[b];
  len = max(0, min(len, p.max_blocks * bs));
  const int begin = split * p.split_len;
  const int end = min(len, begin + p.split_len);
  for (int i = threadIdx.x; i < nh * D; i += kThreads)
    qs[i] = load_elem(p.q, p.q_type, (static_cast<int64_t>(b) * p.num_q_heads + h0) * D + i);
  __syncthreads();

  float m[kHeadsPerBlock], l[kHeadsPerBlock], acc[kHeadsPerBlock][kDPerLane];
#pragma unroll
  for (int h = 0; h < kHeadsPerBlock; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.f;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) acc[h][i] = 0.f;
  }
  const int64_t slot_stride = static_cast<int64_t>(hk) * D;
  const int32_t* table = p.block_tables + static_cast<int64_t>(b) * p.max_blocks;
  const S* kc = static_cast<const S*>(p.cache.k_cache);
  const S* vc = static_cast<const S*>(p.cache.v_cache);

  for (int base = begin + warp * 32; base < end; base += kWarps * 32) {
    const int pos = base + lane;
    bool valid = pos < end;
    int64_t off = 0;
    if (valid) {
      const int blk = table[pos / bs];
      valid = blk >= 0 && blk < p.cache.num_blocks;  // guard: a bad table entry reads nothing
      off =
          (static_cast<int64_t>(blk) * bs + pos % bs) * slot_stride + static_cast<int64_t>(kvh) * D;
    }
    float s[kHeadsPerBlock];
#pragma unroll
    for (int h = 0; h < kHeadsPerBlock; ++h) s[h] = 0.f;
    if (valid) {
      const S* kr = kc + off;
      for (int d0 = 0; d0 + 8 <= D; d0 += 8) {
        float kv[8];
        load8<CT, kVec>(kr + d0, kv);
#pragma unroll
        for (int e = 0; e < 8; ++e)
#pragma unroll
          for (int h = 0; h < kHeadsPerBlock; ++h)
            if (h < nh) s[h] += qs[h * D + d0 + e] * kv[e];
      }
      for (int d = D & ~7; d < D; ++d) {
        const float kv = CT::load(kr[d]);
#pragma unroll
        for (int h = 0; h < kHeadsPerBlock; ++h)
          if (h < nh) s[h] += qs[h * D + d] * kv;
      }
    }
    float pr[kHeadsPerBlock];
#pragma unroll
    for (int h = 0; h < kHeadsPerBlock; ++h) {
      pr[h] = 0.f;
      if (h >= nh) continue;
      const float sv = valid ? s[h] * p.scale : -INFINITY;
      const float mn = fmaxf(m[h], warp_max(sv));
      if (mn == -INFINITY) continue;  // warp-uniform: nothing valid yet
      const float corr = m[h] == -INFINITY ? 0.f : expf(m[h] - mn);
      pr[h] = valid ? expf(sv - mn) : 0.f;
      l[h] = l[h] * corr + pr[h];
      m[h] = mn;
#pragma unroll
      for (int i = 0; i < kDPerLane; ++i) acc[h][i] *= corr;
    }
    for (int j = 0; j < 32; ++j) {
      const int64_t offj = __shfl_sync(0xffffffffu, off, j);
      const int vj = __shfl_sync(0xffffffffu, static_cast<int>(valid), j);
      if (!vj) continue;  // warp-uniform
      float pj[kHeadsPerBlock];
#pragma unroll
      for (int h = 0; h < kHeadsPerBlock; ++h) pj[h] = __shfl_sync(0xffffffffu, pr[h], j);
      const S* vr = vc + offj;
#pragma unroll
      for (int i = 0; i < kDPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < D) {
          const float vv = CT::load(vr[d]);
#pragma unroll
          for (int h = 0; h < kHeadsPerBlock; ++h)
            if (h < nh) acc[h][i] += pj[h] * vv;
        }
      }
    }
  }

  // Merge the warps of this block.
#pragma unroll
  for (int h = 0; h < kHeadsPerBlock; ++h) {
    if (h >= nh) continue;
    const float lsum = warp_sum(l[h]);
    if (lane == 0) {
      wml[(warp * kHeadsPerBlock + h) * 2] = m[h];
      wml[(warp * kHeadsPerBlock + h) * 2 + 1] = lsum;
    }
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) wacc[(warp * kHeadsPerBlock + h) * D + d] = acc[h][i];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nh * D; idx += kThreads) {
    const int h = idx / D, d = idx % D;
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wml[(w * kHeadsPerBlock + h) * 2]);
    float a = 0.f, lt = 0.f;
    if (mx != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float mw = wml[(w * kHeadsPerBlock + h) * 2];
        if (mw == -INFINITY) continue;
        const float f = expf(mw - mx);
        lt += wml[(w * kHeadsPerBlock + h) * 2 + 1] * f;
        a += wacc[(w * kHeadsPerBlock + h) * D + d] * f;
      }
    }
    const int64_t row = static_cast<int64_t>(b) * p.num_q_heads + h0 + h;
    if (p.num_splits == 1) {
      store_elem(p.out, p.out_type, row * D + d, lt > 0.f ? a / lt : 0.f);
    } else {
      const int64_t part = row * p.num_splits + split;
      p.partial_acc[part * D + d] = a;
      if (d == 0) {
        p.partial_ml[part * 2] = mx;
        p.partial_ml[part * 2 + 1] = lt;
      }
    }
  }
}

// One block per (sequence, query head): merges the splits' partial (max, sum, acc).
__global__ void attention_decode_reduce_kernel(AttentionDecodeParams p) {
  const int64_t row = blockIdx.x;
  const int D = p.cache.head_dim, ns = p.num_splits;
  const float* ml = p.partial_ml + row * ns * 2;
  float mx = -INFINITY;
  for (int s = 0; s < ns; ++s) mx = fmaxf(mx, ml[2 * s]);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.f, lt = 0.f;
    if (mx != -INFINITY) {
      for (int s = 0; s < ns; ++s) {
        if (ml[2 * s] == -INFINITY) continue;
        const float f = expf(ml[2 * s] - mx);
        lt += ml[2 * s + 1] * f;
        a += p.partial_acc[(row * ns + s) * D + d] * f;
      }
    }
    store_elem(p.out, p.out_type, row * D + d, lt > 0.f ? a / lt : 0.f);
  }
}

size_t decode_smem_bytes(int head_dim) {
  return sizeof(float) * (static_cast<size_t>(kHeadsPerBlock) * head_dim +
                          static_cast<size_t>(kWarps) * kHeadsPerBlock * head_dim +
                          static_cast<size_t>(kWarps) * kHeadsPerBlock * 2);
}

template <class CT>
cudaError_t launch_typed(const AttentionDecodeParams& p, dim3 grid, size_t smem, bool vec,
                         cudaStream_t stream) {
  if (vec) {
    attention_decode_kernel<CT, true><<<grid, kThreads, smem, stream>>>(p);
  } else {
    attention_decode_kernel<CT, false><<<grid, kThreads, smem, stream>>>(p);
  }
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace

void plan_attention_decode(AttentionDecodeParams& p, int num_sms) {
  const int64_t max_ctx = static_cast<int64_t>(p.max_blocks) * p.cache.block_size;
  const int group = p.cache.num_kv_heads > 0 ? p.num_q_heads / p.cache.num_kv_heads : 1;
  const int64_t chunks = (group + kHeadsPerBlock - 1) / kHeadsPerBlock;
  const int64_t base_blocks =
      std::max<int64_t>(1, int64_t{p.batch} * p.cache.num_kv_heads * chunks);
  int64_t splits = 1;
  const int64_t want = 2 * static_cast<int64_t>(num_sms > 0 ? num_sms : 132);
  if (base_blocks < want) splits = (want + base_blocks - 1) / base_blocks;
  // Each split keeps every warp busy for at least two 32-position rounds.
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, (max_ctx + 255) / 256));
  splits = std::min<int64_t>(splits, 64);
  int64_t split_len = std::max<int64_t>(1, (max_ctx + splits - 1) / splits);
  split_len = (split_len + kThreads - 1) / kThreads * kThreads;
  p.split_len = static_cast<int>(split_len);
  p.num_splits = static_cast<int>(std::max<int64_t>(1, (max_ctx + split_len - 1) / split_len));
}

cudaError_t launch_attention_decode(const AttentionDecodeParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.num_q_heads <= 0) return cudaSuccess;
  const int D = p.cache.head_dim;
  if (D <= 0 || D > kMaxAttentionHeadDim || p.cache.num_kv_heads <= 0 || p.num_splits <= 0)
    return cudaErrorInvalidValue;
  const int group = p.num_q_heads / p.cache.num_kv_heads;
  const int chunks = (group + kHeadsPerBlock - 1) / kHeadsPerBlock;
  const dim3 grid(static_cast<unsigned>(p.num_splits),
                  static_cast<unsigned>(p.cache.num_kv_heads * chunks),
                  static_cast<unsigned>(p.batch));
  const size_t smem = decode_smem_bytes(D);
  // 16-byte K loads need 8-element rows starting on 16-byte boundaries.
  const size_t es = elem_size(p.cache.type);
  const bool vec =
      D % 8 == 0 && (reinterpret_cast<uintptr_t>(p.cache.k_cache) % 16) == 0 && (D * es) % 16 == 0;
  cudaError_t err = cudaSuccess;
  switch (p.cache.type) {
    case ElemType::kF32: err = launch_typed<F32>(p, grid, smem, vec, stream); break;
    case ElemType::kBF16: err = launch_typed<BF16>(p, grid, smem, vec, stream); break;
    case ElemType::kF16: err = launch_typed<F16>(p, grid, smem, vec, stream); break;
  }
  if (err != cudaSuccess || p.num_splits == 1) return err;
  attention_decode_reduce_kernel<<<static_cast<unsigned>(int64_t{p.batch} * p.num_q_heads), 128, 0,
                                   stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

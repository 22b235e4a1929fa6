// Paged causal prefill attention for a variable-length batch. A one-block plan kernel turns
// query_start_loc into a list of (sequence, first query) tiles of kTileQ queries (FlashInfer's
// plan/run split, without a host sync); the main kernel takes one tile and one query head per
// block, streams the sequence's K/V through shared memory kTileK positions at a time, and
// keeps an online softmax per query in float32. Scalar FMA, no tensor cores yet: the next step
// for speed is a wgmma (sm_90a) tile kernel behind the same launcher.
#include <math.h>

#include "kernels/cuda/attention.cuh"

namespace sw::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kQueriesPerWarp = 4;
constexpr int kTileQ = kWarps * kQueriesPerWarp;
constexpr int kTileK = 32;
constexpr int kDPerLane = kMaxAttentionHeadDim / 32;

int64_t max_tiles(int64_t num_tokens, int64_t batch) {
  return (num_tokens + kTileQ - 1) / kTileQ + batch;
}

// plan[0] = number of tiles; plan[1 + 2 * i] = sequence, plan[2 + 2 * i] = first query row.
__global__ void prefill_plan_kernel(AttentionPrefillParams p, int64_t capacity) {
  if (threadIdx.x != 0) return;
  int64_t n = 0;
  for (int s = 0; s < p.batch; ++s) {
    const int q0 = p.query_start_loc[s], q1 = min(p.query_start_loc[s + 1], p.num_tokens);
    for (int t = max(q0, 0); t < q1; t += kTileQ) {
      if (n < capacity) {
        p.tile_plan[1 + 2 * n] = s;
        p.tile_plan[2 + 2 * n] = t;
      }
      ++n;
    }
  }
  p.tile_plan[0] = static_cast<int32_t>(n < capacity ? n : capacity);
}

template <class CT>
__global__ void __launch_bounds__(kThreads) attention_prefill_kernel(AttentionPrefillParams p) {
  using S = typename CT::Storage;
  extern __shared__ float smem[];
  const int tile = blockIdx.x;
  if (tile >= p.tile_plan[0]) return;
  const int seq = p.tile_plan[1 + 2 * tile], q_begin = p.tile_plan[2 + 2 * tile];
  const int D = p.cache.head_dim, bs = p.cache.block_size, hk = p.cache.num_kv_heads;
  const int h = blockIdx.y, kvh = h / (p.num_q_heads / hk);
  const int qs0 = p.query_start_loc[seq], qs1 = min(p.query_start_loc[seq + 1], p.num_tokens);
  const int nq = min(kTileQ, qs1 - q_begin);
  const int len = p.seq_lens[seq];
  const int first_pos = len - (qs1 - qs0) + (q_begin - qs0);  // position of query q_begin
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  float* qs = smem;                   // [kTileQ][D]
  float* ks = qs + kTileQ * D;        // [kTileK][D + 1] (padded: lane = row reads)
  float* vs = ks + kTileK * (D + 1);  // [kTileK][D]
  int* kvalid = reinterpret_cast<int*>(vs + kTileK * D);  // [kTileK]

  for (int i = threadIdx.x; i < kTileQ * D; i += kThreads) {
    const int qi = i / D, d = i % D;
    qs[i] = qi < nq ? load_elem(p.q, p.q_type,
                                (static_cast<int64_t>(q_begin + qi) * p.num_q_heads + h) * D + d)
                    : 0.f;
  }

  float m[kQueriesPerWarp], l[kQueriesPerWarp], acc[kQueriesPerWarp][kDPerLane];
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    m[qi] = -INFINITY;
    l[qi] = 0.f;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) acc[qi][i] = 0.f;
  }
  const int64_t slot_stride = static_cast<int64_t>(hk) * D;
  const int32_t* table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks;
  const S* kc = static_cast<const S*>(p.cache.k_cache);
  const S* vc = static_cast<const S*>(p.cache.v_cache);
  const int kv_end = max(0, min(first_pos + nq, min(len, p.max_blocks * bs)));

  for (int kv0 = 0; kv0 < kv_end; kv0 += kTileK) {
    __syncthreads();  // the previous tile is consumed (and qs is written on the first round)
    for (int i = threadIdx.x; i < kTileK * D; i += kThreads) {
      const int j = i / D, d = i % D, pos = kv0 + j;
      float kv = 0.f, vv = 0.f;
      int ok = 0;
      if (pos < kv_end) {
        const int blk = table[pos / bs];
        if (blk >= 0 && blk < p.cache.num_blocks) {
          const int64_t off =
              (static_cast<int64_t>(blk) * bs + pos % bs) * slot_stride + int64_t{kvh} * D + d;
          kv = CT::load(kc[off]);
          vv = CT::load(vc[off]);
          ok = 1;
        }
      }
      ks[j * (D + 1) + d] = kv;
      vs[j * D + d] = vv;
      if (d == 0) kvalid[j] = ok;
    }
    __syncthreads();
#pragma unroll
    for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
      const int wq = warp * kQueriesPerWarp + qi;
      if (wq >= nq) continue;  // warp-uniform
      const int qpos = first_pos + wq, pos = kv0 + lane;
      const bool ok = pos <= qpos && pos < kv_end && kvalid[lane];
      float s = -INFINITY;
      if (ok) {
        float dot = 0.f;
        const float* qrow = qs + wq * D;
        const float* krow = ks + lane * (D + 1);
        for (int d = 0; d < D; ++d) dot += qrow[d] * krow[d];
        s = dot * p.scale;
      }
      const float mn = fmaxf(m[qi], warp_max(s));
      if (mn == -INFINITY) continue;  // warp-uniform: nothing visible yet
      const float corr = m[qi] == -INFINITY ? 0.f : expf(m[qi] - mn);
      const float pr = ok ? expf(s - mn) : 0.f;
      l[qi] = l[qi] * corr + pr;
      m[qi] = mn;
#pragma unroll
      for (int i = 0; i < kDPerLane; ++i) acc[qi][i] *= corr;
      for (int j = 0; j < kTileK; ++j) {
        const float pj = __shfl_sync(0xffffffffu, pr, j);
#pragma unroll
        for (int i = 0; i < kDPerLane; ++i) {
          const int d = lane + 32 * i;
          if (d < D) acc[qi][i] += pj * vs[j * D + d];
        }
      }
    }
  }
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    const int wq = warp * kQueriesPerWarp + qi;
    if (wq >= nq) continue;
    const float lt = warp_sum(l[qi]);
    const int64_t row = (static_cast<int64_t>(q_begin + wq) * p.num_q_heads + h) * D;
#pragma unroll
    for (int i = 0; i < kDPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) store_elem(p.out, p.out_type, row + d, lt > 0.f ? acc[qi][i] / lt : 0.f);
    }
  }
}

size_t prefill_smem_bytes(int head_dim) {
  return sizeof(float) * (static_cast<size_t>(kTileQ) * head_dim +
                          static_cast<size_t>(kTileK) * (head_dim + 1) +
                          static_cast<size_t>(kTileK) * head_dim) +
         sizeof(int) * kTileK;
}

template <class CT>
cudaError_t launch_typed(const AttentionPrefillParams& p, dim3 grid, size_t smem,
                         cudaStream_t stream) {
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(attention_prefill_kernel<CT>,
                             cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  attention_prefill_kernel<CT><<<grid, kThreads, smem, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace

int64_t prefill_tile_plan_ints(int64_t num_tokens, int64_t batch) {
  return 1 + 2 * max_tiles(num_tokens, batch);
}

cudaError_t launch_attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream) {
  if (p.num_tokens <= 0 || p.batch <= 0 || p.num_q_heads <= 0) return cudaSuccess;
  const int D = p.cache.head_dim;
  if (D <= 0 || D > kMaxAttentionHeadDim || p.cache.num_kv_heads <= 0 || !p.tile_plan)
    return cudaErrorInvalidValue;
  const int64_t capacity = max_tiles(p.num_tokens, p.batch);
  prefill_plan_kernel<<<1, 32, 0, stream>>>(p, capacity);
  cudaError_t err = SW_CUDA_LAUNCH_RESULT();
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(capacity), static_cast<unsigned>(p.num_q_heads));
  const size_t smem = prefill_smem_bytes(D);
  switch (p.cache.type) {
    case ElemType::kF32: return launch_typed<F32>(p, grid, smem, stream);
    case ElemType::kBF16: return launch_typed<BF16>(p, grid, smem, stream);
    case ElemType::kF16: return launch_typed<F16>(p, grid, smem, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace sw::kernels::cuda

// Grouped expert GEMV with device-side offsets (capturable). Grid (N tiles, experts): a block
// of 8 warps owns one expert and 32 output columns, 4 per warp. A warp walks K in steps of
// 256 elements, each lane widening 8 elements of each of its 4 weight rows (one 16-byte load
// per 8 bf16/f16 elements when K and the pointers are 16-byte aligned, else coalesced scalar
// loads), and FMAs them against up to 8 x rows (read from global; they stay in L1/L2) into
// 8 x 4 float32 register accumulators; one warp_sum per (row, column) at the end of each
// 8-row chunk. The weight tile is re-read for every chunk, so this wins only when experts have
// few rows (decode); use cuBLAS for many rows per expert. Extend: tune kColsPerWarp / kWarps.
#include "kernels/cuda/grouped_gemm_device.cuh"

namespace sw::kernels::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kColsPerWarp = 4;
constexpr int kColsPerBlock = kWarps * kColsPerWarp;
constexpr int kRowsPerChunk = 8;
constexpr int kPerLane = 8;                  // K elements per lane per step
constexpr int kStep = 32 * kPerLane;         // K elements per warp per step
constexpr int64_t kMaxK = int64_t{1} << 30;  // keeps every in-row int index far from overflow
static_assert(kRowsPerChunk * kColsPerWarp == 32, "one output per lane in the store");

// Widens the 8 elements this lane owns in the step starting at `row + k0`: with kVec the 8
// consecutive elements at k0 + lane * 8 (16-byte aligned), else k0 + lane + 32 * j (each load
// instruction then covers 32 consecutive elements of the row: coalesced at any alignment).
template <class CT, bool kVec>
__device__ __forceinline__ void load_step(const typename CT::Storage* __restrict__ row, int k0,
                                          int lane, float* out) {
  if constexpr (kVec) {
    load8_aligned<CT>(row + k0 + lane * kPerLane, out);
  } else {
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) out[j] = CT::load(row[k0 + lane + 32 * j]);
  }
}

// The last partial step (k0 + kStep > k): the strided layout with every index checked.
template <class CT>
__device__ __forceinline__ void load_tail(const typename CT::Storage* __restrict__ row, int k0,
                                          int k, int lane, float* out) {
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int i = k0 + lane + 32 * j;
    out[j] = i < k ? CT::load(row[i]) : 0.f;
  }
}

// acc[r][c] += x_r . w_c over this lane's 8 elements of one step, for rows r < nr and
// columns c < nc (both warp-uniform, so the loads they skip are skipped by the whole warp).
template <class CT, bool kVec, bool kTail>
__device__ __forceinline__ void accumulate_step(const typename CT::Storage* __restrict__ x,
                                                const typename CT::Storage* __restrict__ w, int k,
                                                int k0, int nr, int nc, int lane,
                                                float (&acc)[kRowsPerChunk][kColsPerWarp]) {
  float wv[kColsPerWarp][kPerLane];
#pragma unroll
  for (int c = 0; c < kColsPerWarp; ++c) {
    if (c < nc) {
      if constexpr (kTail) {
        load_tail<CT>(w + static_cast<int64_t>(c) * k, k0, k, lane, wv[c]);
      } else {
        load_step<CT, kVec>(w + static_cast<int64_t>(c) * k, k0, lane, wv[c]);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) wv[c][j] = 0.f;
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerChunk; ++r) {
    if (r >= nr) break;
    float xv[kPerLane];
    if constexpr (kTail) {
      load_tail<CT>(x + static_cast<int64_t>(r) * k, k0, k, lane, xv);
    } else {
      load_step<CT, kVec>(x + static_cast<int64_t>(r) * k, k0, lane, xv);
    }
#pragma unroll
    for (int c = 0; c < kColsPerWarp; ++c) {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) acc[r][c] = fmaf(xv[j], wv[c][j], acc[r][c]);
    }
  }
}

template <class CT, bool kVec>
__global__ void __launch_bounds__(kThreads, 2)
    grouped_gemm_device_kernel(GroupedGemmDeviceParams p) {
  using S = typename CT::Storage;
  const int e = blockIdx.y;
  // Clamped to [0, rows) so that invalid offsets cannot write out of bounds; valid offsets
  // (0 = offs[0] <= offs[1] <= ... <= offs[E] <= rows) pass through unchanged.
  const int64_t begin = max(static_cast<int64_t>(p.expert_offsets[e]), int64_t{0});
  const int64_t end = min(static_cast<int64_t>(p.expert_offsets[e + 1]), p.rows);
  if (end <= begin) return;  // no rows: no weight reads, no writes

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + warp * kColsPerWarp;
  if (col0 >= p.n) return;  // past the last column (partial last tile); no barriers below
  const int nc = static_cast<int>(min(static_cast<int64_t>(kColsPerWarp), p.n - col0));
  const int k = static_cast<int>(p.k);
  const int k_main = k - k % kStep;  // full steps; the rest (< kStep) is the checked tail

  const S* __restrict__ w = static_cast<const S*>(p.w) + (static_cast<int64_t>(e) * p.n + col0) * k;
  S* __restrict__ out = static_cast<S*>(p.out);

  for (int64_t r0 = begin; r0 < end; r0 += kRowsPerChunk) {
    const int nr = static_cast<int>(min(static_cast<int64_t>(kRowsPerChunk), end - r0));
    const S* __restrict__ x = static_cast<const S*>(p.x) + r0 * k;
    float acc[kRowsPerChunk][kColsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerChunk; ++r) {
#pragma unroll
      for (int c = 0; c < kColsPerWarp; ++c) acc[r][c] = 0.f;
    }
    for (int k0 = 0; k0 < k_main; k0 += kStep)
      accumulate_step<CT, kVec, false>(x, w, k, k0, nr, nc, lane, acc);
    if (k_main < k) accumulate_step<CT, kVec, true>(x, w, k, k_main, nr, nc, lane, acc);

      // One warp_sum per (row, column); lane r * kColsPerWarp + c stores that output.
#pragma unroll
    for (int r = 0; r < kRowsPerChunk; ++r) {
      if (r >= nr) break;
#pragma unroll
      for (int c = 0; c < kColsPerWarp; ++c) {
        if (c >= nc) break;
        const float s = warp_sum(acc[r][c]);
        if (lane == r * kColsPerWarp + c) out[(r0 + r) * p.n + col0 + c] = CT::store(s);
      }
    }
  }
}

template <class CT>
cudaError_t launch_typed(const GroupedGemmDeviceParams& p, dim3 grid, bool vec,
                         cudaStream_t stream) {
  if (vec) {
    grouped_gemm_device_kernel<CT, true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    grouped_gemm_device_kernel<CT, false><<<grid, kThreads, 0, stream>>>(p);
  }
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace

cudaError_t launch_grouped_gemm_device(const GroupedGemmDeviceParams& p, cudaStream_t stream) {
  if (p.experts <= 0 || p.n <= 0 || p.rows <= 0) return cudaSuccess;
  if (p.k < 0 || p.k >= kMaxK || p.experts > 65535 || p.expert_offsets == nullptr)
    return cudaErrorInvalidValue;
  const int64_t tiles = (p.n + kColsPerBlock - 1) / kColsPerBlock;
  if (tiles > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.experts));
  // 16-byte loads need every row of x and w (and so every 8-element group) 16-byte aligned.
  const size_t row_bytes = static_cast<size_t>(p.k) * elem_size(p.type);
  const bool vec = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(p.w) % 16 == 0;
  switch (p.type) {
    case ElemType::kF32: return launch_typed<F32>(p, grid, vec, stream);
    case ElemType::kBF16: return launch_typed<BF16>(p, grid, vec, stream);
    case ElemType::kF16: return launch_typed<F16>(p, grid, vec, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace sw::kernels::cuda

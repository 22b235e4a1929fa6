// moe_assign in a single thread block, reproducing the CPU order exactly: priority scores
// computed per token in choice order, a stable radix sort of the tokens by descending score,
// then for j = 0, 1, ... one stable counting pass over the ordered tokens gives each choice
// its slot in its expert (top-1 choices before any top-2, GShard). Cost grows with T * k /
// 256 barrier rounds: fine for decode and prefill batches up to tens of thousands of
// assignments; a multi-block version would be the next step past that.
#include <algorithm>

#include "kernels/cuda/block_sort.cuh"
#include "kernels/cuda/moe.cuh"

namespace sw::kernels::cuda {
namespace {

int bins_for(int num_experts) { return std::max(256, num_experts); }

size_t smem_bytes(int num_experts) {
  return sizeof(uint32_t) * (counting_pass_smem_words(bins_for(num_experts)) + num_experts + 1);
}

__global__ void __launch_bounds__(kSortThreads) moe_assign_kernel(MoeAssignParams p) {
  extern __shared__ uint32_t sm[];
  const int t_count = static_cast<int>(p.tokens), k = p.k, e_count = p.num_experts;
  const int bins = e_count > 256 ? e_count : 256;
  uint32_t* counts = sm;
  uint32_t* warp_hist = sm + bins;
  int32_t* offs = reinterpret_cast<int32_t*>(sm + counting_pass_smem_words(bins));
  uint32_t* keys = reinterpret_cast<uint32_t*>(p.scratch);
  uint32_t* keys_tmp = keys + t_count;
  int32_t* order = p.scratch + 2 * static_cast<int64_t>(t_count);
  int32_t* order_tmp = order + t_count;

  for (int i = threadIdx.x; i < t_count; i += kSortThreads) {
    order[i] = i;
    if (p.policy != 0) {
      // Same float32 operations in the same order as the CPU reference (ties must match).
      float s = p.policy == 1 ? -INFINITY : 0.f;
      for (int j = 0; j < k; ++j) {
        const float w = p.priority_weights[static_cast<int64_t>(i) * k + j];
        s = p.policy == 1 ? (s < w ? w : s) : s + w;
      }
      keys[i] = descending_key(s);
    }
  }
  for (int64_t i = threadIdx.x; i < static_cast<int64_t>(t_count) * k; i += kSortThreads) {
    const int e = p.topk_ids[i];
    if (e < 0 || e >= e_count) p.dest_rows[i] = -1;
  }
  __syncthreads();
  if (p.policy != 0) block_radix_sort_pairs(keys, order, keys_tmp, order_tmp, t_count, sm);

  for (int b = threadIdx.x; b < bins; b += kSortThreads) counts[b] = 0;
  __syncthreads();
  for (int j = 0; j < k; ++j) {
    stable_counting_pass(
        t_count, e_count, counts, warp_hist,
        [&](int i) {
          const int e = p.topk_ids[static_cast<int64_t>(order[i]) * k + j];
          return e >= 0 && e < e_count ? e : -1;
        },
        [&](int i, int slot) {
          p.dest_rows[static_cast<int64_t>(order[i]) * k + j] =
              p.capacity >= 0 && slot >= p.capacity ? -1 : slot;
        });
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    offs[0] = 0;
    p.expert_offsets[0] = 0;
    for (int e = 0; e < e_count; ++e) {
      const int64_t c = counts[e];
      const int64_t kept = p.capacity >= 0 && c > p.capacity ? p.capacity : c;
      offs[e + 1] = offs[e] + static_cast<int32_t>(kept);
      p.expert_offsets[e + 1] = offs[e + 1];
    }
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < static_cast<int64_t>(t_count) * k; i += kSortThreads) {
    const int32_t d = p.dest_rows[i];
    if (d >= 0) p.dest_rows[i] = d + offs[p.topk_ids[i]];
  }
}

}  // namespace

int64_t moe_assign_scratch_ints(int64_t tokens) { return 4 * std::max<int64_t>(tokens, 1); }

cudaError_t launch_moe_assign(const MoeAssignParams& p, cudaStream_t stream) {
  if (p.num_experts < 0 || p.num_experts > kMoeAssignMaxExperts || p.k < 0 || !p.scratch)
    return cudaErrorInvalidValue;
  const size_t smem = smem_bytes(p.num_experts);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        moe_assign_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  moe_assign_kernel<<<1, kSortThreads, smem, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

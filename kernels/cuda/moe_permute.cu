// MoE permute: one block per token copies its row to each kept destination row (a raw copy
// when the element types match, so values are bit-exact).
#include "kernels/cuda/moe.cuh"

namespace sw::kernels::cuda {
namespace {

__global__ void moe_permute_kernel(MoePermuteParams p) {
  const int64_t t = blockIdx.x;
  for (int64_t j = 0; j < p.k; ++j) {
    const int64_t d = p.dest_rows[t * p.k + j];
    if (d < 0 || d >= p.out_rows) continue;  // dropped (or out of range: guarded)
    for (int64_t c = threadIdx.x; c < p.hidden; c += blockDim.x) {
      const int64_t src = t * p.hidden + c, dst = d * p.hidden + c;
      if (p.x_type == p.out_type) {
        if (p.x_type == ElemType::kF32) {
          static_cast<float*>(p.out)[dst] = static_cast<const float*>(p.x)[src];
        } else {
          static_cast<uint16_t*>(p.out)[dst] = static_cast<const uint16_t*>(p.x)[src];
        }
      } else {
        store_elem(p.out, p.out_type, dst, load_elem(p.x, p.x_type, src));
      }
    }
  }
}

}  // namespace

cudaError_t launch_moe_permute(const MoePermuteParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.hidden <= 0 || p.k <= 0) return cudaSuccess;
  moe_permute_kernel<<<static_cast<unsigned>(p.tokens), 128, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

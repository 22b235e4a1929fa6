// MoE unpermute: one block per token sums its kept expert outputs times their routing
// weights in float32 (zeros when every choice was dropped), rounding once on store.
#include "kernels/cuda/moe.cuh"

namespace sw::kernels::cuda {
namespace {

__global__ void moe_unpermute_kernel(MoeUnpermuteParams p) {
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < p.hidden; c += blockDim.x) {
    float acc = 0.f;
    for (int64_t j = 0; j < p.k; ++j) {
      const int64_t d = p.dest_rows[t * p.k + j];
      if (d < 0 || d >= p.y_rows) continue;
      acc += p.weights[t * p.k + j] * load_elem(p.y, p.y_type, d * p.hidden + c);
    }
    store_elem(p.out, p.out_type, t * p.hidden + c, acc);
  }
}

}  // namespace

cudaError_t launch_moe_unpermute(const MoeUnpermuteParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.hidden <= 0) return cudaSuccess;
  moe_unpermute_kernel<<<static_cast<unsigned>(p.tokens), 128, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

// RoPE: one block per token; each thread rotates (head, i) pairs of q then k. cosf/sinf of
// the float32 angle, as the CPU reference computes it.
#include "kernels/cuda/rope.cuh"

namespace sw::kernels::cuda {
namespace {

__device__ __forceinline__ void rotate(void* t, ElemType type, int64_t base, int64_t a, int64_t b,
                                       float c, float s) {
  const float x0 = load_elem(t, type, base + a), x1 = load_elem(t, type, base + b);
  store_elem(t, type, base + a, x0 * c - x1 * s);
  store_elem(t, type, base + b, x1 * c + x0 * s);
}

__global__ void rope_kernel(RopeParams p) {
  const int64_t t = blockIdx.x;
  const float pos = static_cast<float>(p.positions[t]);
  const int64_t pairs = (p.q_heads + p.k_heads) * p.half;
  for (int64_t w = threadIdx.x; w < pairs; w += blockDim.x) {
    const int64_t head = w / p.half, i = w - head * p.half;
    const float angle = pos * p.inv_freq[i];
    const float c = cosf(angle), s = sinf(angle);
    const int64_t a = p.neox ? i : 2 * i, b = p.neox ? i + p.half : 2 * i + 1;
    if (head < p.q_heads) {
      rotate(p.q, p.q_type, (t * p.q_heads + head) * p.head_dim, a, b, c, s);
    } else {
      rotate(p.k, p.k_type, (t * p.k_heads + (head - p.q_heads)) * p.head_dim, a, b, c, s);
    }
  }
}

}  // namespace

cudaError_t launch_rope(const RopeParams& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.half <= 0) return cudaSuccess;
  rope_kernel<<<static_cast<unsigned>(p.tokens), 128, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

// out = silu(gate) * up with x = [gate | up] per row (vLLM layout); the CPU formula
// g / (1 + expf(-g)) * u in float32. Grid-stride over rows * inter outputs.
#include "kernels/cuda/elementwise.cuh"

namespace sw::kernels::cuda {
namespace {

__global__ void silu_and_mul_kernel(SiluAndMulParams p) {
  const int64_t n = p.rows * p.inter;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t r = i / p.inter, c = i - r * p.inter;
    const float g = load_elem(p.x, p.type, r * 2 * p.inter + c);
    const float u = load_elem(p.x, p.type, r * 2 * p.inter + p.inter + c);
    store_elem(p.out, p.type, i, g / (1.0f + expf(-g)) * u);
  }
}

}  // namespace

cudaError_t launch_silu_and_mul(const SiluAndMulParams& p, cudaStream_t stream) {
  const int64_t n = p.rows * p.inter;
  if (n <= 0) return cudaSuccess;
  const int64_t blocks = (n + 255) / 256;
  silu_and_mul_kernel<<<static_cast<unsigned>(blocks < 16384 ? blocks : 16384), 256, 0, stream>>>(
      p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

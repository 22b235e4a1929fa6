// RMSNorm: one block per row, two passes over the row (the second hits L1/L2). Sum of squares
// in float32 by a block reduction; the residual is rounded to its dtype before the norm reads
// it back, exactly as the CPU reference does.
#include "kernels/cuda/rms_norm.cuh"

namespace sw::kernels::cuda {
namespace {

__global__ void rms_norm_kernel(RmsNormParams p) {
  __shared__ float scratch[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * p.hidden;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) {
    float v = load_elem(p.x, p.x_type, base + i);
    if (p.residual) {
      store_elem(p.residual, p.residual_type, base + i,
                 load_elem(p.residual, p.residual_type, base + i) + v);
      v = load_elem(p.residual, p.residual_type, base + i);  // this thread's own store
    }
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(p.hidden) + p.eps);
  for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) {
    const float v = p.residual ? load_elem(p.residual, p.residual_type, base + i)
                               : load_elem(p.x, p.x_type, base + i);
    store_elem(p.out, p.out_type, base + i, v * inv * load_elem(p.weight, p.weight_type, i));
  }
}

}  // namespace

cudaError_t launch_rms_norm(const RmsNormParams& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.hidden <= 0) return cudaSuccess;
  const int threads = p.hidden >= 1024 ? 256 : (p.hidden >= 256 ? 128 : 64);
  rms_norm_kernel<<<static_cast<unsigned>(p.rows), threads, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

// GEMM bias epilogue kernel: out[m, n] += bias[n], grid-stride over the output.
#include "kernels/cuda/gemm_epilogue.cuh"

namespace sw::kernels::cuda {
namespace {

__global__ void bias_add_kernel(BiasAddParams p) {
  const int64_t n = p.rows * p.cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    store_elem(p.out, p.out_type, i,
               load_elem(p.out, p.out_type, i) + load_elem(p.bias, p.bias_type, i % p.cols));
}

}  // namespace

cudaError_t launch_bias_add(const BiasAddParams& p, cudaStream_t stream) {
  const int64_t n = p.rows * p.cols;
  if (n <= 0) return cudaSuccess;
  const int64_t blocks = (n + 255) / 256;
  bias_add_kernel<<<static_cast<unsigned>(blocks < 8192 ? blocks : 8192), 256, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

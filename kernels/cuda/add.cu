// x += y element-wise (float32 math, one rounding on store). Grid-stride over n elements.
#include "kernels/cuda/elementwise.cuh"

namespace sw::kernels::cuda {
namespace {

__global__ void add_kernel(AddParams p) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n;
       i += stride)
    store_elem(p.x, p.type, i, load_elem(p.x, p.type, i) + load_elem(p.y, p.type, i));
}

}  // namespace

cudaError_t launch_add(const AddParams& p, cudaStream_t stream) {
  if (p.n <= 0) return cudaSuccess;
  const int64_t blocks = (p.n + 255) / 256;
  add_kernel<<<static_cast<unsigned>(blocks < 8192 ? blocks : 8192), 256, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

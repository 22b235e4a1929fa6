// Paged KV-cache write: one block per new token copies its K and V rows (Hk * D elements)
// to slot_mapping[t] of the caches. Slots outside [0, num_slots) are skipped on the device
// (the host cannot check device-resident slots without a sync).
#include "kernels/cuda/elementwise.cuh"

namespace sw::kernels::cuda {
namespace {

__global__ void kv_cache_write_kernel(KvCacheWriteParams p) {
  const int64_t t = blockIdx.x;
  const int64_t slot = p.slots[t];
  if (slot < 0 || slot >= p.num_slots) return;
  for (int64_t c = threadIdx.x; c < p.row; c += blockDim.x) {
    store_elem(p.k_cache, p.cache_type, slot * p.row + c, load_elem(p.k, p.in_type, t * p.row + c));
    store_elem(p.v_cache, p.cache_type, slot * p.row + c, load_elem(p.v, p.in_type, t * p.row + c));
  }
}

}  // namespace

cudaError_t launch_kv_cache_write(const KvCacheWriteParams& p, cudaStream_t stream) {
  if (p.num_tokens <= 0 || p.row <= 0) return cudaSuccess;
  kv_cache_write_kernel<<<static_cast<unsigned>(p.num_tokens), 256, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

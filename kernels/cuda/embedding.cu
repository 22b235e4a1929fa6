// Vocab-parallel embedding lookup: one block per token copies its table row (or zeros when
// the id belongs to another shard).
#include "kernels/cuda/elementwise.cuh"

namespace sw::kernels::cuda {
namespace {

__global__ void embedding_kernel(EmbeddingParams p) {
  const int64_t t = blockIdx.x;
  const int64_t local = static_cast<int64_t>(p.ids[t]) - p.vocab_offset;
  const bool present = local >= 0 && local < p.vocab;
  for (int64_t c = threadIdx.x; c < p.hidden; c += blockDim.x) {
    const float v = present ? load_elem(p.table, p.table_type, local * p.hidden + c) : 0.f;
    store_elem(p.out, p.out_type, t * p.hidden + c, v);
  }
}

}  // namespace

cudaError_t launch_embedding(const EmbeddingParams& p, cudaStream_t stream) {
  if (p.num_tokens <= 0 || p.hidden <= 0) return cudaSuccess;
  embedding_kernel<<<static_cast<unsigned>(p.num_tokens), 256, 0, stream>>>(p);
  return SW_CUDA_LAUNCH_RESULT();
}

}  // namespace sw::kernels::cuda

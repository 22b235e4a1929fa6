// Launcher for token sampling: greedy argmax, or kernels/cpu/cpu_sample.cpp's documented
// temperature / top-k / top-p / inverse-CDF procedure with one Philox draw per row.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"

namespace sw::kernels::cuda {

// kernels::SamplingRow as the device reads it (the host copies the fields over).
struct SampleRowParams {
  float temperature = 0.f;
  int32_t top_k = 0;
  float top_p = 1.f;
  uint32_t pad = 0;
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// logits [rows, vocab] (type) -> out int32 [rows]. row_params: device [rows]. scratch:
// sample_scratch_words(rows, vocab) uint32 words, needed when any row has temperature > 0
// (null otherwise). One block per row.
struct SampleParams {
  const void* logits = nullptr;
  ElemType type = ElemType::kF32;
  int64_t rows = 0, vocab = 0;
  const SampleRowParams* row_params = nullptr;
  int32_t* out = nullptr;
  uint32_t* scratch = nullptr;
};
int64_t sample_scratch_words(int64_t rows, int64_t vocab);
cudaError_t launch_sample(const SampleParams& p, cudaStream_t stream);

}  // namespace sw::kernels::cuda

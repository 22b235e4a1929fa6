// What CUDA-aware host code (benchmarks, a future graph-capturing runner) may ask of a
// CudaBackend beyond kernels::Backend: its stream, to time with events on it, and its
// allocator's counters. Host-only; returns null/zeros for any other backend.
#pragma once

#include <cuda_runtime.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_allocator.h"

namespace sw::kernels {

// The stream every op of `backend` is queued on, or nullptr if it is not the CUDA backend.
cudaStream_t cuda_stream_of(Backend& backend);
// Allocation counters of the CUDA backend (zeros for other backends).
cuda::AllocatorStats cuda_allocator_stats(Backend& backend);

}  // namespace sw::kernels

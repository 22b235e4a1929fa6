// CachingDeviceAllocator: the CUDA backend's device memory. Blocks come from cudaMalloc once
// and return to a size-class cache through the Tensor's shared_ptr deleter, so steady-state
// steps (which allocate the same temporaries every step) never call cudaMalloc. Reuse is
// stream-ordered: the backend has one stream, so a block freed on the host while kernels that
// use it are still queued is only handed to work queued after them. While a CUDA graph is
// being captured, freed blocks are parked for the graph instead (its replays still use them).
// Host code (g++); extend with per-stream pools if the backend ever gets a second stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"

namespace sw::kernels::cuda {

struct AllocatorStats {
  int64_t device_mallocs = 0;  // cudaMalloc calls so far (cache misses)
  int64_t cache_hits = 0;      // allocations served from the cache
  int64_t reserved_bytes = 0;  // held from the driver (in use + cached + parked for graphs)
  int64_t in_use_bytes = 0;    // handed out and not yet returned
};

class CachingDeviceAllocator {
 public:
  CachingDeviceAllocator();
  ~CachingDeviceAllocator();
  CachingDeviceAllocator(const CachingDeviceAllocator&) = delete;
  CachingDeviceAllocator& operator=(const CachingDeviceAllocator&) = delete;

  // A block of at least `bytes` (256-byte aligned); freed into the cache when the last
  // shared_ptr copy dies. bytes == 0 gives an empty pointer. Out of device memory, the cached
  // blocks go back to the driver and cudaMalloc is tried once more, except while a graph is
  // being captured (cudaFree would invalidate the capture): then it fails at once.
  Result<std::shared_ptr<void>> allocate(size_t bytes);
  // Returns every cached (unused) block to the driver. Blocks in use are untouched.
  Status release_cached();
  AllocatorStats stats() const;

  // Graph capture: between begin and end, freed blocks are parked instead of cached; end
  // hands them to the caller (the graph), and return_parked() gives them back to the cache
  // when the graph is destroyed.
  void begin_capture();
  std::vector<std::pair<void*, size_t>> end_capture();
  void return_parked(const std::vector<std::pair<void*, size_t>>& blocks);

  // Size class of a request: 512-byte steps up to 4 KiB, four classes per power of two up
  // to 2 MiB, then 2 MiB multiples.
  static size_t round_size(size_t bytes);

 private:
  struct Pool;
  std::shared_ptr<Pool> pool_;
};

}  // namespace sw::kernels::cuda

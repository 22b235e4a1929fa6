// CachingDeviceAllocator (see cuda_allocator.h): a multimap of free blocks by size, guarded
// by one mutex; the Pool outlives the allocator while any block is still handed out.
#include "kernels/cuda/cuda_allocator.h"

#include <cuda_runtime.h>

namespace sw::kernels::cuda {

struct CachingDeviceAllocator::Pool {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;
  std::vector<std::pair<void*, size_t>> parked;  // freed while capturing a graph
  bool capturing = false;
  bool alive = true;  // false once the allocator is gone: deleters cudaFree directly
  AllocatorStats stats;

  void give_back(void* p, size_t size) {
    std::lock_guard<std::mutex> lock(mu);
    stats.in_use_bytes -= static_cast<int64_t>(size);
    if (!alive) {
      (void)cudaFree(p);
      stats.reserved_bytes -= static_cast<int64_t>(size);
      return;
    }
    if (capturing) {
      parked.emplace_back(p, size);
    } else {
      free_blocks.emplace(size, p);
    }
  }

  // Frees every cached block; caller holds mu.
  cudaError_t release_locked() {
    cudaError_t first = cudaSuccess;
    for (auto& [size, p] : free_blocks) {
      const cudaError_t err = cudaFree(p);
      if (err != cudaSuccess && first == cudaSuccess) first = err;
      stats.reserved_bytes -= static_cast<int64_t>(size);
    }
    free_blocks.clear();
    return first;
  }
};

CachingDeviceAllocator::CachingDeviceAllocator() : pool_(std::make_shared<Pool>()) {}

CachingDeviceAllocator::~CachingDeviceAllocator() {
  std::lock_guard<std::mutex> lock(pool_->mu);
  (void)pool_->release_locked();
  for (auto& [p, size] : pool_->parked) (void)cudaFree(p);
  pool_->parked.clear();
  pool_->alive = false;
}

size_t CachingDeviceAllocator::round_size(size_t bytes) {
  constexpr size_t kSmall = 4096, kLarge = size_t{2} << 20;
  if (bytes <= kSmall) return (bytes + 511) / 512 * 512;
  if (bytes >= kLarge) return (bytes + kLarge - 1) / kLarge * kLarge;
  size_t pow2 = kSmall;
  while (pow2 * 2 <= bytes) pow2 *= 2;
  const size_t step = pow2 / 4;
  return (bytes + step - 1) / step * step;
}

Result<std::shared_ptr<void>> CachingDeviceAllocator::allocate(size_t bytes) {
  if (bytes == 0) return std::shared_ptr<void>();
  const size_t size = round_size(bytes);
  void* p = nullptr;
  size_t got = size;
  {
    std::lock_guard<std::mutex> lock(pool_->mu);
    // Large blocks may be reused up to ~12% (+ 2 MiB) bigger; small classes must match.
    auto it = pool_->free_blocks.lower_bound(size);
    const size_t limit = size >= (size_t{2} << 20) ? size + size / 8 + (size_t{2} << 20) : size;
    if (it != pool_->free_blocks.end() && it->first <= limit) {
      p = it->second;
      got = it->first;
      pool_->free_blocks.erase(it);
      ++pool_->stats.cache_hits;
    } else {
      cudaError_t err = cudaMalloc(&p, size);
      // Out of memory: give the cached blocks back and try once more, but never while a graph
      // is being captured: cudaFree synchronises the device, which invalidates the capture
      // (and the cached blocks may be parked for earlier graphs' replays anyway).
      const bool release_and_retry = err == cudaErrorMemoryAllocation && !pool_->capturing;
      if (release_and_retry) {
        (void)cudaGetLastError();
        (void)pool_->release_locked();  // cudaFree synchronises the device: safe to reuse
        err = cudaMalloc(&p, size);
      }
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return resource_exhausted(
            "CUDA allocator: cudaMalloc of {} bytes failed: {} ({} bytes reserved, {} in use{})",
            size, cudaGetErrorString(err), pool_->stats.reserved_bytes, pool_->stats.in_use_bytes,
            pool_->capturing ? "; cached blocks kept: a CUDA graph is being captured" : "");
      }
      ++pool_->stats.device_mallocs;
      pool_->stats.reserved_bytes += static_cast<int64_t>(size);
    }
    pool_->stats.in_use_bytes += static_cast<int64_t>(got);
  }
  std::shared_ptr<Pool> pool = pool_;
  return std::shared_ptr<void>(p, [pool, got](void* ptr) { pool->give_back(ptr, got); });
}

Status CachingDeviceAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(pool_->mu);
  const cudaError_t err = pool_->release_locked();
  if (err != cudaSuccess)
    return internal_error("{}:{}: cudaFree failed: {}", __FILE__, __LINE__,
                          cudaGetErrorString(err));
  return Status::ok_status();
}

AllocatorStats CachingDeviceAllocator::stats() const {
  std::lock_guard<std::mutex> lock(pool_->mu);
  return pool_->stats;
}

void CachingDeviceAllocator::begin_capture() {
  std::lock_guard<std::mutex> lock(pool_->mu);
  pool_->capturing = true;
}

std::vector<std::pair<void*, size_t>> CachingDeviceAllocator::end_capture() {
  std::lock_guard<std::mutex> lock(pool_->mu);
  pool_->capturing = false;
  std::vector<std::pair<void*, size_t>> out;
  out.swap(pool_->parked);
  return out;
}

void CachingDeviceAllocator::return_parked(const std::vector<std::pair<void*, size_t>>& blocks) {
  std::lock_guard<std::mutex> lock(pool_->mu);
  for (const auto& [p, size] : blocks) pool_->free_blocks.emplace(size, p);
}

}  // namespace sw::kernels::cuda

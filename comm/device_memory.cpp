// CUDA runtime calls for staging; compiled as plain C++ against cudart when CUDA is on.
#include "comm/device_memory.h"

#include <cstdlib>

#if SHARDWISE_COMM_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace sw::comm {

#if SHARDWISE_COMM_HAVE_CUDA
bool cuda_compiled() { return true; }

bool is_device_pointer(const void* p) {
  if (p == nullptr) return false;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error of an unregistered host pointer
    return false;
  }
  return attr.type == cudaMemoryTypeDevice;
}

std::shared_ptr<void> alloc_pinned(size_t bytes) {
  void* p = nullptr;
  if (bytes > 0 && cudaMallocHost(&p, bytes) == cudaSuccess)
    return std::shared_ptr<void>(p, [](void* q) { cudaFreeHost(q); });
  (void)cudaGetLastError();
  return std::shared_ptr<void>(std::malloc(bytes ? bytes : 1), std::free);
}

Status copy_device_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status();
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess)
    return internal_error("staging copy device->host of {} bytes: {}", bytes,
                          cudaGetErrorString(e));
  return Status();
}

Status copy_host_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status();
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess)
    return internal_error("staging copy host->device of {} bytes: {}", bytes,
                          cudaGetErrorString(e));
  return Status();
}

std::shared_ptr<void> alloc_device(size_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
}

int cuda_device_count() {
  int n = 0;  // left untouched on error 35 (no driver): see MACHINE-NOTES.md
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}
#else
bool cuda_compiled() { return false; }
bool is_device_pointer(const void*) { return false; }
std::shared_ptr<void> alloc_pinned(size_t bytes) {
  return std::shared_ptr<void>(std::malloc(bytes ? bytes : 1), std::free);
}
Status copy_device_to_host(void*, const void*, size_t) {
  return unimplemented("device staging: built without CUDA");
}
Status copy_host_to_device(void*, const void*, size_t) {
  return unimplemented("device staging: built without CUDA");
}
std::shared_ptr<void> alloc_device(size_t) { return nullptr; }
int cuda_device_count() { return 0; }
#endif

}  // namespace sw::comm

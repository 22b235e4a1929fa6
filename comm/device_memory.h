// Host/device memory helpers for transports that stage device buffers through pinned host
// memory (MpiComm when ranks share a GPU). Without CUDA every pointer is a host pointer.
#pragma once

#include <cstddef>
#include <memory>

#include "common/status.h"

namespace sw::comm {

bool cuda_compiled();
// True for memory the CUDA runtime reports as device memory; false without CUDA or a GPU.
bool is_device_pointer(const void* p);
// Pinned (page-locked) host buffer; plain host memory when CUDA is absent.
std::shared_ptr<void> alloc_pinned(size_t bytes);
Status copy_device_to_host(void* dst, const void* src, size_t bytes);
Status copy_host_to_device(void* dst, const void* src, size_t bytes);
// Device allocation (null without CUDA); freed when the last owner lets go.
std::shared_ptr<void> alloc_device(size_t bytes);
// Number of CUDA devices this process sees (0 without CUDA, driver or GPU).
int cuda_device_count();

}  // namespace sw::comm

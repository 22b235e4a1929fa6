// CUDA device discovery (cuda_device_count, declared in kernels/backend.h). Deliberately free
// of project headers: common/status.h pulls in fmt, which nvcc cannot compile in C++20 mode
// (fmt 9's constexpr paths); the backend and its factory live in cuda_backend.cpp.

#include <cuda_runtime.h>

namespace sw::kernels {

// Declared in kernels/backend.h.
int cuda_device_count() {
  int count = 0;
  // Without a GPU or driver this returns an error (e.g. 35, insufficient driver): no devices.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the error so later CUDA calls do not report it
    return 0;
  }
  return count;
}

}  // namespace sw::kernels

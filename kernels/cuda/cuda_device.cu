// CUDA device discovery and the CUDA backend factory. The backend's ops are a later task:
// until then make_cuda_backend reports kUnimplemented and tests skip the CUDA cases.
#include <cuda_runtime.h>

#include "kernels/backend.h"

namespace sw::kernels {

int cuda_device_count() {
  int count = 0;
  // Without a GPU or driver this returns an error (e.g. 35, insufficient driver): no devices.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error so later CUDA calls are not confused
    return 0;
  }
  return count;
}

Result<std::unique_ptr<Backend>> make_cuda_backend(int device_ordinal) {
  const int count = cuda_device_count();
  if (count == 0) return unavailable("CUDA backend: no CUDA device visible");
  if (device_ordinal < 0 || device_ordinal >= count)
    return invalid_argument("CUDA backend: device {} out of range ({} visible)", device_ordinal,
                            count);
  return unimplemented("CUDA backend ops are not implemented yet");
}

}  // namespace sw::kernels

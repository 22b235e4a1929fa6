// CUDA factories for builds without CUDA (SHARDWISE_HAVE_CUDA off): no devices, and a clear
// error from make_cuda_backend. CUDA builds compile kernels/cuda/ instead of this file.
#include "kernels/backend.h"

namespace sw::kernels {

Result<std::unique_ptr<Backend>> make_cuda_backend(int device_ordinal) {
  return unavailable("CUDA backend for device {}: Shardwise was built without CUDA",
                     device_ordinal);
}

int cuda_device_count() { return 0; }

}  // namespace sw::kernels

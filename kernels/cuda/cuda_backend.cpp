// The CUDA backend factory (host code, compiled by the C++ compiler). Until the CUDA ops
// exist it reports kUnimplemented on a machine with a GPU, so tests skip the CUDA cases;
// the real backend will be constructed here.
#include "kernels/backend.h"

namespace sw::kernels {

Result<std::unique_ptr<Backend>> make_cuda_backend(int device_ordinal) {
  const int count = cuda_device_count();
  if (count == 0) return unavailable("CUDA backend: no CUDA device visible");
  if (device_ordinal < 0 || device_ordinal >= count)
    return invalid_argument("CUDA backend: device {} out of range ({} visible)", device_ordinal,
                            count);
  return unimplemented("CUDA backend ops are not implemented yet");
}

}  // namespace sw::kernels

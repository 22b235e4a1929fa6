// NumPy .npy files (format 1.0, little-endian float32/int32, C order): written by
// --dump-logits, read back by tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"

namespace sw {

Status write_npy(const std::string& path, const float* data, const Shape& shape);
Result<Tensor> read_npy(const std::string& path);  // float32 ('<f4') only

}  // namespace sw

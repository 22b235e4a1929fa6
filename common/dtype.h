// Element types, their names and sizes. The bit-exact conversions between them live in
// common/dtype_convert.h (fmt-free, shared with CUDA kernels) and are re-exported here.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/dtype_convert.h"  // bf16/f16 <-> float, SW_HOST_DEVICE
#include "common/status.h"

namespace sw {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64, kU8 };

size_t dtype_size(DType dtype);
// Canonical long name: "float32", "float16", "bfloat16", "int32", "int64", "uint8".
const char* dtype_name(DType dtype);
// Accepts long names ("bfloat16"), short ones ("bf16", "fp32") and safetensors tags ("BF16").
Result<DType> parse_dtype(std::string_view name);
inline bool is_float(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

}  // namespace sw

// TensorSlice: which part of a named weight a rank wants (row range, column range, a range
// of experts, or any per-dimension box). Weight sources read only that part.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"

namespace sw::model {

struct DimRange {
  int64_t begin = 0;
  int64_t end = 0;  // exclusive
};

struct TensorSlice {
  // One range per leading dimension; dimensions past dims.size() are taken whole.
  std::vector<DimRange> dims;

  static TensorSlice whole() { return {}; }
  static TensorSlice rows(int64_t begin, int64_t end) { return {{{begin, end}}}; }
  // Columns of a 2-D tensor (dim 1), all rows. `num_rows` is the full row count.
  static TensorSlice cols(int64_t num_rows, int64_t begin, int64_t end) {
    return {{{0, num_rows}, {begin, end}}};
  }
  bool is_whole(const Shape& full) const;
  // Validates against the full shape and returns the slice's shape; the error names `what`
  // (e.g. the tensor and file) and the offending dimension.
  Result<Shape> apply(const Shape& full, const std::string& what) const;
  std::string to_string() const;
};

// Copies the slice of a contiguous host array (dtype src_dtype, shape full) into dst (host,
// shape = slice shape, any float dtype), converting element types. The slice must be valid.
void copy_slice(const void* src, DType src_dtype, const Shape& full, const TensorSlice& slice,
                Tensor& dst);

}  // namespace sw::model

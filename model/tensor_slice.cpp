// Slice validation and the strided copy with dtype conversion.
#include "model/tensor_slice.h"

#include <fmt/format.h>

#include <cstring>

namespace sw::model {

bool TensorSlice::is_whole(const Shape& full) const {
  for (size_t i = 0; i < dims.size() && i < full.size(); ++i)
    if (dims[i].begin != 0 || dims[i].end != full[i]) return false;
  return dims.size() <= full.size();
}

Result<Shape> TensorSlice::apply(const Shape& full, const std::string& what) const {
  if (dims.size() > full.size())
    return out_of_range("{}: slice {} has {} dimensions but the tensor has shape {}", what,
                        to_string(), dims.size(), shape_str(full));
  Shape out = full;
  for (size_t i = 0; i < dims.size(); ++i) {
    const DimRange& r = dims[i];
    if (r.begin < 0 || r.end < r.begin || r.end > full[i])
      return out_of_range("{}: slice {} is outside dimension {} of shape {}", what, to_string(), i,
                          shape_str(full));
    out[i] = r.end - r.begin;
  }
  return out;
}

std::string TensorSlice::to_string() const {
  if (dims.empty()) return "[:]";
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i)
    s += fmt::format("{}{}:{}", i ? ", " : "", dims[i].begin, dims[i].end);
  return s + "]";
}

void copy_slice(const void* src, DType src_dtype, const Shape& full, const TensorSlice& slice,
                Tensor& dst) {
  const int nd = static_cast<int>(full.size());
  Shape sub = full;
  std::vector<int64_t> begin(nd, 0);
  for (size_t i = 0; i < slice.dims.size(); ++i) {
    begin[i] = slice.dims[i].begin;
    sub[i] = slice.dims[i].end - slice.dims[i].begin;
  }
  SW_CHECK_MSG(shape_numel(sub) == dst.numel(), "copy_slice into {} from slice {} of {}",
               dst.describe(), slice.to_string(), shape_str(full));
  if (dst.numel() == 0) return;
  // Row-major strides of the source; copy runs along the last dimension.
  std::vector<int64_t> stride(nd, 1);
  for (int i = nd - 2; i >= 0; --i) stride[i] = stride[i + 1] * full[i + 1];
  const int64_t run = nd == 0 ? 1 : sub[nd - 1];
  const int64_t num_runs = run == 0 ? 0 : dst.numel() / run;
  std::vector<int64_t> idx(nd > 0 ? nd - 1 : 0, 0);
  const bool same = src_dtype == dst.dtype();
  const size_t esize = dtype_size(src_dtype);
  for (int64_t r = 0; r < num_runs; ++r) {
    int64_t off = nd == 0 ? 0 : begin[nd - 1];
    for (int i = 0; i + 1 < nd; ++i) off += (begin[i] + idx[i]) * stride[i];
    const int64_t dst_off = r * run;
    if (same) {
      std::memcpy(static_cast<char*>(dst.data()) + dst_off * esize,
                  static_cast<const char*>(src) + off * esize, static_cast<size_t>(run) * esize);
    } else {
      for (int64_t j = 0; j < run; ++j)
        store_float(dst.data(), dst.dtype(), dst_off + j, load_float(src, src_dtype, off + j));
    }
    for (int i = nd - 2; i >= 0; --i) {  // odometer over the leading dimensions
      if (++idx[i] < sub[i]) break;
      idx[i] = 0;
    }
  }
}

}  // namespace sw::model

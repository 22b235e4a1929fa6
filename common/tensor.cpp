// Tensor views, host allocation and float conversion.
#include "common/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

namespace sw {

const char* device_name(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

std::string shape_str(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t host_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return std::numeric_limits<int64_t>::max();  // unknown: no limit
  return static_cast<int64_t>(pages) * page;
}

Status check_host_allocation(const Shape& shape, DType dtype, const std::string& what) {
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  // In floating point: the product of the dimensions may not fit in 64 bits.
  double bytes = static_cast<double>(dtype_size(dtype));
  for (int64_t d : shape) bytes *= static_cast<double>(d);
  const int64_t host = host_memory_bytes();
  if (bytes > static_cast<double>(host))
    return resource_exhausted(
        "{}: {} {} needs {:.1f} GiB, more than this machine's {:.1f} GiB of memory", what,
        dtype_name(dtype), shape_str(shape), bytes / kGiB, static_cast<double>(host) / kGiB);
  return Status();
}

Tensor::Tensor(void* data, Shape shape, DType dtype, Device device, std::shared_ptr<void> storage)
    : data_(data),
      shape_(std::move(shape)),
      dtype_(dtype),
      device_(device),
      storage_(std::move(storage)) {}

Tensor Tensor::uninitialized(Shape shape, DType dtype) {
  // A shape whose byte size does not fit (negative dims, or a product past 2^63) would wrap to
  // a small allocation that the tensor then claims to be huge: refuse it as unallocatable.
  size_t bytes = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && bytes > (static_cast<size_t>(INT64_MAX) - 63) / static_cast<size_t>(d)))
      throw std::bad_alloc();
    bytes *= static_cast<size_t>(d);
  }
  size_t alloc = (bytes + 63) / 64 * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) throw std::bad_alloc();
  std::shared_ptr<void> storage(p, [](void* q) { std::free(q); });
  return Tensor(p, std::move(shape), dtype, Device::kCpu, std::move(storage));
}

Tensor Tensor::empty(Shape shape, DType dtype) {
  Tensor t = uninitialized(std::move(shape), dtype);
  std::memset(t.data(), 0, std::max<size_t>(t.nbytes(), 1));
  return t;
}

Tensor Tensor::from_floats(const std::vector<float>& values, Shape shape, DType dtype) {
  Tensor t = empty(std::move(shape), dtype);
  t.copy_from_floats(values);
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& values, Shape shape) {
  Tensor t = empty(std::move(shape), DType::kI32);
  SW_CHECK_MSG(static_cast<int64_t>(values.size()) == t.numel(),
               "from_ints: {} values for shape {}", values.size(), shape_str(t.shape()));
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(int32_t));
  return t;
}

std::string Tensor::describe() const {
  return fmt::format("{}{} {}", dtype_name(dtype_), shape_str(shape_), device_name(device_));
}

Tensor Tensor::reshape(Shape shape) const {
  SW_CHECK_MSG(shape_numel(shape) == numel(), "reshape {} -> {}", shape_str(shape_),
               shape_str(shape));
  return Tensor(data_, std::move(shape), dtype_, device_, storage_);
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  SW_CHECK_MSG(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "rows [{}, {}) of {}",
               begin, end, describe());
  Shape s = shape_;
  s[0] = end - begin;
  int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  char* p = static_cast<char*>(data_) + static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return Tensor(p, std::move(s), dtype_, device_, storage_);
}

float load_float(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32: return static_cast<const float*>(data)[i];
    case DType::kBF16: return bf16_bits_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kF16: return f16_bits_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kI32: return static_cast<float>(static_cast<const int32_t*>(data)[i]);
    case DType::kI64: return static_cast<float>(static_cast<const int64_t*>(data)[i]);
    case DType::kU8: return static_cast<float>(static_cast<const uint8_t*>(data)[i]);
  }
  return 0.f;
}

void store_float(void* data, DType dtype, int64_t i, float v) {
  switch (dtype) {
    case DType::kF32: static_cast<float*>(data)[i] = v; return;
    case DType::kBF16: static_cast<uint16_t*>(data)[i] = float_to_bf16_bits(v); return;
    case DType::kF16: static_cast<uint16_t*>(data)[i] = float_to_f16_bits(v); return;
    case DType::kI32: static_cast<int32_t*>(data)[i] = static_cast<int32_t>(v); return;
    case DType::kI64: static_cast<int64_t*>(data)[i] = static_cast<int64_t>(v); return;
    case DType::kU8: static_cast<uint8_t*>(data)[i] = static_cast<uint8_t>(v); return;
  }
}

std::vector<float> Tensor::to_floats() const {
  SW_CHECK_MSG(is_cpu(), "to_floats on {}", describe());
  std::vector<float> out(static_cast<size_t>(numel()));
  if (dtype_ == DType::kF32) {
    if (!out.empty()) std::memcpy(out.data(), data_, out.size() * 4);
    return out;
  }
  for (int64_t i = 0; i < numel(); ++i) out[i] = load_float(data_, dtype_, i);
  return out;
}

void Tensor::copy_from_floats(const std::vector<float>& values) {
  SW_CHECK_MSG(is_cpu() && static_cast<int64_t>(values.size()) == numel(),
               "copy_from_floats: {} values into {}", values.size(), describe());
  for (int64_t i = 0; i < numel(); ++i) store_float(data_, dtype_, i, values[i]);
}

}  // namespace sw

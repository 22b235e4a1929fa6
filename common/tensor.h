// Tensor: a typed, shaped, contiguous view of memory on one device, with shared ownership
// of the allocation. Backends allocate device tensors; host tensors come from Tensor::empty.
// Views (reshape, rows) share the allocation, so slicing never copies.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace sw {

enum class Device : uint8_t { kCpu, kCuda };
const char* device_name(Device d);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

// Physical memory of this host in bytes: no host tensor can be larger.
int64_t host_memory_bytes();
// OK when a host tensor of `shape` x `dtype` could fit in this host's memory; otherwise
// kResourceExhausted naming `what`, its size and the host's, so that loaders refuse a weight
// before Tensor::empty would throw std::bad_alloc (or the kernel would kill the process).
Status check_host_allocation(const Shape& shape, DType dtype, const std::string& what);

class Tensor {
 public:
  Tensor() = default;
  // Wraps `data`; `storage` keeps the allocation alive (null for memory owned elsewhere).
  Tensor(void* data, Shape shape, DType dtype, Device device, std::shared_ptr<void> storage = {});

  // Host allocation, 64-byte aligned, zero-filled.
  static Tensor empty(Shape shape, DType dtype);
  // Host allocation, 64-byte aligned, contents unspecified (for buffers written before read:
  // skips touching every page of large or per-step buffers).
  static Tensor uninitialized(Shape shape, DType dtype);
  static Tensor from_floats(const std::vector<float>& values, Shape shape,
                            DType dtype = DType::kF32);
  static Tensor from_ints(const std::vector<int32_t>& values, Shape shape);

  bool defined() const { return data_ != nullptr || !shape_.empty(); }
  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim() : i]; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cpu() const { return device_ == Device::kCpu; }
  const std::shared_ptr<void>& storage() const { return storage_; }
  std::string describe() const;  // "bfloat16[7, 64] cpu"

  // Same memory, new shape (numel must match).
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of dimension 0, as a view.
  Tensor rows(int64_t begin, int64_t end) const;

  // Host tensors only: values converted to float32 / written from float32.
  std::vector<float> to_floats() const;
  void copy_from_floats(const std::vector<float>& values);

 private:
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  std::shared_ptr<void> storage_;
};

// Reads element i of a host float tensor of any float dtype as float32.
float load_float(const void* data, DType dtype, int64_t i);
void store_float(void* data, DType dtype, int64_t i, float v);

}  // namespace sw

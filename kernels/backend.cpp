// Op names and the backend factories that do not depend on CUDA being built.
#include "kernels/backend.h"

#include <algorithm>

namespace sw::kernels {

Tensor Backend::alloc(const Shape& shape, DType dtype) {
  if (workspace_) return workspace_->take(*this, shape, dtype);
  ++device_allocations_;
  return allocate(shape, dtype);
}

Tensor Workspace::take(Backend& backend, const Shape& shape, DType dtype) {
  const int64_t bytes = shape_numel(shape) * static_cast<int64_t>(dtype_size(dtype));
  const int64_t begin = (used_ + kAlignment - 1) / kAlignment * kAlignment;
  used_ = begin + bytes;
  high_water_ = std::max(high_water_, used_);
  if (used_ <= capacity_)
    return Tensor(static_cast<char*>(arena_.data()) + base_ + begin, shape, dtype, arena_.device(),
                  arena_.storage());
  ++overflows_;
  ++backend.device_allocations_;
  return backend.allocate(shape, dtype);
}

bool Workspace::reserve(Backend& backend, int64_t bytes) {
  used_ = 0;
  if (bytes <= capacity_) return false;
  // Round up so that a slowly growing step does not reallocate every time.
  constexpr int64_t kGranule = int64_t{1} << 20;
  const int64_t size = (bytes + kGranule - 1) / kGranule * kGranule;
  arena_ = Tensor();  // give the old arena back before taking the new one
  ++backend.device_allocations_;
  arena_ = backend.allocate({size + kAlignment}, DType::kU8);
  const auto addr = reinterpret_cast<uintptr_t>(arena_.data());
  base_ = static_cast<int64_t>((kAlignment - addr % kAlignment) % kAlignment);
  capacity_ = size;
  return true;
}

bool Workspace::reset(Backend& backend) { return reserve(backend, high_water_); }

void Workspace::advance_to(int64_t offset) {
  used_ = std::max(used_, offset);
  high_water_ = std::max(high_water_, used_);
}

const char* op_name(Op op) {
  switch (op) {
    case Op::kGemm: return "gemm";
    case Op::kGroupedGemm: return "grouped_gemm";
    case Op::kRmsNorm: return "rms_norm";
    case Op::kRope: return "rope";
    case Op::kKvCacheWrite: return "kv_cache_write";
    case Op::kAttentionPrefill: return "attention_prefill";
    case Op::kAttentionDecode: return "attention_decode";
    case Op::kSiluAndMul: return "silu_and_mul";
    case Op::kRouterTopk: return "router_topk";
    case Op::kMoeAssign: return "moe_assign";
    case Op::kMoePermute: return "moe_permute";
    case Op::kMoeUnpermute: return "moe_unpermute";
    case Op::kSample: return "sample";
    case Op::kEmbedding: return "embedding";
    case Op::kAdd: return "add";
    case Op::kConvert: return "convert";
  }
  return "unknown";
}

Result<std::unique_ptr<Backend>> make_backend(const std::string& device, const BackendOptions& o) {
  if (device == "cpu") {
    if (o.num_threads < 0 || o.num_threads > BackendOptions::kMaxThreads)
      return invalid_argument("cpu backend: {} threads requested; expected 0 (all cores) to {}",
                              o.num_threads, BackendOptions::kMaxThreads);
    return make_cpu_backend(o.num_threads, o.graphs);
  }
  if (device == "cuda") return make_cuda_backend(o.device_ordinal);
  return invalid_argument("device '{}': expected cpu or cuda", device);
}

}  // namespace sw::kernels

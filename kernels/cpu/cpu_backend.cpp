// The CPU backend: host memory, the shared float32 row helpers, and the
// Backend virtuals forwarding to the op functions in cpu_*.cpp. It is the reference every
// other backend is tested against, so clarity wins over speed (GEMMs still go to OpenBLAS).
#include <cblas.h>
#include <omp.h>

#include <cstring>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_ops.h"

namespace sw::kernels {
namespace cpu {

void load_row(const void* base, DType dtype, int64_t offset, int64_t n, float* dst) {
  switch (dtype) {
    case DType::kF32: std::memcpy(dst, static_cast<const float*>(base) + offset, n * 4); return;
    case DType::kBF16: {
      const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(p[i]);
      return;
    }
    case DType::kF16: {
      const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_bits_to_float(p[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_float(base, dtype, offset + i);
  }
}

void store_row(void* base, DType dtype, int64_t offset, int64_t n, const float* src) {
  switch (dtype) {
    case DType::kF32: std::memcpy(static_cast<float*>(base) + offset, src, n * 4); return;
    case DType::kBF16: {
      uint16_t* p = static_cast<uint16_t*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) p[i] = float_to_bf16_bits(src[i]);
      return;
    }
    case DType::kF16: {
      uint16_t* p = static_cast<uint16_t*>(base) + offset;
      for (int64_t i = 0; i < n; ++i) p[i] = float_to_f16_bits(src[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) store_float(base, dtype, offset + i, src[i]);
  }
}

std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (!v.empty()) load_row(t.data(), t.dtype(), 0, t.numel(), v.data());
  return v;
}

}  // namespace cpu

namespace {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }
  bool supports(Op op, DType dtype) const override {
    (void)op;  // every op is implemented for every float activation dtype
    return is_float(dtype);
  }

  Tensor alloc(const Shape& shape, DType dtype) override {
    return Tensor::uninitialized(shape, dtype);
  }

  Status copy(const Tensor& src, Tensor& dst) override {
    SW_RETURN_IF_ERROR(check_tensor(Device::kCpu, "copy", "src", src, -1));
    SW_RETURN_IF_ERROR(check_tensor(Device::kCpu, "copy", "dst", dst, -1));
    if (src.dtype() != dst.dtype() || src.numel() != dst.numel())
      return invalid_argument("copy: src {} and dst {} need the same dtype and numel",
                              src.describe(), dst.describe());
    if (src.nbytes() > 0 && src.data() != dst.data())
      std::memmove(dst.data(), src.data(), src.nbytes());
    return Status::ok_status();
  }
  Status synchronize() override { return Status::ok_status(); }

  Status gemm(const Tensor& x, const Tensor& w, Tensor& out, const Tensor* bias,
              bool accumulate) override {
    return cpu::gemm(x, w, out, bias, accumulate);
  }
  Status grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& expert_offsets,
                      Tensor& out) override {
    return cpu::grouped_gemm(x, w, expert_offsets, out);
  }
  Status rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                  Tensor* residual) override {
    return cpu::rms_norm(x, weight, eps, out, residual);
  }
  Status rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq,
              RopeLayout layout) override {
    return cpu::rope(q, k, positions, inv_freq, layout);
  }
  Status kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                        Tensor& k_cache, Tensor& v_cache) override {
    return cpu::kv_cache_write(k, v, slot_mapping, k_cache, v_cache);
  }
  Status attention_prefill(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const Tensor& query_start_loc, const Tensor& seq_lens,
                           const Tensor& block_tables, const AttentionParams& params,
                           Tensor& out) override {
    return cpu::attention_prefill(q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                                  params, out);
  }
  Status attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                          const Tensor& seq_lens, const Tensor& block_tables,
                          const AttentionParams& params, Tensor& out) override {
    return cpu::attention_decode(q, k_cache, v_cache, seq_lens, block_tables, params, out);
  }
  Status silu_and_mul(const Tensor& x, Tensor& out) override { return cpu::silu_and_mul(x, out); }
  Status router_topk(const Tensor& logits, int k, bool renormalize, Tensor& topk_ids,
                     Tensor& topk_weights) override {
    return cpu::router_topk(logits, k, renormalize, topk_ids, topk_weights);
  }
  Status moe_assign(const Tensor& topk_ids, const Tensor& topk_weights, int num_experts,
                    int64_t capacity, DropPolicy policy, Tensor& dest_rows,
                    Tensor& expert_offsets) override {
    return cpu::moe_assign(topk_ids, topk_weights, num_experts, capacity, policy, dest_rows,
                           expert_offsets);
  }
  Status moe_permute(const Tensor& x, const Tensor& dest_rows, Tensor& out) override {
    return cpu::moe_permute(x, dest_rows, out);
  }
  Status moe_unpermute(const Tensor& y, const Tensor& dest_rows, const Tensor& weights,
                       Tensor& out) override {
    return cpu::moe_unpermute(y, dest_rows, weights, out);
  }
  Status sample(const Tensor& logits, const std::vector<SamplingRow>& rows, Tensor& out) override {
    return cpu::sample(logits, rows, out);
  }
  Status embedding(const Tensor& ids, const Tensor& table, int64_t vocab_offset,
                   Tensor& out) override {
    return cpu::embedding(ids, table, vocab_offset, out);
  }
  Status add(Tensor& x, const Tensor& y) override { return cpu::add(x, y); }
  Status convert(const Tensor& src, Tensor& dst) override { return cpu::convert(src, dst); }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int num_threads) {
  // Thread counts are process-wide in OpenMP and OpenBLAS; a worker has one backend.
  if (num_threads > 0) {
    omp_set_num_threads(num_threads);
    openblas_set_num_threads(num_threads);
  }
  return std::make_unique<CpuBackend>();
}

}  // namespace sw::kernels

// The CPU backend: host memory, the shared float32 row helpers, and the
// Backend virtuals forwarding to the op functions in cpu_*.cpp. It is the reference every
// other backend is tested against, so clarity wins over speed (GEMMs still go to OpenBLAS).
#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <map>

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
  explicit CpuBackend(bool graphs) : graphs_enabled_(graphs) {}

  Device device() const override { return Device::kCpu; }
  std::string name() const override { return "cpu"; }
  bool supports(Op op, DType dtype) const override {
    (void)op;  // every op is implemented for every float activation dtype
    return is_float(dtype);
  }

  MemoryInfo memory_info() const override {
    const int64_t page = sysconf(_SC_PAGE_SIZE);
    MemoryInfo m;
    m.total_bytes = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * page;
    m.free_bytes = static_cast<int64_t>(sysconf(_SC_AVPHYS_PAGES)) * page;
    m.in_use_bytes = live_bytes_->load();
    return m;
  }

  Status copy(const Tensor& src, Tensor& dst) override {
    SW_RETURN_IF_ERROR(check_tensor(Device::kCpu, "copy", "src", src, -1));
    SW_RETURN_IF_ERROR(check_tensor(Device::kCpu, "copy", "dst", dst, -1));
    if (src.dtype() != dst.dtype() || src.numel() != dst.numel())
      return invalid_argument("copy: src {} and dst {} need the same dtype and numel",
                              src.describe(), dst.describe());
    return run([src, dst]() {
      if (src.nbytes() > 0 && src.data() != dst.data())
        std::memmove(dst.data(), src.data(), src.nbytes());
      return Status::ok_status();
    });
  }
  Status synchronize() override {
    if (capturing_)
      return invalid_argument("synchronize: the backend is capturing a graph (as on CUDA)");
    return Status::ok_status();
  }

  Status gemm(const Tensor& x, const Tensor& w, Tensor& out, const Tensor* bias,
              bool accumulate) override {
    const Tensor b = bias ? *bias : Tensor();
    return run([=, out = out]() mutable {
      return cpu::gemm(x, w, out, b.defined() ? &b : nullptr, accumulate);
    });
  }
  Status grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& expert_offsets,
                      Tensor& out) override {
    return run([=, out = out]() mutable { return cpu::grouped_gemm(x, w, expert_offsets, out); });
  }
  Status rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                  Tensor* residual) override {
    const Tensor r = residual ? *residual : Tensor();
    return run([=, out = out, r = r]() mutable {
      return cpu::rms_norm(x, weight, eps, out, r.defined() ? &r : nullptr);
    });
  }
  Status rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq,
              RopeLayout layout) override {
    return run(
        [=, q = q, k = k]() mutable { return cpu::rope(q, k, positions, inv_freq, layout); });
  }
  Status kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                        Tensor& k_cache, Tensor& v_cache) override {
    return run([=, kc = k_cache, vc = v_cache]() mutable {
      return cpu::kv_cache_write(k, v, slot_mapping, kc, vc);
    });
  }
  Status attention_prefill(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const Tensor& query_start_loc, const Tensor& seq_lens,
                           const Tensor& block_tables, const AttentionParams& params,
                           Tensor& out) override {
    return run([=, out = out]() mutable {
      return cpu::attention_prefill(q, k_cache, v_cache, query_start_loc, seq_lens, block_tables,
                                    params, out);
    });
  }
  Status attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                          const Tensor& seq_lens, const Tensor& block_tables,
                          const AttentionParams& params, Tensor& out) override {
    return run([=, out = out]() mutable {
      return cpu::attention_decode(q, k_cache, v_cache, seq_lens, block_tables, params, out);
    });
  }
  Status silu_and_mul(const Tensor& x, Tensor& out) override {
    return run([=, out = out]() mutable { return cpu::silu_and_mul(x, out); });
  }
  Status router_topk(const Tensor& logits, int k, bool renormalize, Tensor& topk_ids,
                     Tensor& topk_weights, Tensor* topk_probs) override {
    const Tensor p = topk_probs ? *topk_probs : Tensor();
    return run([=, ids = topk_ids, w = topk_weights, p = p]() mutable {
      return cpu::router_topk(logits, k, renormalize, ids, w, p.defined() ? &p : nullptr);
    });
  }
  Status moe_assign(const Tensor& topk_ids, const Tensor& priority_weights, int num_experts,
                    int64_t capacity, DropPolicy policy, Tensor& dest_rows,
                    Tensor& expert_offsets) override {
    return run([=, dest = dest_rows, offs = expert_offsets]() mutable {
      return cpu::moe_assign(topk_ids, priority_weights, num_experts, capacity, policy, dest, offs);
    });
  }
  Status moe_permute(const Tensor& x, const Tensor& dest_rows, Tensor& out) override {
    return run([=, out = out]() mutable { return cpu::moe_permute(x, dest_rows, out); });
  }
  Status moe_unpermute(const Tensor& y, const Tensor& dest_rows, const Tensor& weights,
                       Tensor& out) override {
    return run([=, out = out]() mutable { return cpu::moe_unpermute(y, dest_rows, weights, out); });
  }
  Status sample(const Tensor& logits, const std::vector<SamplingRow>& rows, Tensor& out) override {
    if (capturing_)
      return unimplemented("sample takes per-row host parameters and cannot run inside a graph");
    return cpu::sample(logits, rows, out);
  }
  Status embedding(const Tensor& ids, const Tensor& table, int64_t vocab_offset,
                   Tensor& out) override {
    return run([=, out = out]() mutable { return cpu::embedding(ids, table, vocab_offset, out); });
  }
  Status add(Tensor& x, const Tensor& y) override {
    return run([=, x = x]() mutable { return cpu::add(x, y); });
  }
  Status convert(const Tensor& src, Tensor& dst) override {
    return run([=, dst = dst]() mutable { return cpu::convert(src, dst); });
  }

  // ---- graphs: ops recorded with their tensors (views keep the memory alive) -----------------
  bool supports_graphs() const override { return graphs_enabled_; }
  Status begin_graph_capture() override {
    if (!graphs_enabled_) return Backend::begin_graph_capture();
    if (capturing_) return invalid_argument("begin_graph_capture: already capturing");
    capturing_ = true;
    recording_.clear();
    return Status::ok_status();
  }
  Status end_graph_capture(int64_t key) override {
    if (!capturing_) return invalid_argument("end_graph_capture: no capture in progress");
    capturing_ = false;
    graphs_[key] = std::move(recording_);
    recording_.clear();
    return Status::ok_status();
  }
  Status replay_graph(int64_t key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return not_found("replay_graph: no graph captured under key {}", key);
    for (auto& op : it->second) SW_RETURN_IF_ERROR(op());
    return Status::ok_status();
  }
  bool has_graph(int64_t key) const override { return graphs_.count(key) > 0; }
  void clear_graphs() override { graphs_.clear(); }

 protected:
  Tensor allocate(const Shape& shape, DType dtype) override {
    Tensor t = Tensor::uninitialized(shape, dtype);
    const int64_t bytes = static_cast<int64_t>(t.nbytes());
    *live_bytes_ += bytes;
    std::shared_ptr<void> storage(
        t.data(), [keep = t.storage(), live = live_bytes_, bytes](void*) { *live -= bytes; });
    return Tensor(t.data(), shape, dtype, Device::kCpu, std::move(storage));
  }

 private:
  // Runs `op` now, or records it while capturing.
  template <typename F>
  Status run(F&& op) {
    if (!capturing_) return op();
    recording_.emplace_back(std::forward<F>(op));
    return Status::ok_status();
  }

  const bool graphs_enabled_;
  bool capturing_ = false;
  std::vector<std::function<Status()>> recording_;
  std::map<int64_t, std::vector<std::function<Status()>>> graphs_;
  std::shared_ptr<std::atomic<int64_t>> live_bytes_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int num_threads, bool graphs) {
  // Thread counts are process-wide in OpenMP and OpenBLAS; a worker has one backend.
  if (num_threads > 0) {
    omp_set_num_threads(num_threads);
    openblas_set_num_threads(num_threads);
  }
  return std::make_unique<CpuBackend>(graphs);
}

}  // namespace sw::kernels

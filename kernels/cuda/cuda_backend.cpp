// CudaBackend: kernels::Backend on one CUDA device and one stream. Host code (g++): it
// validates shapes and dtypes (kernels/op_checks.h, shared with the CPU backend, plus the CUDA
// kernels' limits), then calls the fmt-free launchers in kernels/cuda/*.cuh. Memory comes from a
// CachingDeviceAllocator; host->device copies go through a pinned staging ring so the caller
// may reuse its host buffer at once; device->host copies are complete when copy() returns.
// Add an op: a launcher in kernels/cuda/<op>.cuh/.cu, then validate + launch here.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "common/logging.h"
#include "kernels/backend.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_allocator.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_gemm.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/grouped_gemm_device.cuh"
#include "kernels/cuda/moe.cuh"
#include "kernels/cuda/rms_norm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/sample.cuh"
#include "kernels/op_checks.h"

namespace sw::kernels {
namespace {

using cuda::ElemType;

ElemType elem(DType d) {
  switch (d) {
    case DType::kBF16: return ElemType::kBF16;
    case DType::kF16: return ElemType::kF16;
    default: return ElemType::kF32;
  }
}

// ---- argument checks: kernels/op_checks.h, plus the CUDA kernels' own limits ---------------

Status check_int_range(const char* op, const char* what, int64_t v) {
  if (v > INT32_MAX)
    return invalid_argument("{}: {} = {} exceeds the CUDA kernels' int32 range", op, what, v);
  return Status::ok_status();
}

template <typename T>
T* ptr(const Tensor& t, int64_t elem_offset = 0) {
  return reinterpret_cast<T*>(static_cast<char*>(t.data()) +
                              elem_offset * static_cast<int64_t>(dtype_size(t.dtype())));
}

// ---- pinned staging ring for host -> device copies ----------------------------------------

class StagingRing {
 public:
  ~StagingRing() {
    for (auto& p : pending_) (void)cudaEventDestroy(p.event);
    for (cudaEvent_t e : spare_) (void)cudaEventDestroy(e);
    if (buf_) (void)cudaFreeHost(buf_);
  }
  Status init(size_t capacity) {
    SW_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&buf_, capacity, cudaHostAllocDefault));
    capacity_ = capacity;
    return Status::ok_status();
  }
  size_t capacity() const { return capacity_; }

  // Copies n <= capacity() bytes from `src` to device `dst` on `stream`; returns once `src`
  // may be reused (the bytes sit in pinned memory until the device has read them).
  Status copy_to_device(void* dst, const void* src, size_t n, cudaStream_t stream) {
    size_t start = (head_ + 255) / 256 * 256;
    if (start + n > capacity_) start = 0;
    while (!pending_.empty() && overlaps_any(start, start + n)) {
      Pending& f = pending_.front();
      SW_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(f.event));
      spare_.push_back(f.event);
      pending_.pop_front();
    }
    std::memcpy(static_cast<char*>(buf_) + start, src, n);
    SW_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst, static_cast<char*>(buf_) + start, n, cudaMemcpyHostToDevice, stream));
    cudaEvent_t ev = nullptr;
    if (!spare_.empty()) {
      ev = spare_.back();
      spare_.pop_back();
    } else {
      SW_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    }
    SW_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev, stream));
    pending_.push_back(Pending{start, start + n, ev});
    head_ = start + n;
    return Status::ok_status();
  }

 private:
  struct Pending {
    size_t begin, end;
    cudaEvent_t event;
  };
  bool overlaps_any(size_t b, size_t e) const {
    for (const Pending& p : pending_)
      if (p.begin < e && b < p.end) return true;
    return false;
  }
  void* buf_ = nullptr;
  size_t capacity_ = 0, head_ = 0;
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> spare_;
};

// ---- the backend --------------------------------------------------------------------------

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}
  ~CudaBackend() override {
    clear_graphs();
    if (stream_) {
      (void)cudaStreamSynchronize(stream_);
      gemm_.reset();
      workspace_.reset();
      sample_scratch_.reset();
      (void)cudaStreamDestroy(stream_);
    }
  }

  Status init() {
    SW_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    SW_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    SW_CUDA_RETURN_IF_ERROR(
        cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device_));
    SW_RETURN_IF_ERROR(staging_.init(size_t{16} << 20));
    constexpr size_t kWorkspace = size_t{32} << 20;  // cuBLASLt's recommended size on Hopper
    SW_ASSIGN_OR_RETURN(workspace_, allocator_.allocate(kWorkspace));
    // Allocated up front, so the start-up KV sizing (memory_info) already counts it.
    SW_ASSIGN_OR_RETURN(sample_scratch_, allocator_.allocate(kSampleScratchBytes));
    gemm_ = std::make_unique<cuda::GemmRunner>();
    SW_RETURN_IF_ERROR(gemm_->init(stream_, workspace_.get(), kWorkspace));
    return Status::ok_status();
  }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return "cuda"; }
  Status bind_current_thread() override {
    SW_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    return Status::ok_status();
  }
  bool supports(Op op, DType dtype) const override {
    (void)op;  // every op is implemented for every float activation dtype
    return is_float(dtype);
  }

  // ---- memory -------------------------------------------------------------------------------
  MemoryInfo memory_info() const override {
    MemoryInfo m;
    size_t free = 0, total = 0;
    if (cudaSetDevice(device_) == cudaSuccess && cudaMemGetInfo(&free, &total) == cudaSuccess) {
      m.total_bytes = static_cast<int64_t>(total);
      m.free_bytes = static_cast<int64_t>(free);
    }
    m.in_use_bytes = allocator_.stats().in_use_bytes;
    return m;
  }

 protected:
  Tensor allocate(const Shape& shape, DType dtype) override {
    const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
    if (bytes == 0) return Tensor(nullptr, shape, dtype, Device::kCuda);
    auto block = allocator_.allocate(bytes);
    // The interface has no error path for alloc: running out of device memory is fatal.
    SW_CHECK_MSG(block.ok(), "CUDA alloc {} {}: {}", dtype_name(dtype), shape_str(shape),
                 block.status().to_string());
    std::shared_ptr<void> storage = std::move(block).value();
    void* data = storage.get();
    if (capturing_) capture_storage_.push_back(storage);
    return Tensor(data, shape, dtype, Device::kCuda, std::move(storage));
  }

 public:
  Status copy(const Tensor& src, Tensor& dst) override {
    if (src.dtype() != dst.dtype() || src.numel() != dst.numel())
      return invalid_argument("copy: src {} and dst {} need the same dtype and numel",
                              src.describe(), dst.describe());
    const size_t n = src.nbytes();
    if (n == 0 || src.data() == dst.data()) return Status::ok_status();
    if (src.data() == nullptr || dst.data() == nullptr)
      return invalid_argument("copy: src {} or dst {} has no data", src.describe(), dst.describe());
    const bool from_host = src.is_cpu(), to_host = dst.is_cpu();
    if (from_host && to_host) {
      std::memmove(dst.data(), src.data(), n);
      return Status::ok_status();
    }
    if (capturing_ && (from_host || to_host))
      return invalid_argument(
          "copy: {} -> {} touches host memory while a CUDA graph is being captured; write "
          "graph inputs into persistent device buffers before replay",
          src.describe(), dst.describe());
    if (from_host) {
      if (n <= staging_.capacity())
        return staging_.copy_to_device(dst.data(), src.data(), n, stream_);
      // Large (weights): pageable copy, then wait so the caller may free its buffer.
      SW_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst.data(), src.data(), n, cudaMemcpyHostToDevice, stream_));
      SW_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
      return Status::ok_status();
    }
    if (to_host) {
      SW_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(dst.data(), src.data(), n, cudaMemcpyDeviceToHost, stream_));
      SW_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));  // data is there on return
      return Status::ok_status();
    }
    SW_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dst.data(), src.data(), n, cudaMemcpyDeviceToDevice, stream_));
    return Status::ok_status();
  }

  Status synchronize() override {
    // A stream sync inside cudaStreamBeginCapture/EndCapture invalidates the capture.
    if (capturing_)
      return invalid_argument(
          "synchronize: the backend is capturing a CUDA graph (a stream sync would invalidate "
          "the capture)");
    SW_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::ok_status();
  }

  // ---- GEMM ---------------------------------------------------------------------------------
  Status gemm(const Tensor& x, const Tensor& w, Tensor& out, const Tensor* bias,
              bool accumulate) override {
    const char* op = "gemm";
    SW_RETURN_IF_ERROR(validate_gemm(Device::kCuda, x, w, out, bias));
    const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
    SW_RETURN_IF_ERROR(check_int_range(op, "M", m));
    SW_RETURN_IF_ERROR(check_int_range(op, "N", n));
    SW_RETURN_IF_ERROR(check_int_range(op, "K", k));
    return gemm_->run(x.data(), w.data(), out.data(), bias ? bias->data() : nullptr, accumulate, m,
                      n, k, elem(x.dtype()));
  }

  // Eagerly: reads expert_offsets on the host (one small D2H copy and a stream sync), then one
  // cuBLASLt GEMM per non-empty expert. While capturing a graph (decode steps: a few rows per
  // expert) the host cannot look, so a grouped-GEMV kernel reads the offsets on the device.
  Status grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& expert_offsets,
                      Tensor& out) override {
    SW_RETURN_IF_ERROR(validate_grouped_gemm(Device::kCuda, x, w, expert_offsets, out));
    const int64_t k = x.dim(1), e = w.dim(0), n = w.dim(1);
    if (capturing_) {
      if (e > 65535 || k >= (int64_t{1} << 30))
        return invalid_argument("grouped_gemm in a CUDA graph: E={} (max 65535), K={} (< 2^30)", e,
                                k);
      cuda::GroupedGemmDeviceParams p;
      p.x = x.data();
      p.w = w.data();
      p.expert_offsets = ptr<const int32_t>(expert_offsets);
      p.out = out.data();
      p.type = elem(x.dtype());
      p.rows = x.dim(0);
      p.n = n;
      p.k = k;
      p.experts = static_cast<int>(e);
      SW_CUDA_RETURN_IF_ERROR(cuda::launch_grouped_gemm_device(p, stream_));
      return Status::ok_status();
    }
    Tensor host = Tensor::empty({e + 1}, DType::kI32);
    SW_RETURN_IF_ERROR(copy(expert_offsets, host));
    const int32_t* offs = host.data_as<int32_t>();
    SW_RETURN_IF_ERROR(validate_expert_offsets(offs, e, x));
    for (int64_t ex = 0; ex < e; ++ex) {
      const int64_t row0 = offs[ex], rows = offs[ex + 1] - offs[ex];
      if (rows == 0) continue;
      SW_RETURN_IF_ERROR(gemm_->run(ptr<void>(x, row0 * k), ptr<void>(w, ex * n * k),
                                    ptr<void>(out, row0 * n), nullptr, false, rows, n, k,
                                    elem(x.dtype())));
    }
    return Status::ok_status();
  }

  // ---- norms, RoPE, element-wise --------------------------------------------------------------
  Status rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                  Tensor* residual) override {
    SW_RETURN_IF_ERROR(validate_rms_norm(Device::kCuda, x, weight, out, residual));
    const int64_t h = x.dim(-1);
    cuda::RmsNormParams p;
    p.x = x.data();
    p.x_type = elem(x.dtype());
    p.weight = weight.data();
    p.weight_type = elem(weight.dtype());
    p.out = out.data();
    p.out_type = elem(out.dtype());
    p.residual = residual ? residual->data() : nullptr;
    p.residual_type = residual ? elem(residual->dtype()) : ElemType::kF32;
    p.hidden = h;
    p.rows = h == 0 ? 0 : x.numel() / h;
    p.eps = eps;
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_rms_norm(p, stream_));
    return Status::ok_status();
  }

  Status rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq,
              RopeLayout layout) override {
    SW_RETURN_IF_ERROR(validate_rope(Device::kCuda, q, k, positions, inv_freq));
    const int64_t t = q.dim(0), d = q.dim(2), half = inv_freq.dim(0);
    cuda::RopeParams p;
    p.q = q.data();
    p.q_type = elem(q.dtype());
    p.k = k.data();
    p.k_type = elem(k.dtype());
    p.positions = ptr<const int32_t>(positions);
    p.inv_freq = ptr<const float>(inv_freq);
    p.tokens = t;
    p.q_heads = q.dim(1);
    p.k_heads = k.dim(1);
    p.head_dim = d;
    p.half = half;
    p.neox = layout == RopeLayout::kNeox;
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_rope(p, stream_));
    return Status::ok_status();
  }

  Status silu_and_mul(const Tensor& x, Tensor& out) override {
    SW_RETURN_IF_ERROR(validate_silu_and_mul(Device::kCuda, x, out));
    const int64_t t = x.dim(0), i2 = x.dim(1);
    cuda::SiluAndMulParams p;
    p.x = x.data();
    p.out = out.data();
    p.rows = t;
    p.inter = i2 / 2;
    p.type = elem(x.dtype());
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_silu_and_mul(p, stream_));
    return Status::ok_status();
  }

  Status embedding(const Tensor& ids, const Tensor& table, int64_t vocab_offset,
                   Tensor& out) override {
    SW_RETURN_IF_ERROR(validate_embedding(Device::kCuda, ids, table, out));
    const int64_t t = ids.dim(0), h = table.dim(1);
    cuda::EmbeddingParams p;
    p.ids = ptr<const int32_t>(ids);
    p.table = table.data();
    p.table_type = elem(table.dtype());
    p.out = out.data();
    p.out_type = elem(out.dtype());
    p.num_tokens = t;
    p.vocab = table.dim(0);
    p.hidden = h;
    p.vocab_offset = vocab_offset;
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_embedding(p, stream_));
    return Status::ok_status();
  }

  Status add(Tensor& x, const Tensor& y) override {
    SW_RETURN_IF_ERROR(validate_add(Device::kCuda, x, y));
    cuda::AddParams p;
    p.x = x.data();
    p.y = y.data();
    p.n = x.numel();
    p.type = elem(x.dtype());
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_add(p, stream_));
    return Status::ok_status();
  }

  Status convert(const Tensor& src, Tensor& dst) override {
    SW_RETURN_IF_ERROR(validate_convert(Device::kCuda, src, dst));
    if (src.dtype() == dst.dtype()) return copy(src, dst);
    SW_RETURN_IF_ERROR(validate_convert_dtypes(src, dst));
    cuda::ConvertParams p;
    p.src = src.data();
    p.src_type = elem(src.dtype());
    p.dst = dst.data();
    p.dst_type = elem(dst.dtype());
    p.n = src.numel();
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_convert(p, stream_));
    return Status::ok_status();
  }

  // ---- paged KV cache and attention ---------------------------------------------------------
  Status kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                        Tensor& k_cache, Tensor& v_cache) override {
    const char* op = "kv_cache_write";
    SW_RETURN_IF_ERROR(
        validate_kv_cache_write(Device::kCuda, k, v, slot_mapping, k_cache, v_cache));
    // The kernel reads k/v with one dtype and writes both caches with another.
    SW_RETURN_IF_ERROR(check_same_dtype(op, "v", v, k.dtype()));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "v_cache", v_cache, k_cache.dtype()));
    const int64_t t = k.dim(0), hk = k.dim(1), d = k.dim(2);
    const int64_t nb = k_cache.dim(0), bs = k_cache.dim(1);
    cuda::KvCacheWriteParams p;
    p.k = k.data();
    p.v = v.data();
    p.in_type = elem(k.dtype());
    p.slots = ptr<const int32_t>(slot_mapping);
    p.k_cache = k_cache.data();
    p.v_cache = v_cache.data();
    p.cache_type = elem(k_cache.dtype());
    p.num_tokens = t;
    p.row = hk * d;
    p.num_slots = nb * bs;
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_kv_cache_write(p, stream_));
    return Status::ok_status();
  }

  // The CUDA-only cache checks, after the shared validate_attention_*: one cache dtype, and
  // head_dim within the kernels' limit.
  static Status check_cuda_caches(const char* op, const Tensor& q, const Tensor& k_cache,
                                  const Tensor& v_cache) {
    SW_RETURN_IF_ERROR(check_same_dtype(op, "v_cache", v_cache, k_cache.dtype()));
    if (q.dim(2) > cuda::kMaxAttentionHeadDim)
      return invalid_argument("{}: head_dim {} of q {} exceeds the CUDA kernels' limit {}", op,
                              q.dim(2), desc(q), cuda::kMaxAttentionHeadDim);
    return Status::ok_status();
  }

  static cuda::PagedCache paged(const Tensor& k_cache, const Tensor& v_cache) {
    cuda::PagedCache c;
    c.k_cache = k_cache.data();
    c.v_cache = v_cache.data();
    c.type = elem(k_cache.dtype());
    c.num_blocks = k_cache.dim(0);
    c.block_size = static_cast<int>(k_cache.dim(1));
    c.num_kv_heads = static_cast<int>(k_cache.dim(2));
    c.head_dim = static_cast<int>(k_cache.dim(3));
    return c;
  }

  Status attention_prefill(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                           const Tensor& query_start_loc, const Tensor& seq_lens,
                           const Tensor& block_tables, const AttentionParams& params,
                           Tensor& out) override {
    const char* op = "attention_prefill";
    SW_RETURN_IF_ERROR(validate_attention_prefill(Device::kCuda, q, k_cache, v_cache,
                                                  query_start_loc, seq_lens, block_tables, out));
    SW_RETURN_IF_ERROR(check_cuda_caches(op, q, k_cache, v_cache));
    const int64_t t = q.dim(0), b = seq_lens.dim(0);
    SW_RETURN_IF_ERROR(check_int_range(op, "T", t));
    SW_RETURN_IF_ERROR(
        check_int_range(op, "max_blocks * block_size", block_tables.dim(1) * k_cache.dim(1)));
    if (t == 0 || b == 0) return Status::ok_status();
    Tensor plan = alloc({cuda::prefill_tile_plan_ints(t, b)}, DType::kI32);
    cuda::AttentionPrefillParams p;
    p.cache = paged(k_cache, v_cache);
    p.q = q.data();
    p.q_type = elem(q.dtype());
    p.out = out.data();
    p.out_type = elem(out.dtype());
    p.query_start_loc = ptr<const int32_t>(query_start_loc);
    p.seq_lens = ptr<const int32_t>(seq_lens);
    p.block_tables = ptr<const int32_t>(block_tables);
    p.num_tokens = static_cast<int>(t);
    p.batch = static_cast<int>(b);
    p.num_q_heads = static_cast<int>(q.dim(1));
    p.max_blocks = static_cast<int>(block_tables.dim(1));
    p.tile_plan = ptr<int32_t>(plan);
    p.scale = params.scale;
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_attention_prefill(p, stream_));
    return Status::ok_status();
  }

  Status attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                          const Tensor& seq_lens, const Tensor& block_tables,
                          const AttentionParams& params, Tensor& out) override {
    const char* op = "attention_decode";
    SW_RETURN_IF_ERROR(
        validate_attention_decode(Device::kCuda, q, k_cache, v_cache, seq_lens, block_tables, out));
    SW_RETURN_IF_ERROR(check_cuda_caches(op, q, k_cache, v_cache));
    const int64_t b = q.dim(0), hq = q.dim(1), d = q.dim(2);
    SW_RETURN_IF_ERROR(check_int_range(op, "B", b));
    SW_RETURN_IF_ERROR(
        check_int_range(op, "max_blocks * block_size", block_tables.dim(1) * k_cache.dim(1)));
    if (b == 0) return Status::ok_status();
    cuda::AttentionDecodeParams p;
    p.cache = paged(k_cache, v_cache);
    p.q = q.data();
    p.q_type = elem(q.dtype());
    p.out = out.data();
    p.out_type = elem(out.dtype());
    p.seq_lens = ptr<const int32_t>(seq_lens);
    p.block_tables = ptr<const int32_t>(block_tables);
    p.batch = static_cast<int>(b);
    p.num_q_heads = static_cast<int>(hq);
    p.max_blocks = static_cast<int>(block_tables.dim(1));
    p.scale = params.scale;
    cuda::plan_attention_decode(p, num_sms_);
    Tensor acc, ml;
    if (p.num_splits > 1) {
      acc = alloc({b * hq * p.num_splits * d}, DType::kF32);
      ml = alloc({b * hq * p.num_splits * 2}, DType::kF32);
      p.partial_acc = ptr<float>(acc);
      p.partial_ml = ptr<float>(ml);
    }
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_attention_decode(p, stream_));
    return Status::ok_status();
  }

  // ---- MoE ------------------------------------------------------------------------------------
  Status router_topk(const Tensor& logits, int k, bool renormalize, Tensor& topk_ids,
                     Tensor& topk_weights, Tensor* topk_probs) override {
    const char* op = "router_topk";
    SW_RETURN_IF_ERROR(
        validate_router_topk(Device::kCuda, logits, k, topk_ids, topk_weights, topk_probs));
    const int64_t t = logits.dim(0), e = logits.dim(1);
    SW_RETURN_IF_ERROR(check_int_range(op, "E", e));
    cuda::RouterTopkParams p;
    p.logits = logits.data();
    p.logits_type = elem(logits.dtype());
    p.topk_ids = ptr<int32_t>(topk_ids);
    p.topk_weights = ptr<float>(topk_weights);
    p.topk_probs = topk_probs ? ptr<float>(*topk_probs) : nullptr;
    p.tokens = t;
    p.experts = static_cast<int>(e);
    p.k = k;
    p.renormalize = renormalize;
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_router_topk(p, stream_));
    return Status::ok_status();
  }

  Status moe_assign(const Tensor& topk_ids, const Tensor& priority_weights, int num_experts,
                    int64_t capacity, DropPolicy policy, Tensor& dest_rows,
                    Tensor& expert_offsets) override {
    const char* op = "moe_assign";
    SW_RETURN_IF_ERROR(validate_moe_assign(Device::kCuda, topk_ids, priority_weights, num_experts,
                                           dest_rows, expert_offsets));
    if (num_experts > cuda::kMoeAssignMaxExperts)
      return invalid_argument("moe_assign: num_experts={} exceeds the CUDA kernel's limit {}",
                              num_experts, cuda::kMoeAssignMaxExperts);
    const int64_t t = topk_ids.dim(0), k = topk_ids.dim(1);
    SW_RETURN_IF_ERROR(check_int_range(op, "T * k", t * k));
    Tensor scratch = alloc({cuda::moe_assign_scratch_ints(t)}, DType::kI32);
    cuda::MoeAssignParams p;
    p.topk_ids = ptr<const int32_t>(topk_ids);
    p.priority_weights = ptr<const float>(priority_weights);
    p.dest_rows = ptr<int32_t>(dest_rows);
    p.expert_offsets = ptr<int32_t>(expert_offsets);
    p.scratch = ptr<int32_t>(scratch);
    p.tokens = t;
    p.k = static_cast<int>(k);
    p.num_experts = num_experts;
    p.capacity = capacity;
    p.policy = policy == DropPolicy::kOrder ? 0 : (policy == DropPolicy::kPriorityMax ? 1 : 2);
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_moe_assign(p, stream_));
    return Status::ok_status();
  }

  Status moe_permute(const Tensor& x, const Tensor& dest_rows, Tensor& out) override {
    SW_RETURN_IF_ERROR(validate_moe_permute(Device::kCuda, x, dest_rows, out));
    const int64_t t = x.dim(0), h = x.dim(1);
    cuda::MoePermuteParams p;
    p.x = x.data();
    p.x_type = elem(x.dtype());
    p.dest_rows = ptr<const int32_t>(dest_rows);
    p.out = out.data();
    p.out_type = elem(out.dtype());
    p.tokens = t;
    p.k = dest_rows.dim(1);
    p.hidden = h;
    p.out_rows = out.dim(0);
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_moe_permute(p, stream_));
    return Status::ok_status();
  }

  Status moe_unpermute(const Tensor& y, const Tensor& dest_rows, const Tensor& weights,
                       Tensor& out) override {
    SW_RETURN_IF_ERROR(validate_moe_unpermute(Device::kCuda, y, dest_rows, weights, out));
    const int64_t t = dest_rows.dim(0), h = y.dim(1);
    cuda::MoeUnpermuteParams p;
    p.y = y.data();
    p.y_type = elem(y.dtype());
    p.dest_rows = ptr<const int32_t>(dest_rows);
    p.weights = ptr<const float>(weights);
    p.out = out.data();
    p.out_type = elem(out.dtype());
    p.tokens = t;
    p.k = dest_rows.dim(1);
    p.hidden = h;
    p.y_rows = y.dim(0);
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_moe_unpermute(p, stream_));
    return Status::ok_status();
  }

  // ---- sampling -------------------------------------------------------------------------------
  // Row parameters go up through the staging ring (so sample() is not capturable); rows are
  // processed in launches whose sort scratch fits the backend's kSampleScratchBytes buffer.
  Status sample(const Tensor& logits, const std::vector<SamplingRow>& rows, Tensor& out) override {
    SW_RETURN_IF_ERROR(validate_sample(Device::kCuda, logits, rows, out));
    const int64_t b = logits.dim(0), v = logits.dim(1);
    if (v > INT32_MAX / 4)
      return invalid_argument("sample: vocab {} of logits {} is too large", v, desc(logits));
    if (b == 0) return Status::ok_status();
    if (capturing_)
      return unimplemented("sample uploads per-row parameters and cannot run inside a CUDA graph");
    std::vector<cuda::SampleRowParams> host(static_cast<size_t>(b));
    for (int64_t i = 0; i < b; ++i) {
      host[i].temperature = rows[i].temperature;
      host[i].top_k = rows[i].top_k;
      host[i].top_p = rows[i].top_p;
      host[i].seed = rows[i].seed;
      host[i].offset = rows[i].offset;
    }
    const int64_t param_bytes = b * static_cast<int64_t>(sizeof(cuda::SampleRowParams));
    Tensor dev_params = alloc({param_bytes}, DType::kU8);
    Tensor host_params(host.data(), {param_bytes}, DType::kU8, Device::kCpu);
    SW_RETURN_IF_ERROR(copy(host_params, dev_params));
    // Temperature rows sort the whole row in scratch (16 bytes per logit): the launches reuse
    // the backend's own bounded buffer (launches on one stream run in order), so the step
    // workspace never holds S x V x 16 bytes. Rows past the buffer wait for the next launch.
    const int64_t row_bytes = cuda::sample_scratch_words(1, v) * 4;
    int64_t per_launch = std::max<int64_t>(1, kSampleScratchBytes / row_bytes);
    std::shared_ptr<void> oversized;  // one row larger than the buffer (a vocabulary > 8M)
    void* scratch = sample_scratch_.get();
    if (row_bytes > kSampleScratchBytes) {
      per_launch = 1;
      SW_ASSIGN_OR_RETURN(oversized, allocator_.allocate(static_cast<size_t>(row_bytes)));
      scratch = oversized.get();
    }
    for (int64_t r0 = 0; r0 < b; r0 += per_launch) {
      const int64_t n = std::min(per_launch, b - r0);
      bool any_random = false;
      for (int64_t i = r0; i < r0 + n; ++i) any_random |= rows[i].temperature > 0.f;
      cuda::SampleParams p;
      p.logits = ptr<const void>(logits, r0 * v);
      p.type = elem(logits.dtype());
      p.rows = n;
      p.vocab = v;
      p.row_params = ptr<const cuda::SampleRowParams>(dev_params) + r0;
      p.out = ptr<int32_t>(out, r0);
      p.scratch = any_random ? static_cast<uint32_t*>(scratch) : nullptr;
      SW_CUDA_RETURN_IF_ERROR(cuda::launch_sample(p, stream_));
    }
    return Status::ok_status();
  }

  // ---- CUDA graphs ----------------------------------------------------------------------------
  bool supports_graphs() const override { return true; }

  Status begin_graph_capture() override {
    if (capturing_) return invalid_argument("begin_graph_capture: already capturing");
    SW_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
    capturing_ = true;
    allocator_.begin_capture();
    return Status::ok_status();
  }

  Status end_graph_capture(int64_t key) override {
    if (!capturing_) return invalid_argument("end_graph_capture: no capture in progress");
    capturing_ = false;
    GraphEntry entry;
    entry.storage.swap(capture_storage_);
    entry.parked = allocator_.end_capture();
    cudaGraph_t graph = nullptr;
    const cudaError_t err = cudaStreamEndCapture(stream_, &graph);
    if (err != cudaSuccess) {
      allocator_.return_parked(entry.parked);
      SW_CUDA_RETURN_IF_ERROR(err);
    }
    entry.graph = graph;
    const cudaError_t inst = cudaGraphInstantiate(&entry.exec, graph, 0);
    if (inst != cudaSuccess) {
      (void)cudaGraphDestroy(graph);
      allocator_.return_parked(entry.parked);
      SW_CUDA_RETURN_IF_ERROR(inst);
    }
    drop_graph(key);
    graphs_.emplace(key, std::move(entry));
    return Status::ok_status();
  }

  Status replay_graph(int64_t key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return not_found("replay_graph: no graph captured under key {}", key);
    SW_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(it->second.exec, stream_));
    return Status::ok_status();
  }

  bool has_graph(int64_t key) const override { return graphs_.count(key) > 0; }

  void clear_graphs() override {
    while (!graphs_.empty()) drop_graph(graphs_.begin()->first);
  }

  cuda::AllocatorStats allocator_stats() const { return allocator_.stats(); }
  cudaStream_t stream() const { return stream_; }

 private:
  struct GraphEntry {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    std::vector<std::shared_ptr<void>> storage;    // allocated while capturing
    std::vector<std::pair<void*, size_t>> parked;  // freed while capturing
  };

  void drop_graph(int64_t key) {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return;
    (void)cudaStreamSynchronize(stream_);  // a replay may still be running
    if (it->second.exec) (void)cudaGraphExecDestroy(it->second.exec);
    if (it->second.graph) (void)cudaGraphDestroy(it->second.graph);
    allocator_.return_parked(it->second.parked);
    graphs_.erase(it);
  }

  int device_;
  cudaStream_t stream_ = nullptr;
  int num_sms_ = 0;
  cuda::CachingDeviceAllocator allocator_;
  StagingRing staging_;
  std::shared_ptr<void> workspace_;
  // Sort scratch of temperature sampling, fixed at start-up: 128 MiB sorts 55 rows of a
  // 151936-token vocabulary per launch (S = 256 rows: 5 launches). A top-k-first sampler
  // would need far less.
  static constexpr int64_t kSampleScratchBytes = int64_t{128} << 20;
  std::shared_ptr<void> sample_scratch_;
  std::unique_ptr<cuda::GemmRunner> gemm_;
  bool capturing_ = false;
  std::vector<std::shared_ptr<void>> capture_storage_;
  std::map<int64_t, GraphEntry> graphs_;
};

}  // namespace

cudaStream_t cuda_stream_of(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  return cuda ? cuda->stream() : nullptr;
}

cuda::AllocatorStats cuda_allocator_stats(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  return cuda ? cuda->allocator_stats() : cuda::AllocatorStats{};
}

Result<std::unique_ptr<Backend>> make_cuda_backend(int device_ordinal) {
  const int count = cuda_device_count();
  if (count == 0) return unavailable("CUDA backend: no CUDA device visible");
  if (device_ordinal < 0 || device_ordinal >= count)
    return invalid_argument("CUDA backend: device {} out of range ({} visible)", device_ordinal,
                            count);
  auto backend = std::make_unique<CudaBackend>(device_ordinal);
  SW_RETURN_IF_ERROR(backend->init().with_context("CUDA backend init"));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace sw::kernels

// CudaBackend: kernels::Backend on one CUDA device and one stream. Host code (g++): it
// validates shapes and dtypes (invalid_argument naming the op and tensor, like the CPU
// backend), then calls the fmt-free launchers in kernels/cuda/*.cuh. Memory comes from a
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
#include "kernels/cuda/moe.cuh"
#include "kernels/cuda/rms_norm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/sample.cuh"

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

std::string desc(const Tensor& t) { return t.describe(); }

// ---- argument checks (the CPU backend's wording, device tensors) ---------------------------

Status check_tensor(const char* op, const char* name, const Tensor& t, int ndim) {
  if (t.device() != Device::kCuda)
    return invalid_argument("{}: {} must be a CUDA device tensor, got {}", op, name, desc(t));
  if (ndim >= 0 && t.ndim() != ndim)
    return invalid_argument("{}: {} must have {} dims, got shape {} ({})", op, name, ndim,
                            shape_str(t.shape()), desc(t));
  if (t.data() == nullptr && t.numel() > 0)
    return invalid_argument("{}: {} has no data ({})", op, name, desc(t));
  return Status::ok_status();
}

Status check_float(const char* op, const char* name, const Tensor& t, int ndim) {
  SW_RETURN_IF_ERROR(check_tensor(op, name, t, ndim));
  if (!is_float(t.dtype()))
    return invalid_argument("{}: {} must be float32/bfloat16/float16, got {}", op, name, desc(t));
  return Status::ok_status();
}

Status check_int32(const char* op, const char* name, const Tensor& t, int ndim) {
  SW_RETURN_IF_ERROR(check_tensor(op, name, t, ndim));
  if (t.dtype() != DType::kI32)
    return invalid_argument("{}: {} must be int32, got {}", op, name, desc(t));
  return Status::ok_status();
}

Status check_f32(const char* op, const char* name, const Tensor& t, int ndim) {
  SW_RETURN_IF_ERROR(check_tensor(op, name, t, ndim));
  if (t.dtype() != DType::kF32)
    return invalid_argument("{}: {} must be float32, got {}", op, name, desc(t));
  return Status::ok_status();
}

Status check_shape(const char* op, const char* name, const Tensor& t, const Shape& expected) {
  if (t.shape() != expected)
    return invalid_argument("{}: {} must have shape {}, got {} ({})", op, name, shape_str(expected),
                            shape_str(t.shape()), desc(t));
  return Status::ok_status();
}

Status check_same_dtype(const char* op, const char* name, const Tensor& t, DType expected) {
  if (t.dtype() != expected)
    return invalid_argument("{}: {} must be {} like the other operands, got {}", op, name,
                            dtype_name(expected), desc(t));
  return Status::ok_status();
}

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
    gemm_ = std::make_unique<cuda::GemmRunner>();
    SW_RETURN_IF_ERROR(gemm_->init(stream_, workspace_.get(), kWorkspace));
    return Status::ok_status();
  }

  Device device() const override { return Device::kCuda; }
  std::string name() const override { return "cuda"; }
  bool supports(Op op, DType dtype) const override {
    (void)op;  // every op is implemented for every float activation dtype
    return is_float(dtype);
  }

  // ---- memory -------------------------------------------------------------------------------
  Tensor alloc(const Shape& shape, DType dtype) override {
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
    SW_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return Status::ok_status();
  }

  // ---- GEMM ---------------------------------------------------------------------------------
  Status gemm(const Tensor& x, const Tensor& w, Tensor& out, const Tensor* bias,
              bool accumulate) override {
    const char* op = "gemm";
    SW_RETURN_IF_ERROR(check_float(op, "x", x, 2));
    SW_RETURN_IF_ERROR(check_float(op, "w", w, 2));
    SW_RETURN_IF_ERROR(check_float(op, "out", out, 2));
    const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
    if (w.dim(1) != k)
      return invalid_argument("gemm: w must be [N, K={}] (torch Linear layout), got {} (x {})", k,
                              desc(w), desc(x));
    SW_RETURN_IF_ERROR(check_shape(op, "out", out, {m, n}));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "w", w, x.dtype()));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "out", out, x.dtype()));
    if (bias) {
      SW_RETURN_IF_ERROR(check_float(op, "bias", *bias, 1));
      SW_RETURN_IF_ERROR(check_shape(op, "bias", *bias, {n}));
      SW_RETURN_IF_ERROR(check_same_dtype(op, "bias", *bias, x.dtype()));
    }
    SW_RETURN_IF_ERROR(check_int_range(op, "M", m));
    SW_RETURN_IF_ERROR(check_int_range(op, "N", n));
    SW_RETURN_IF_ERROR(check_int_range(op, "K", k));
    return gemm_->run(x.data(), w.data(), out.data(), bias ? bias->data() : nullptr, accumulate, m,
                      n, k, elem(x.dtype()));
  }

  // Reads expert_offsets on the host (one small D2H copy and a stream sync), then one GEMM per
  // non-empty expert. Not capturable in a CUDA graph for that reason.
  Status grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& expert_offsets,
                      Tensor& out) override {
    const char* op = "grouped_gemm";
    SW_RETURN_IF_ERROR(check_float(op, "x", x, 2));
    SW_RETURN_IF_ERROR(check_float(op, "w", w, 3));
    SW_RETURN_IF_ERROR(check_float(op, "out", out, 2));
    SW_RETURN_IF_ERROR(check_int32(op, "expert_offsets", expert_offsets, 1));
    const int64_t r = x.dim(0), k = x.dim(1), e = w.dim(0), n = w.dim(1);
    if (w.dim(2) != k)
      return invalid_argument("grouped_gemm: w must be [E, N, K={}], got {} (x {})", k, desc(w),
                              desc(x));
    SW_RETURN_IF_ERROR(check_shape(op, "out", out, {r, n}));
    SW_RETURN_IF_ERROR(check_shape(op, "expert_offsets", expert_offsets, {e + 1}));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "w", w, x.dtype()));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "out", out, x.dtype()));
    if (capturing_)
      return unimplemented(
          "grouped_gemm reads expert offsets on the host and cannot run inside a CUDA graph");
    Tensor host = Tensor::empty({e + 1}, DType::kI32);
    SW_RETURN_IF_ERROR(copy(expert_offsets, host));
    const int32_t* offs = host.data_as<int32_t>();
    if (offs[0] != 0)
      return invalid_argument("grouped_gemm: expert_offsets[0] must be 0, got {}", offs[0]);
    for (int64_t i = 0; i < e; ++i)
      if (offs[i + 1] < offs[i] || offs[i + 1] > r)
        return invalid_argument(
            "grouped_gemm: expert_offsets must be non-decreasing and <= R={} (x {}), got "
            "offsets[{}]={} after {}",
            r, desc(x), i + 1, offs[i + 1], offs[i]);
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
    const char* op = "rms_norm";
    SW_RETURN_IF_ERROR(check_float(op, "x", x, -1));
    SW_RETURN_IF_ERROR(check_float(op, "weight", weight, 1));
    SW_RETURN_IF_ERROR(check_float(op, "out", out, -1));
    if (x.ndim() < 1) return invalid_argument("rms_norm: x must be [T, H], got {}", desc(x));
    const int64_t h = x.dim(-1);
    SW_RETURN_IF_ERROR(check_shape(op, "weight", weight, {h}));
    SW_RETURN_IF_ERROR(check_shape(op, "out", out, x.shape()));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "out", out, x.dtype()));
    if (residual) {
      SW_RETURN_IF_ERROR(check_float(op, "residual", *residual, -1));
      SW_RETURN_IF_ERROR(check_shape(op, "residual", *residual, x.shape()));
    }
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
    const char* op = "rope";
    SW_RETURN_IF_ERROR(check_float(op, "q", q, 3));
    SW_RETURN_IF_ERROR(check_float(op, "k", k, 3));
    SW_RETURN_IF_ERROR(check_int32(op, "positions", positions, 1));
    SW_RETURN_IF_ERROR(check_f32(op, "inv_freq", inv_freq, 1));
    const int64_t t = q.dim(0), d = q.dim(2), half = inv_freq.dim(0);
    if (k.dim(0) != t || k.dim(2) != d)
      return invalid_argument("rope: k must be [T={}, Hk, D={}] like q {}, got {}", t, d, desc(q),
                              desc(k));
    SW_RETURN_IF_ERROR(check_shape(op, "positions", positions, {t}));
    if (2 * half > d)
      return invalid_argument("rope: inv_freq {} rotates {} dims, more than head_dim {} of q {}",
                              desc(inv_freq), 2 * half, d, desc(q));
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
    const char* op = "silu_and_mul";
    SW_RETURN_IF_ERROR(check_float(op, "x", x, 2));
    SW_RETURN_IF_ERROR(check_float(op, "out", out, 2));
    const int64_t t = x.dim(0), i2 = x.dim(1);
    if (i2 % 2 != 0)
      return invalid_argument("silu_and_mul: x must be [T, 2I] (gate then up), got {}", desc(x));
    SW_RETURN_IF_ERROR(check_shape(op, "out", out, {t, i2 / 2}));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "out", out, x.dtype()));
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
    const char* op = "embedding";
    SW_RETURN_IF_ERROR(check_int32(op, "ids", ids, 1));
    SW_RETURN_IF_ERROR(check_float(op, "table", table, 2));
    SW_RETURN_IF_ERROR(check_float(op, "out", out, 2));
    const int64_t t = ids.dim(0), h = table.dim(1);
    SW_RETURN_IF_ERROR(check_shape(op, "out", out, {t, h}));
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
    SW_RETURN_IF_ERROR(check_float("add", "x", x, -1));
    SW_RETURN_IF_ERROR(check_float("add", "y", y, -1));
    SW_RETURN_IF_ERROR(check_shape("add", "y", y, x.shape()));
    SW_RETURN_IF_ERROR(check_same_dtype("add", "y", y, x.dtype()));
    cuda::AddParams p;
    p.x = x.data();
    p.y = y.data();
    p.n = x.numel();
    p.type = elem(x.dtype());
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_add(p, stream_));
    return Status::ok_status();
  }

  Status convert(const Tensor& src, Tensor& dst) override {
    SW_RETURN_IF_ERROR(check_tensor("convert", "src", src, -1));
    SW_RETURN_IF_ERROR(check_tensor("convert", "dst", dst, -1));
    if (src.numel() != dst.numel())
      return invalid_argument("convert: src {} and dst {} need the same numel", desc(src),
                              desc(dst));
    if (src.dtype() == dst.dtype()) return copy(src, dst);
    if (!is_float(src.dtype()) || !is_float(dst.dtype()))
      return invalid_argument("convert: only float32/bfloat16/float16 conversions, got {} -> {}",
                              desc(src), desc(dst));
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
    SW_RETURN_IF_ERROR(check_float(op, "k", k, 3));
    SW_RETURN_IF_ERROR(check_float(op, "v", v, 3));
    SW_RETURN_IF_ERROR(check_int32(op, "slot_mapping", slot_mapping, 1));
    SW_RETURN_IF_ERROR(check_float(op, "k_cache", k_cache, 4));
    SW_RETURN_IF_ERROR(check_float(op, "v_cache", v_cache, 4));
    const int64_t t = k.dim(0), hk = k.dim(1), d = k.dim(2);
    const int64_t nb = k_cache.dim(0), bs = k_cache.dim(1);
    SW_RETURN_IF_ERROR(check_shape(op, "v", v, k.shape()));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "v", v, k.dtype()));
    SW_RETURN_IF_ERROR(check_shape(op, "slot_mapping", slot_mapping, {t}));
    SW_RETURN_IF_ERROR(check_shape(op, "k_cache", k_cache, {nb, bs, hk, d}));
    SW_RETURN_IF_ERROR(check_shape(op, "v_cache", v_cache, k_cache.shape()));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "v_cache", v_cache, k_cache.dtype()));
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

  Status check_caches(const char* op, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& out) {
    SW_RETURN_IF_ERROR(check_float(op, "q", q, 3));
    SW_RETURN_IF_ERROR(check_float(op, "k_cache", k_cache, 4));
    SW_RETURN_IF_ERROR(check_float(op, "v_cache", v_cache, 4));
    SW_RETURN_IF_ERROR(check_shape(op, "v_cache", v_cache, k_cache.shape()));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "v_cache", v_cache, k_cache.dtype()));
    SW_RETURN_IF_ERROR(check_float(op, "out", out, 3));
    SW_RETURN_IF_ERROR(check_shape(op, "out", out, q.shape()));
    const int64_t hq = q.dim(1), hk = k_cache.dim(2);
    if (k_cache.dim(1) <= 0)
      return invalid_argument("{}: k_cache {} has block_size 0", op, desc(k_cache));
    if (k_cache.dim(3) != q.dim(2))
      return invalid_argument("{}: k_cache {} head_dim differs from q {}", op, desc(k_cache),
                              desc(q));
    if (hk == 0 || hq % hk != 0)
      return invalid_argument(
          "{}: q heads {} must be a multiple of k_cache heads {} (q {}, k_cache {})", op, hq, hk,
          desc(q), desc(k_cache));
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
    SW_RETURN_IF_ERROR(check_caches(op, q, k_cache, v_cache, out));
    SW_RETURN_IF_ERROR(check_int32(op, "query_start_loc", query_start_loc, 1));
    SW_RETURN_IF_ERROR(check_int32(op, "seq_lens", seq_lens, 1));
    SW_RETURN_IF_ERROR(check_int32(op, "block_tables", block_tables, 2));
    const int64_t t = q.dim(0), b = seq_lens.dim(0);
    SW_RETURN_IF_ERROR(check_shape(op, "query_start_loc", query_start_loc, {b + 1}));
    if (block_tables.dim(0) != b)
      return invalid_argument("{}: block_tables {} must have B={} rows (seq_lens {})", op,
                              desc(block_tables), b, desc(seq_lens));
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
    SW_RETURN_IF_ERROR(check_caches(op, q, k_cache, v_cache, out));
    SW_RETURN_IF_ERROR(check_int32(op, "seq_lens", seq_lens, 1));
    SW_RETURN_IF_ERROR(check_int32(op, "block_tables", block_tables, 2));
    const int64_t b = q.dim(0), hq = q.dim(1), d = q.dim(2);
    SW_RETURN_IF_ERROR(check_shape(op, "seq_lens", seq_lens, {b}));
    if (block_tables.dim(0) != b)
      return invalid_argument("{}: block_tables {} must have B={} rows (q {})", op,
                              desc(block_tables), b, desc(q));
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
                     Tensor& topk_weights) override {
    const char* op = "router_topk";
    SW_RETURN_IF_ERROR(check_float(op, "logits", logits, 2));
    SW_RETURN_IF_ERROR(check_int32(op, "topk_ids", topk_ids, 2));
    SW_RETURN_IF_ERROR(check_tensor(op, "topk_weights", topk_weights, 2));
    const int64_t t = logits.dim(0), e = logits.dim(1);
    if (k <= 0 || k > e)
      return invalid_argument("router_topk: k={} must be in [1, E={}] for logits {}", k, e,
                              desc(logits));
    SW_RETURN_IF_ERROR(check_shape(op, "topk_ids", topk_ids, {t, k}));
    SW_RETURN_IF_ERROR(check_shape(op, "topk_weights", topk_weights, {t, k}));
    if (topk_weights.dtype() != DType::kF32)
      return invalid_argument("router_topk: topk_weights must be float32, got {}",
                              desc(topk_weights));
    SW_RETURN_IF_ERROR(check_int_range(op, "E", e));
    cuda::RouterTopkParams p;
    p.logits = logits.data();
    p.logits_type = elem(logits.dtype());
    p.topk_ids = ptr<int32_t>(topk_ids);
    p.topk_weights = ptr<float>(topk_weights);
    p.tokens = t;
    p.experts = static_cast<int>(e);
    p.k = k;
    p.renormalize = renormalize;
    SW_CUDA_RETURN_IF_ERROR(cuda::launch_router_topk(p, stream_));
    return Status::ok_status();
  }

  Status moe_assign(const Tensor& topk_ids, const Tensor& topk_weights, int num_experts,
                    int64_t capacity, DropPolicy policy, Tensor& dest_rows,
                    Tensor& expert_offsets) override {
    const char* op = "moe_assign";
    SW_RETURN_IF_ERROR(check_int32(op, "topk_ids", topk_ids, 2));
    SW_RETURN_IF_ERROR(check_tensor(op, "topk_weights", topk_weights, 2));
    SW_RETURN_IF_ERROR(check_int32(op, "dest_rows", dest_rows, 2));
    SW_RETURN_IF_ERROR(check_int32(op, "expert_offsets", expert_offsets, 1));
    if (topk_weights.dtype() != DType::kF32)
      return invalid_argument("moe_assign: topk_weights must be float32, got {}",
                              desc(topk_weights));
    if (num_experts < 0)
      return invalid_argument("moe_assign: num_experts={} is negative", num_experts);
    if (num_experts > cuda::kMoeAssignMaxExperts)
      return invalid_argument("moe_assign: num_experts={} exceeds the CUDA kernel's limit {}",
                              num_experts, cuda::kMoeAssignMaxExperts);
    const int64_t t = topk_ids.dim(0), k = topk_ids.dim(1);
    SW_RETURN_IF_ERROR(check_shape(op, "topk_weights", topk_weights, topk_ids.shape()));
    SW_RETURN_IF_ERROR(check_shape(op, "dest_rows", dest_rows, topk_ids.shape()));
    SW_RETURN_IF_ERROR(check_shape(op, "expert_offsets", expert_offsets, {num_experts + 1}));
    SW_RETURN_IF_ERROR(check_int_range(op, "T * k", t * k));
    Tensor scratch = alloc({cuda::moe_assign_scratch_ints(t)}, DType::kI32);
    cuda::MoeAssignParams p;
    p.topk_ids = ptr<const int32_t>(topk_ids);
    p.topk_weights = ptr<const float>(topk_weights);
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
    const char* op = "moe_permute";
    SW_RETURN_IF_ERROR(check_float(op, "x", x, 2));
    SW_RETURN_IF_ERROR(check_int32(op, "dest_rows", dest_rows, 2));
    SW_RETURN_IF_ERROR(check_float(op, "out", out, 2));
    const int64_t t = x.dim(0), h = x.dim(1);
    if (dest_rows.dim(0) != t)
      return invalid_argument("moe_permute: dest_rows {} must have T={} rows like x {}",
                              desc(dest_rows), t, desc(x));
    if (out.dim(1) != h)
      return invalid_argument("moe_permute: out {} must have H={} columns like x {}", desc(out), h,
                              desc(x));
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
    const char* op = "moe_unpermute";
    SW_RETURN_IF_ERROR(check_float(op, "y", y, 2));
    SW_RETURN_IF_ERROR(check_int32(op, "dest_rows", dest_rows, 2));
    SW_RETURN_IF_ERROR(check_tensor(op, "weights", weights, 2));
    SW_RETURN_IF_ERROR(check_float(op, "out", out, 2));
    if (weights.dtype() != DType::kF32)
      return invalid_argument("moe_unpermute: weights must be float32, got {}", desc(weights));
    const int64_t t = dest_rows.dim(0), h = y.dim(1);
    SW_RETURN_IF_ERROR(check_shape(op, "weights", weights, dest_rows.shape()));
    SW_RETURN_IF_ERROR(check_shape(op, "out", out, {t, h}));
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
  // processed in launches whose sort scratch stays under kMaxSampleScratch bytes.
  Status sample(const Tensor& logits, const std::vector<SamplingRow>& rows, Tensor& out) override {
    const char* op = "sample";
    SW_RETURN_IF_ERROR(check_float(op, "logits", logits, 2));
    SW_RETURN_IF_ERROR(check_int32(op, "out", out, 1));
    const int64_t b = logits.dim(0), v = logits.dim(1);
    SW_RETURN_IF_ERROR(check_shape(op, "out", out, {b}));
    if (static_cast<int64_t>(rows.size()) != b)
      return invalid_argument("sample: {} SamplingRows for logits {}", rows.size(), desc(logits));
    if (v == 0 && b > 0) return invalid_argument("sample: logits {} has no vocab", desc(logits));
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
    constexpr int64_t kMaxSampleScratch = int64_t{256} << 20;
    const int64_t row_bytes = cuda::sample_scratch_words(1, v) * 4;
    const int64_t per_launch = std::max<int64_t>(1, kMaxSampleScratch / row_bytes);
    for (int64_t r0 = 0; r0 < b; r0 += per_launch) {
      const int64_t n = std::min(per_launch, b - r0);
      bool any_random = false;
      for (int64_t i = r0; i < r0 + n; ++i) any_random |= rows[i].temperature > 0.f;
      Tensor scratch;
      if (any_random) scratch = alloc({cuda::sample_scratch_words(n, v)}, DType::kI32);
      cuda::SampleParams p;
      p.logits = ptr<const void>(logits, r0 * v);
      p.type = elem(logits.dtype());
      p.rows = n;
      p.vocab = v;
      p.row_params = ptr<const cuda::SampleRowParams>(dev_params) + r0;
      p.out = ptr<int32_t>(out, r0);
      p.scratch = any_random ? ptr<uint32_t>(scratch) : nullptr;
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

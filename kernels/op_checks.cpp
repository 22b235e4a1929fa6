// Shared Backend argument checks (see op_checks.h). The wording is the CPU backend's; only
// the device check names the backend.
#include "kernels/op_checks.h"

namespace sw::kernels {

Status check_tensor(Device device, const char* op, const char* name, const Tensor& t, int ndim) {
  if (t.device() != device) {
    if (device == Device::kCpu)
      return invalid_argument("{}: {} must be a host tensor for the CPU backend, got {}", op, name,
                              desc(t));
    return invalid_argument("{}: {} must be a CUDA device tensor, got {}", op, name, desc(t));
  }
  if (ndim >= 0 && t.ndim() != ndim)
    return invalid_argument("{}: {} must have {} dims, got shape {} ({})", op, name, ndim,
                            shape_str(t.shape()), desc(t));
  if (t.data() == nullptr && t.numel() > 0)
    return invalid_argument("{}: {} has no data ({})", op, name, desc(t));
  return Status::ok_status();
}

Status check_float(Device device, const char* op, const char* name, const Tensor& t, int ndim) {
  SW_RETURN_IF_ERROR(check_tensor(device, op, name, t, ndim));
  if (!is_float(t.dtype()))
    return invalid_argument("{}: {} must be float32/bfloat16/float16, got {}", op, name, desc(t));
  return Status::ok_status();
}

Status check_int32(Device device, const char* op, const char* name, const Tensor& t, int ndim) {
  SW_RETURN_IF_ERROR(check_tensor(device, op, name, t, ndim));
  if (t.dtype() != DType::kI32)
    return invalid_argument("{}: {} must be int32, got {}", op, name, desc(t));
  return Status::ok_status();
}

Status check_f32(Device device, const char* op, const char* name, const Tensor& t, int ndim) {
  SW_RETURN_IF_ERROR(check_tensor(device, op, name, t, ndim));
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

// ---- GEMM ------------------------------------------------------------------------------------

Status validate_gemm(Device device, const Tensor& x, const Tensor& w, const Tensor& out,
                     const Tensor* bias) {
  const char* op = "gemm";
  SW_RETURN_IF_ERROR(check_float(device, op, "x", x, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "w", w, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, 2));
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  if (w.dim(1) != k)
    return invalid_argument("gemm: w must be [N, K={}] (torch Linear layout), got {} (x {})", k,
                            desc(w), desc(x));
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, {m, n}));
  SW_RETURN_IF_ERROR(check_same_dtype(op, "w", w, x.dtype()));
  SW_RETURN_IF_ERROR(check_same_dtype(op, "out", out, x.dtype()));
  if (bias) {
    SW_RETURN_IF_ERROR(check_float(device, op, "bias", *bias, 1));
    SW_RETURN_IF_ERROR(check_shape(op, "bias", *bias, {n}));
    SW_RETURN_IF_ERROR(check_same_dtype(op, "bias", *bias, x.dtype()));
  }
  return Status::ok_status();
}

Status validate_grouped_gemm(Device device, const Tensor& x, const Tensor& w,
                             const Tensor& expert_offsets, const Tensor& out) {
  const char* op = "grouped_gemm";
  SW_RETURN_IF_ERROR(check_float(device, op, "x", x, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "w", w, 3));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, 2));
  SW_RETURN_IF_ERROR(check_int32(device, op, "expert_offsets", expert_offsets, 1));
  const int64_t r = x.dim(0), k = x.dim(1), e = w.dim(0), n = w.dim(1);
  if (w.dim(2) != k)
    return invalid_argument("grouped_gemm: w must be [E, N, K={}], got {} (x {})", k, desc(w),
                            desc(x));
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, {r, n}));
  SW_RETURN_IF_ERROR(check_shape(op, "expert_offsets", expert_offsets, {e + 1}));
  SW_RETURN_IF_ERROR(check_same_dtype(op, "w", w, x.dtype()));
  SW_RETURN_IF_ERROR(check_same_dtype(op, "out", out, x.dtype()));
  return Status::ok_status();
}

Status validate_expert_offsets(const int32_t* offs, int64_t num_experts, const Tensor& x) {
  const int64_t r = x.dim(0);
  if (offs[0] != 0)
    return invalid_argument("grouped_gemm: expert_offsets[0] must be 0, got {}", offs[0]);
  for (int64_t i = 0; i < num_experts; ++i)
    if (offs[i + 1] < offs[i] || offs[i + 1] > r)
      return invalid_argument(
          "grouped_gemm: expert_offsets must be non-decreasing and <= R={} (x {}), got "
          "offsets[{}]={} after {}",
          r, desc(x), i + 1, offs[i + 1], offs[i]);
  return Status::ok_status();
}

// ---- norms, RoPE, element-wise -----------------------------------------------------------------

Status validate_rms_norm(Device device, const Tensor& x, const Tensor& weight, const Tensor& out,
                         const Tensor* residual) {
  const char* op = "rms_norm";
  SW_RETURN_IF_ERROR(check_float(device, op, "x", x, -1));
  SW_RETURN_IF_ERROR(check_float(device, op, "weight", weight, 1));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, -1));
  if (x.ndim() < 1) return invalid_argument("rms_norm: x must be [T, H], got {}", desc(x));
  SW_RETURN_IF_ERROR(check_shape(op, "weight", weight, {x.dim(-1)}));
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, x.shape()));
  SW_RETURN_IF_ERROR(check_same_dtype(op, "out", out, x.dtype()));
  if (residual) {
    SW_RETURN_IF_ERROR(check_float(device, op, "residual", *residual, -1));
    SW_RETURN_IF_ERROR(check_shape(op, "residual", *residual, x.shape()));
  }
  return Status::ok_status();
}

Status validate_rope(Device device, const Tensor& q, const Tensor& k, const Tensor& positions,
                     const Tensor& inv_freq) {
  const char* op = "rope";
  SW_RETURN_IF_ERROR(check_float(device, op, "q", q, 3));
  SW_RETURN_IF_ERROR(check_float(device, op, "k", k, 3));
  SW_RETURN_IF_ERROR(check_int32(device, op, "positions", positions, 1));
  SW_RETURN_IF_ERROR(check_f32(device, op, "inv_freq", inv_freq, 1));
  const int64_t t = q.dim(0), d = q.dim(2), half = inv_freq.dim(0);
  if (k.dim(0) != t || k.dim(2) != d)
    return invalid_argument("rope: k must be [T={}, Hk, D={}] like q {}, got {}", t, d, desc(q),
                            desc(k));
  SW_RETURN_IF_ERROR(check_shape(op, "positions", positions, {t}));
  if (2 * half > d)
    return invalid_argument("rope: inv_freq {} rotates {} dims, more than head_dim {} of q {}",
                            desc(inv_freq), 2 * half, d, desc(q));
  return Status::ok_status();
}

Status validate_silu_and_mul(Device device, const Tensor& x, const Tensor& out) {
  const char* op = "silu_and_mul";
  SW_RETURN_IF_ERROR(check_float(device, op, "x", x, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, 2));
  const int64_t t = x.dim(0), i2 = x.dim(1);
  if (i2 % 2 != 0)
    return invalid_argument("silu_and_mul: x must be [T, 2I] (gate then up), got {}", desc(x));
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, {t, i2 / 2}));
  SW_RETURN_IF_ERROR(check_same_dtype(op, "out", out, x.dtype()));
  return Status::ok_status();
}

Status validate_embedding(Device device, const Tensor& ids, const Tensor& table,
                          const Tensor& out) {
  const char* op = "embedding";
  SW_RETURN_IF_ERROR(check_int32(device, op, "ids", ids, 1));
  SW_RETURN_IF_ERROR(check_float(device, op, "table", table, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, 2));
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, {ids.dim(0), table.dim(1)}));
  return Status::ok_status();
}

Status validate_add(Device device, const Tensor& x, const Tensor& y) {
  SW_RETURN_IF_ERROR(check_float(device, "add", "x", x, -1));
  SW_RETURN_IF_ERROR(check_float(device, "add", "y", y, -1));
  SW_RETURN_IF_ERROR(check_shape("add", "y", y, x.shape()));
  SW_RETURN_IF_ERROR(check_same_dtype("add", "y", y, x.dtype()));
  return Status::ok_status();
}

Status validate_convert(Device device, const Tensor& src, const Tensor& dst) {
  SW_RETURN_IF_ERROR(check_tensor(device, "convert", "src", src, -1));
  SW_RETURN_IF_ERROR(check_tensor(device, "convert", "dst", dst, -1));
  if (src.numel() != dst.numel())
    return invalid_argument("convert: src {} and dst {} need the same numel", desc(src), desc(dst));
  return Status::ok_status();
}

Status validate_convert_dtypes(const Tensor& src, const Tensor& dst) {
  if (!is_float(src.dtype()) || !is_float(dst.dtype()))
    return invalid_argument("convert: only float32/bfloat16/float16 conversions, got {} -> {}",
                            desc(src), desc(dst));
  return Status::ok_status();
}

// ---- paged KV cache and attention
// ----------------------------------------------------------------

Status validate_kv_cache_write(Device device, const Tensor& k, const Tensor& v,
                               const Tensor& slot_mapping, const Tensor& k_cache,
                               const Tensor& v_cache) {
  const char* op = "kv_cache_write";
  SW_RETURN_IF_ERROR(check_float(device, op, "k", k, 3));
  SW_RETURN_IF_ERROR(check_float(device, op, "v", v, 3));
  SW_RETURN_IF_ERROR(check_int32(device, op, "slot_mapping", slot_mapping, 1));
  SW_RETURN_IF_ERROR(check_float(device, op, "k_cache", k_cache, 4));
  SW_RETURN_IF_ERROR(check_float(device, op, "v_cache", v_cache, 4));
  const int64_t t = k.dim(0), hk = k.dim(1), d = k.dim(2);
  const int64_t nb = k_cache.dim(0), bs = k_cache.dim(1);
  SW_RETURN_IF_ERROR(check_shape(op, "v", v, k.shape()));
  SW_RETURN_IF_ERROR(check_shape(op, "slot_mapping", slot_mapping, {t}));
  SW_RETURN_IF_ERROR(check_shape(op, "k_cache", k_cache, {nb, bs, hk, d}));
  SW_RETURN_IF_ERROR(check_shape(op, "v_cache", v_cache, k_cache.shape()));
  return Status::ok_status();
}

namespace {

// q [T or B, Hq, D] against the paged caches [num_blocks, block_size, Hk, D].
Status check_caches(Device device, const char* op, const Tensor& q, const Tensor& k_cache,
                    const Tensor& v_cache) {
  SW_RETURN_IF_ERROR(check_float(device, op, "q", q, 3));
  SW_RETURN_IF_ERROR(check_float(device, op, "k_cache", k_cache, 4));
  SW_RETURN_IF_ERROR(check_float(device, op, "v_cache", v_cache, 4));
  SW_RETURN_IF_ERROR(check_shape(op, "v_cache", v_cache, k_cache.shape()));
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
  return Status::ok_status();
}

}  // namespace

Status validate_attention_prefill(Device device, const Tensor& q, const Tensor& k_cache,
                                  const Tensor& v_cache, const Tensor& query_start_loc,
                                  const Tensor& seq_lens, const Tensor& block_tables,
                                  const Tensor& out) {
  const char* op = "attention_prefill";
  SW_RETURN_IF_ERROR(check_caches(device, op, q, k_cache, v_cache));
  SW_RETURN_IF_ERROR(check_int32(device, op, "query_start_loc", query_start_loc, 1));
  SW_RETURN_IF_ERROR(check_int32(device, op, "seq_lens", seq_lens, 1));
  SW_RETURN_IF_ERROR(check_int32(device, op, "block_tables", block_tables, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, 3));
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, q.shape()));
  const int64_t b = seq_lens.dim(0);
  SW_RETURN_IF_ERROR(check_shape(op, "query_start_loc", query_start_loc, {b + 1}));
  if (block_tables.dim(0) != b)
    return invalid_argument("{}: block_tables {} must have B={} rows (seq_lens {})", op,
                            desc(block_tables), b, desc(seq_lens));
  return Status::ok_status();
}

Status validate_attention_decode(Device device, const Tensor& q, const Tensor& k_cache,
                                 const Tensor& v_cache, const Tensor& seq_lens,
                                 const Tensor& block_tables, const Tensor& out) {
  const char* op = "attention_decode";
  SW_RETURN_IF_ERROR(check_caches(device, op, q, k_cache, v_cache));
  SW_RETURN_IF_ERROR(check_int32(device, op, "seq_lens", seq_lens, 1));
  SW_RETURN_IF_ERROR(check_int32(device, op, "block_tables", block_tables, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, 3));
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, q.shape()));
  const int64_t b = q.dim(0);
  SW_RETURN_IF_ERROR(check_shape(op, "seq_lens", seq_lens, {b}));
  if (block_tables.dim(0) != b)
    return invalid_argument("{}: block_tables {} must have B={} rows (q {})", op,
                            desc(block_tables), b, desc(q));
  return Status::ok_status();
}

// ---- MoE ---------------------------------------------------------------------------------------

Status validate_router_topk(Device device, const Tensor& logits, int k, const Tensor& topk_ids,
                            const Tensor& topk_weights, const Tensor* topk_probs) {
  const char* op = "router_topk";
  SW_RETURN_IF_ERROR(check_float(device, op, "logits", logits, 2));
  SW_RETURN_IF_ERROR(check_int32(device, op, "topk_ids", topk_ids, 2));
  SW_RETURN_IF_ERROR(check_tensor(device, op, "topk_weights", topk_weights, 2));
  const int64_t t = logits.dim(0), e = logits.dim(1);
  if (k <= 0 || k > e)
    return invalid_argument("router_topk: k={} must be in [1, E={}] for logits {}", k, e,
                            desc(logits));
  SW_RETURN_IF_ERROR(check_shape(op, "topk_ids", topk_ids, {t, k}));
  SW_RETURN_IF_ERROR(check_shape(op, "topk_weights", topk_weights, {t, k}));
  if (topk_weights.dtype() != DType::kF32)
    return invalid_argument("router_topk: topk_weights must be float32, got {}",
                            desc(topk_weights));
  if (topk_probs) {
    SW_RETURN_IF_ERROR(check_tensor(device, op, "topk_probs", *topk_probs, 2));
    SW_RETURN_IF_ERROR(check_shape(op, "topk_probs", *topk_probs, {t, k}));
    if (topk_probs->dtype() != DType::kF32)
      return invalid_argument("router_topk: topk_probs must be float32, got {}", desc(*topk_probs));
  }
  return Status::ok_status();
}

Status validate_moe_assign(Device device, const Tensor& topk_ids, const Tensor& priority_weights,
                           int num_experts, const Tensor& dest_rows, const Tensor& expert_offsets) {
  const char* op = "moe_assign";
  SW_RETURN_IF_ERROR(check_int32(device, op, "topk_ids", topk_ids, 2));
  SW_RETURN_IF_ERROR(check_tensor(device, op, "priority_weights", priority_weights, 2));
  SW_RETURN_IF_ERROR(check_int32(device, op, "dest_rows", dest_rows, 2));
  SW_RETURN_IF_ERROR(check_int32(device, op, "expert_offsets", expert_offsets, 1));
  if (priority_weights.dtype() != DType::kF32)
    return invalid_argument("moe_assign: priority_weights must be float32, got {}",
                            desc(priority_weights));
  if (num_experts < 0)
    return invalid_argument("moe_assign: num_experts={} is negative", num_experts);
  SW_RETURN_IF_ERROR(check_shape(op, "priority_weights", priority_weights, topk_ids.shape()));
  SW_RETURN_IF_ERROR(check_shape(op, "dest_rows", dest_rows, topk_ids.shape()));
  SW_RETURN_IF_ERROR(check_shape(op, "expert_offsets", expert_offsets, {num_experts + 1}));
  return Status::ok_status();
}

Status validate_moe_permute(Device device, const Tensor& x, const Tensor& dest_rows,
                            const Tensor& out) {
  const char* op = "moe_permute";
  SW_RETURN_IF_ERROR(check_float(device, op, "x", x, 2));
  SW_RETURN_IF_ERROR(check_int32(device, op, "dest_rows", dest_rows, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, 2));
  const int64_t t = x.dim(0), h = x.dim(1);
  if (dest_rows.dim(0) != t)
    return invalid_argument("moe_permute: dest_rows {} must have T={} rows like x {}",
                            desc(dest_rows), t, desc(x));
  if (out.dim(1) != h)
    return invalid_argument("moe_permute: out {} must have H={} columns like x {}", desc(out), h,
                            desc(x));
  return Status::ok_status();
}

Status validate_moe_unpermute(Device device, const Tensor& y, const Tensor& dest_rows,
                              const Tensor& weights, const Tensor& out) {
  const char* op = "moe_unpermute";
  SW_RETURN_IF_ERROR(check_float(device, op, "y", y, 2));
  SW_RETURN_IF_ERROR(check_int32(device, op, "dest_rows", dest_rows, 2));
  SW_RETURN_IF_ERROR(check_tensor(device, op, "weights", weights, 2));
  SW_RETURN_IF_ERROR(check_float(device, op, "out", out, 2));
  if (weights.dtype() != DType::kF32)
    return invalid_argument("moe_unpermute: weights must be float32, got {}", desc(weights));
  SW_RETURN_IF_ERROR(check_shape(op, "weights", weights, dest_rows.shape()));
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, {dest_rows.dim(0), y.dim(1)}));
  return Status::ok_status();
}

// ---- sampling
// ------------------------------------------------------------------------------------

Status validate_sample(Device device, const Tensor& logits, const std::vector<SamplingRow>& rows,
                       const Tensor& out) {
  const char* op = "sample";
  SW_RETURN_IF_ERROR(check_float(device, op, "logits", logits, 2));
  SW_RETURN_IF_ERROR(check_int32(device, op, "out", out, 1));
  const int64_t b = logits.dim(0), v = logits.dim(1);
  SW_RETURN_IF_ERROR(check_shape(op, "out", out, {b}));
  if (static_cast<int64_t>(rows.size()) != b)
    return invalid_argument("sample: {} SamplingRows for logits {}", rows.size(), desc(logits));
  if (v == 0 && b > 0) return invalid_argument("sample: logits {} has no vocab", desc(logits));
  return Status::ok_status();
}

}  // namespace sw::kernels

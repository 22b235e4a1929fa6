// Argument checks shared by every Backend implementation (the CPU backend and the CUDA host
// code): generic tensor checks taking the backend's device, and one validate_<op>() per op
// with the shape/dtype checks of kernels/backend.h that every backend performs identically.
// A backend adds its own limits (e.g. the CUDA kernels' int32 range) after the shared call.
// Every failure is invalid_argument naming the op and the offending tensor.
// Host code only (uses fmt): never include this from a .cu file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"

namespace sw::kernels {

inline std::string desc(const Tensor& t) { return t.describe(); }

// ---- generic checks ------------------------------------------------------------------------
// ok unless `t` lives on `device` with ndim `ndim` (-1: any) and has data when non-empty.
Status check_tensor(Device device, const char* op, const char* name, const Tensor& t, int ndim);
// check_tensor, plus a float dtype (float32/bfloat16/float16).
Status check_float(Device device, const char* op, const char* name, const Tensor& t, int ndim);
// check_tensor, plus int32.
Status check_int32(Device device, const char* op, const char* name, const Tensor& t, int ndim);
// check_tensor, plus float32.
Status check_f32(Device device, const char* op, const char* name, const Tensor& t, int ndim);
Status check_shape(const char* op, const char* name, const Tensor& t, const Shape& expected);
Status check_same_dtype(const char* op, const char* name, const Tensor& t, DType expected);

// ---- per-op validation (shapes and dtypes as documented in kernels/backend.h) --------------
Status validate_gemm(Device device, const Tensor& x, const Tensor& w, const Tensor& out,
                     const Tensor* bias);
Status validate_grouped_gemm(Device device, const Tensor& x, const Tensor& w,
                             const Tensor& expert_offsets, const Tensor& out);
// The E + 1 expert offsets (read on the host): start at 0, non-decreasing, <= x.dim(0).
Status validate_expert_offsets(const int32_t* offs, int64_t num_experts, const Tensor& x);

Status validate_rms_norm(Device device, const Tensor& x, const Tensor& weight, const Tensor& out,
                         const Tensor* residual);
Status validate_rope(Device device, const Tensor& q, const Tensor& k, const Tensor& positions,
                     const Tensor& inv_freq);
Status validate_silu_and_mul(Device device, const Tensor& x, const Tensor& out);
Status validate_embedding(Device device, const Tensor& ids, const Tensor& table, const Tensor& out);
Status validate_add(Device device, const Tensor& x, const Tensor& y);
// Both tensors on `device` with the same numel (any dtypes: equal dtypes are a plain copy).
Status validate_convert(Device device, const Tensor& src, const Tensor& dst);
// A dtype-changing convert: float32/bfloat16/float16 only.
Status validate_convert_dtypes(const Tensor& src, const Tensor& dst);

Status validate_kv_cache_write(Device device, const Tensor& k, const Tensor& v,
                               const Tensor& slot_mapping, const Tensor& k_cache,
                               const Tensor& v_cache);
Status validate_attention_prefill(Device device, const Tensor& q, const Tensor& k_cache,
                                  const Tensor& v_cache, const Tensor& query_start_loc,
                                  const Tensor& seq_lens, const Tensor& block_tables,
                                  const Tensor& out);
Status validate_attention_decode(Device device, const Tensor& q, const Tensor& k_cache,
                                 const Tensor& v_cache, const Tensor& seq_lens,
                                 const Tensor& block_tables, const Tensor& out);

Status validate_router_topk(Device device, const Tensor& logits, int k, const Tensor& topk_ids,
                            const Tensor& topk_weights, const Tensor* topk_probs);
Status validate_moe_assign(Device device, const Tensor& topk_ids, const Tensor& priority_weights,
                           int num_experts, const Tensor& dest_rows, const Tensor& expert_offsets);
Status validate_moe_permute(Device device, const Tensor& x, const Tensor& dest_rows,
                            const Tensor& out);
Status validate_moe_unpermute(Device device, const Tensor& y, const Tensor& dest_rows,
                              const Tensor& weights, const Tensor& out);

Status validate_sample(Device device, const Tensor& logits, const std::vector<SamplingRow>& rows,
                       const Tensor& out);

}  // namespace sw::kernels

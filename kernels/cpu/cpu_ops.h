// Internal to the CPU backend: the op functions behind CpuBackend's virtuals and the float32
// row helpers they share (argument checks, shared with the CUDA backend: kernels/op_checks.h).
// Add an op: declare it here, define it in the cpu_*.cpp file of its family, and forward to it
// from cpu_backend.cpp.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "kernels/op_checks.h"

namespace sw::kernels::cpu {

// ---- float32 row access -------------------------------------------------------------------
// Reads n elements starting at element `offset` of `base` (any float dtype) as float32.
void load_row(const void* base, DType dtype, int64_t offset, int64_t n, float* dst);
// Writes n float32 values, rounded to `dtype` (round-to-nearest-even, as common/dtype.h).
void store_row(void* base, DType dtype, int64_t offset, int64_t n, const float* src);
// Whole tensor as float32 (scratch copy; no copy for float32 where the caller can avoid it).
std::vector<float> to_f32(const Tensor& t);

// ---- ops (semantics: kernels/backend.h) ----------------------------------------------------
Status gemm(const Tensor& x, const Tensor& w, Tensor& out, const Tensor* bias, bool accumulate);
Status grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& expert_offsets, Tensor& out);

Status rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out, Tensor* residual);
Status rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq,
            RopeLayout layout);
Status silu_and_mul(const Tensor& x, Tensor& out);
Status embedding(const Tensor& ids, const Tensor& table, int64_t vocab_offset, Tensor& out);
Status add(Tensor& x, const Tensor& y);
Status convert(const Tensor& src, Tensor& dst);

Status kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slot_mapping, Tensor& k_cache,
                      Tensor& v_cache);
Status attention_prefill(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                         const Tensor& query_start_loc, const Tensor& seq_lens,
                         const Tensor& block_tables, const AttentionParams& params, Tensor& out);
Status attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& seq_lens, const Tensor& block_tables,
                        const AttentionParams& params, Tensor& out);

Status router_topk(const Tensor& logits, int k, bool renormalize, Tensor& topk_ids,
                   Tensor& topk_weights, Tensor* topk_probs);
Status moe_assign(const Tensor& topk_ids, const Tensor& priority_weights, int num_experts,
                  int64_t capacity, DropPolicy policy, Tensor& dest_rows, Tensor& expert_offsets);
Status moe_permute(const Tensor& x, const Tensor& dest_rows, Tensor& out);
Status moe_unpermute(const Tensor& y, const Tensor& dest_rows, const Tensor& weights, Tensor& out);

Status sample(const Tensor& logits, const std::vector<SamplingRow>& rows, Tensor& out);

}  // namespace sw::kernels::cpu

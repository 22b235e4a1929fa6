// CPU MoE ops: router top-k, capacity/drop-policy slot assignment, permute to expert-major
// rows and the weighted unpermute. moe_assign is sequential by design: its output is a pure
// function of the inputs that every backend must reproduce exactly.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kernels/cpu/cpu_ops.h"

namespace sw::kernels::cpu {

// Selection is by logit (softmax is monotone), so the chosen ids never depend on how a
// backend rounds exp(); ties go to the lower expert id. Weights are the float32 softmax;
// topk_probs keeps them as they are before renormalisation.
Status router_topk(const Tensor& logits, int k, bool renormalize, Tensor& topk_ids,
                   Tensor& topk_weights, Tensor* topk_probs) {
  SW_RETURN_IF_ERROR(
      validate_router_topk(Device::kCpu, logits, k, topk_ids, topk_weights, topk_probs));
  const int64_t t = logits.dim(0), e = logits.dim(1);
  int32_t* ids = topk_ids.data_as<int32_t>();
  float* wts = topk_weights.data_as<float>();
  float* probs = topk_probs ? topk_probs->data_as<float>() : nullptr;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(e));
    std::vector<int32_t> order(static_cast<size_t>(e));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < t; ++r) {
      load_row(logits.data(), logits.dtype(), r * e, e, row.data());
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return row[a] > row[b] || (row[a] == row[b] && a < b);
      });
      const float m = row[order[0]];
      float denom = 0.f;
      for (int64_t i = 0; i < e; ++i) denom += std::exp(row[i] - m);
      float kept = 0.f;
      for (int j = 0; j < k; ++j) {
        ids[r * k + j] = order[j];
        wts[r * k + j] = std::exp(row[order[j]] - m) / denom;
        kept += wts[r * k + j];
        if (probs) probs[r * k + j] = wts[r * k + j];
      }
      if (renormalize)
        for (int j = 0; j < k; ++j) wts[r * k + j] /= kept;
    }
  }
  return Status::ok_status();
}

Status moe_assign(const Tensor& topk_ids, const Tensor& priority_weights, int num_experts,
                  int64_t capacity, DropPolicy policy, Tensor& dest_rows, Tensor& expert_offsets) {
  SW_RETURN_IF_ERROR(validate_moe_assign(Device::kCpu, topk_ids, priority_weights, num_experts,
                                         dest_rows, expert_offsets));
  const int64_t t = topk_ids.dim(0), k = topk_ids.dim(1);
  const int32_t* ids = topk_ids.data_as<int32_t>();
  const float* w = priority_weights.data_as<float>();

  // Priority scores use all k weights, including choices of other ranks' experts, so every
  // EP rank orders a token the same way; kPrioritySum adds them in float32 in choice order
  // (j = 0, 1, ...), which other backends must copy for ties to break identically.
  std::vector<int64_t> order(static_cast<size_t>(t));
  std::iota(order.begin(), order.end(), 0);
  if (policy != DropPolicy::kOrder) {
    std::vector<float> score(static_cast<size_t>(t));
    for (int64_t i = 0; i < t; ++i) {
      float s = policy == DropPolicy::kPriorityMax ? -std::numeric_limits<float>::infinity() : 0.f;
      for (int64_t j = 0; j < k; ++j)
        s = policy == DropPolicy::kPriorityMax ? std::max(s, w[i * k + j]) : s + w[i * k + j];
      score[i] = s;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  }

  int32_t* dest = dest_rows.data_as<int32_t>();
  std::vector<int64_t> count(static_cast<size_t>(num_experts), 0);
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t i : order) {
      const int32_t e = ids[i * k + j];
      if (e < 0 || e >= num_experts) {
        dest[i * k + j] = -1;
        continue;
      }
      const int64_t slot = count[e]++;
      // Slot for now; turned into a row once the offsets are known.
      dest[i * k + j] = (capacity >= 0 && slot >= capacity) ? -1 : static_cast<int32_t>(slot);
    }
  }
  int32_t* offs = expert_offsets.data_as<int32_t>();
  offs[0] = 0;
  for (int e = 0; e < num_experts; ++e) {
    const int64_t kept = capacity >= 0 ? std::min(count[e], capacity) : count[e];
    offs[e + 1] = offs[e] + static_cast<int32_t>(kept);
  }
  for (int64_t i = 0; i < t * k; ++i)
    if (dest[i] >= 0) dest[i] += offs[ids[i]];
  return Status::ok_status();
}

Status moe_permute(const Tensor& x, const Tensor& dest_rows, Tensor& out) {
  SW_RETURN_IF_ERROR(validate_moe_permute(Device::kCpu, x, dest_rows, out));
  const int64_t t = x.dim(0), h = x.dim(1), k = dest_rows.dim(1), r = out.dim(0);
  const int32_t* dest = dest_rows.data_as<int32_t>();
  for (int64_t i = 0; i < t * k; ++i)
    if (dest[i] >= r)
      return invalid_argument("moe_permute: dest_rows[{}, {}]={} past out {}", i / k, i % k,
                              dest[i], desc(out));
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(h));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < t; ++i) {
      load_row(x.data(), x.dtype(), i * h, h, row.data());
      for (int64_t j = 0; j < k; ++j)
        if (dest[i * k + j] >= 0)
          store_row(out.data(), out.dtype(), dest[i * k + j] * h, h, row.data());
    }
  }
  return Status::ok_status();
}

Status moe_unpermute(const Tensor& y, const Tensor& dest_rows, const Tensor& weights, Tensor& out) {
  SW_RETURN_IF_ERROR(validate_moe_unpermute(Device::kCpu, y, dest_rows, weights, out));
  const int64_t t = dest_rows.dim(0), k = dest_rows.dim(1), r = y.dim(0), h = y.dim(1);
  const int32_t* dest = dest_rows.data_as<int32_t>();
  const float* w = weights.data_as<float>();
  for (int64_t i = 0; i < t * k; ++i)
    if (dest[i] >= r)
      return invalid_argument("moe_unpermute: dest_rows[{}, {}]={} past y {}", i / k, i % k,
                              dest[i], desc(y));
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<size_t>(h)), row(static_cast<size_t>(h));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < t; ++i) {
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t d = dest[i * k + j];
        if (d < 0) continue;
        load_row(y.data(), y.dtype(), d * h, h, row.data());
        for (int64_t c = 0; c < h; ++c) acc[c] += w[i * k + j] * row[c];
      }
      store_row(out.data(), out.dtype(), i * h, h, acc.data());
    }
  }
  return Status::ok_status();
}

}  // namespace sw::kernels::cpu

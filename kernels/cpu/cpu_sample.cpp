// CPU sampling: greedy argmax or temperature / top-k / top-p with one Philox draw per row.
// The procedure below is THE definition other backends must reproduce token for token:
//   1. temperature <= 0: argmax of the logits, ties -> lowest id (NaNs never win).
//   2. z_i = logit_i / temperature (float32); m = max z; p_i = expf(z_i - m) (unnormalised).
//   3. order ids by descending logit, ties by lower id (exact keys, so the order never
//      depends on exp rounding; it is also descending p).
//   4. top_k > 0: keep the first min(top_k, V) of that order.
//   5. c_r = p_0 + ... + p_r over the kept order, summed left to right in float32. top_p < 1:
//      keep the first n entries, n the smallest with c_{n-1} >= top_p * c_last (n >= 1).
//   6. u = philox_uniform(seed, offset, 0) in (0, 1]; target = u * c_{n-1}; the token is
//      the first r < n with c_r >= target (r = n - 1 if rounding leaves none).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/rng.h"
#include "kernels/cpu/cpu_ops.h"

namespace sw::kernels::cpu {
namespace {

int32_t argmax(const std::vector<float>& row) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(row.size()); ++i)
    if (row[i] > row[best] || (std::isnan(row[best]) && !std::isnan(row[i]))) best = i;
  return best;
}

int32_t sample_row(const std::vector<float>& logits, const SamplingRow& cfg,
                   std::vector<int32_t>& order, std::vector<float>& cum) {
  if (!(cfg.temperature > 0.f)) return argmax(logits);
  const int64_t v = static_cast<int64_t>(logits.size());
  const float m = logits[argmax(logits)] / cfg.temperature;
  if (!std::isfinite(m)) return argmax(logits);
  order.resize(static_cast<size_t>(v));
  std::iota(order.begin(), order.end(), 0);
  int64_t n = v;
  if (cfg.top_k > 0) n = std::min<int64_t>(n, cfg.top_k);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  if (n < v) {
    std::partial_sort(order.begin(), order.begin() + n, order.end(), by_logit);
  } else {
    std::sort(order.begin(), order.end(), by_logit);
  }
  cum.resize(static_cast<size_t>(n));
  float c = 0.f;
  for (int64_t r = 0; r < n; ++r) {
    c += std::exp(logits[order[r]] / cfg.temperature - m);
    cum[r] = c;
  }
  if (cfg.top_p < 1.f) {
    const float threshold = cfg.top_p * cum[n - 1];
    int64_t keep = 1;
    while (keep < n && cum[keep - 1] < threshold) ++keep;
    n = keep;
  }
  const float target = philox_uniform(cfg.seed, cfg.offset, 0) * cum[n - 1];
  for (int64_t r = 0; r < n; ++r)
    if (cum[r] >= target) return order[r];
  return order[n - 1];
}

}  // namespace

Status sample(const Tensor& logits, const std::vector<SamplingRow>& rows, Tensor& out) {
  SW_RETURN_IF_ERROR(validate_sample(Device::kCpu, logits, rows, out));
  const int64_t b = logits.dim(0), v = logits.dim(1);
  int32_t* dst = out.data_as<int32_t>();
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(v)), cum;
    std::vector<int32_t> order;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < b; ++i) {
      load_row(logits.data(), logits.dtype(), i * v, v, row.data());
      dst[i] = sample_row(row, rows[i], order, cum);
    }
  }
  return Status::ok_status();
}

}  // namespace sw::kernels::cpu

// A naive float64 MoE FFN for tests, written from DESIGN.md's "MoE routing" and nothing in
// moe/ or kernels/: softmax over all experts, top-k (ties -> lower id), optional
// renormalisation, batch-priority order by the router's probabilities or by the combine
// weights, GShard top-1-first slots, then the SiLU-gated experts and the weighted sum.
// Header-only so several test drivers share it; extend it when the routing rules grow.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace sw::testing_ref {

enum class RefPolicy { kOrder, kRouterMax, kRouterSum, kCombineMax, kCombineSum };

struct RefRouting {
  std::vector<int32_t> ids;         // [T, k]
  std::vector<double> probs;        // [T, k] softmax over all experts, before renormalisation
  std::vector<double> combine;      // [T, k] the weights the output is summed with
  std::vector<int32_t> kept;        // [T, k] 1 = the assignment got a slot
  std::vector<int32_t> visit;       // token order of the slot rounds
  std::vector<int64_t> per_expert;  // kept assignments per expert
};

// logits: [T, E] row-major; capacity < 0: no limit.
inline RefRouting ref_route(const std::vector<double>& logits, int64_t T, int E, int k,
                            bool renormalize, int64_t capacity, RefPolicy policy) {
  RefRouting r;
  r.ids.assign(static_cast<size_t>(T * k), 0);
  r.probs.assign(r.ids.size(), 0.0);
  r.combine.assign(r.ids.size(), 0.0);
  r.kept.assign(r.ids.size(), 0);
  for (int64_t t = 0; t < T; ++t) {
    const double* row = &logits[static_cast<size_t>(t * E)];
    double m = row[0];
    for (int e = 1; e < E; ++e) m = std::max(m, row[e]);
    double denom = 0;
    for (int e = 0; e < E; ++e) denom += std::exp(row[e] - m);
    std::vector<int32_t> idx(static_cast<size_t>(E));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    double mass = 0;
    for (int j = 0; j < k; ++j) {
      r.ids[t * k + j] = idx[j];
      r.probs[t * k + j] = std::exp(row[idx[j]] - m) / denom;
      mass += r.probs[t * k + j];
    }
    for (int j = 0; j < k; ++j)
      r.combine[t * k + j] = renormalize ? r.probs[t * k + j] / mass : r.probs[t * k + j];
  }
  std::vector<double> score(static_cast<size_t>(T), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      const bool router = policy == RefPolicy::kRouterMax || policy == RefPolicy::kRouterSum;
      const double w = router ? r.probs[t * k + j] : r.combine[t * k + j];
      const bool max = policy == RefPolicy::kRouterMax || policy == RefPolicy::kCombineMax;
      score[t] = max ? (j == 0 ? w : std::max(score[t], w)) : score[t] + w;
    }
  r.visit.resize(static_cast<size_t>(T));
  std::iota(r.visit.begin(), r.visit.end(), 0);
  if (policy != RefPolicy::kOrder)
    std::stable_sort(r.visit.begin(), r.visit.end(),
                     [&](int32_t a, int32_t b) { return score[a] > score[b]; });
  r.per_expert.assign(static_cast<size_t>(E), 0);
  std::vector<int64_t> taken(static_cast<size_t>(E), 0);
  for (int j = 0; j < k; ++j)
    for (int32_t t : r.visit) {
      const int32_t e = r.ids[t * k + j];
      if (capacity < 0 || taken[e] < capacity) {
        r.kept[t * k + j] = 1;
        ++r.per_expert[e];
      }
      ++taken[e];
    }
  return r;
}

// out[T, H] = sum over kept (t, j) of combine * down_e(silu(gate_e x) * up_e x).
// x: [T, H]; gate_up: [E, 2I, H] (gate rows first); down: [E, H, I].
inline std::vector<double> ref_moe_ffn(const std::vector<double>& x, int64_t T, int64_t H,
                                       int64_t I, const std::vector<double>& gate_up,
                                       const std::vector<double>& down, const RefRouting& r,
                                       int k) {
  std::vector<double> out(static_cast<size_t>(T * H), 0.0), act(static_cast<size_t>(I));
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      if (!r.kept[t * k + j]) continue;
      const int64_t e = r.ids[t * k + j];
      for (int64_t i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (int64_t h = 0; h < H; ++h) {
          g += gate_up[(e * 2 * I + i) * H + h] * x[t * H + h];
          u += gate_up[(e * 2 * I + I + i) * H + h] * x[t * H + h];
        }
        act[i] = g / (1.0 + std::exp(-g)) * u;
      }
      for (int64_t h = 0; h < H; ++h) {
        double y = 0;
        for (int64_t i = 0; i < I; ++i) y += down[(e * H + h) * I + i] * act[i];
        out[t * H + h] += r.combine[t * k + j] * y;
      }
    }
  return out;
}

}  // namespace sw::testing_ref

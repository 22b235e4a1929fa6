// Alpha-beta estimates for flat and hierarchical all-to-all; linear least-squares fit.
#include "comm/cost_model.h"

#include <algorithm>
#include <cmath>

namespace sw::comm {

double CostModel::flat_seconds(const Topology& t, double m) const {
  const int S = t.size();
  double worst = 0;
  for (int node = 0; node < t.num_nodes(); ++node) {
    const int g = t.num_local(node);
    double s = (g - 1) * (intra_node.alpha_s + m / intra_node.beta_bytes_per_s) +
               (S - g) * (inter_node.alpha_s + m / inter_node.beta_bytes_per_s);
    worst = std::max(worst, s);
  }
  return worst;
}

double CostModel::hierarchical_seconds(const Topology& t, double m) const {
  const int S = t.size();
  double worst = 0;
  for (int r = 0; r < S; ++r) {
    const int k = t.node_of(r), g = t.num_local(k);
    // Lanes this rank serves and the remote destinations in them (same rule as the algorithm).
    int remote = 0, lanes_total = 0;
    for (int d = 0; d < S; ++d) {
      if (t.local_index(d) % g != t.local_index(r)) continue;
      ++lanes_total;
      if (t.node_of(d) != k) ++remote;
    }
    double phase1 =
        (g - 1) * (intra_node.alpha_s + (double(S) / g) * m / intra_node.beta_bytes_per_s);
    double phase2 = remote * (inter_node.alpha_s + g * m / inter_node.beta_bytes_per_s);
    (void)lanes_total;
    worst = std::max(worst, phase1 + phase2);
  }
  return worst;
}

AllToAllAlgorithm choose_all_to_all(AllToAllAlgorithm requested, const Topology& t,
                                    double bytes_per_pair, const CostModel& model) {
  if (requested != AllToAllAlgorithm::kAuto) return requested;
  if (t.num_nodes() <= 1 || t.num_nodes() == t.size()) return AllToAllAlgorithm::kFlat;
  return model.hierarchical_seconds(t, bytes_per_pair) < model.flat_seconds(t, bytes_per_pair)
             ? AllToAllAlgorithm::kHierarchical
             : AllToAllAlgorithm::kFlat;
}

Result<AlphaBetaFit> fit_alpha_beta(std::span<const double> x, std::span<const double> y) {
  const size_t n = x.size();
  if (n < 2 || y.size() != n)
    return invalid_argument("fit_alpha_beta: need >= 2 (bytes, seconds) samples, got {}/{}", n,
                            y.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  double sxx = 0, sxy = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx <= 0) return invalid_argument("fit_alpha_beta: all samples have the same size");
  double slope = sxy / sxx;  // seconds per byte
  double alpha = my - slope * mx;
  AlphaBetaFit f;
  f.link.alpha_s = std::max(0.0, alpha);
  f.link.beta_bytes_per_s = slope > 0 ? 1.0 / slope : INFINITY;
  f.r2 = syy > 0 ? (sxy * sxy) / (sxx * syy) : 1.0;
  return f;
}

}  // namespace sw::comm

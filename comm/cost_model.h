// Alpha-beta cost model for choosing the all-to-all algorithm (comm.all_to_all = auto), and
// the least-squares fit that comm_bench uses to measure alpha and beta per link class.
// Extend: add a term (e.g. the reorder's memcpy) to both estimates, not to one of them.
#pragma once

#include <span>

#include "comm/options.h"
#include "comm/topology.h"

namespace sw::comm {

struct CostModel {
  LinkCost intra_node;
  LinkCost inter_node;
  static CostModel from_options(const CommOptions& o) { return {o.intra_node, o.inter_node}; }

  // Seconds for the slowest rank when every (source, destination) pair moves
  // `bytes_per_pair` bytes; messages of one rank are assumed serialized.
  double flat_seconds(const Topology& t, double bytes_per_pair) const;
  double hierarchical_seconds(const Topology& t, double bytes_per_pair) const;
};

// flat or hierarchical for `requested`; auto compares the two estimates. One node, or one
// rank per node, is always flat (the two phases would degenerate into the flat exchange).
AllToAllAlgorithm choose_all_to_all(AllToAllAlgorithm requested, const Topology& t,
                                    double bytes_per_pair, const CostModel& model);

struct AlphaBetaFit {
  LinkCost link;
  double r2 = 0;  // coefficient of determination of seconds ~ alpha + bytes / beta
};
// Least squares of seconds = alpha + bytes / beta over at least two distinct sizes.
Result<AlphaBetaFit> fit_alpha_beta(std::span<const double> bytes, std::span<const double> seconds);

}  // namespace sw::comm

// HierarchicalAllToAll: all_to_all_v in two exchanges that respect node boundaries, with the
// flat op's exact semantics for any counts and any node layout.
//   route: the block from source s to destination d = (node m, local index l) goes first to
//          the forwarder on s's node k with local index l mod g_k (phase 1, intra-node), then
//          from that forwarder straight to d (phase 2, inter-node). On uniform nodes the
//          forwarder of lane l is local rank l and phase 2 runs among the ranks with the same
//          local index; a node with fewer ranks lets each of its ranks serve several lanes
//          (l, l + g_k, ...), so destinations whose local index the node lacks are still
//          reached in two hops. Then each rank scatters what arrived into recv (reorder).
//   cost:  (g_k - 1) + (#lanes served x remote nodes) messages per rank; (g - 1) + (n - 1)
//          for uniform nodes, instead of S - 1.
// Extend: a new phase-2 schedule only changes forwarder_of() and the plan it drives.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "comm/communicator.h"

namespace sw::comm {

class HierarchicalAllToAll {
 public:
  // Collective over `group`: builds the node-local sub-communicator once. `group` must
  // outlive this object.
  static Result<std::unique_ptr<HierarchicalAllToAll>> create(Communicator& group);

  // The counts-dependent part, reusable while the counts do not change (e.g. the combine
  // of an MoE layer reuses its dispatch's plan with send and recv swapped). Collective:
  // exchanges the send counts inside each node (g - 1 small messages).
  struct Plan {
    std::vector<int64_t> send_counts, recv_counts;  // [S] as given
    std::vector<int> fwd_dests;                     // D(me): destinations I forward for
    std::vector<std::vector<int64_t>> p1_counts;    // [local source][j over fwd_dests]
    std::vector<int64_t> p1_send_counts, p1_send_displs, p1_recv_counts, p1_recv_displs;
    std::vector<int> p2_recv_peers;  // forwarder on every other node that serves me
    int64_t p1_send_total = 0, p1_recv_total = 0, p2_send_total = 0, p2_recv_total = 0;
  };
  Result<Plan> plan(std::span<const int64_t> send_counts, std::span<const int64_t> recv_counts);

  // Same contract as Communicator::all_to_all_v (counts in the plan, displacements here).
  Status execute(const Plan& plan, const void* send, std::span<const int64_t> send_displs,
                 void* recv, std::span<const int64_t> recv_displs, DType dtype);
  // plan() + execute().
  Status run(const void* send, std::span<const int64_t> send_counts,
             std::span<const int64_t> send_displs, void* recv, std::span<const int64_t> recv_counts,
             std::span<const int64_t> recv_displs, DType dtype);

  // Data messages this rank sent in the last execute(), as counted by the transports.
  int64_t last_messages_sent() const { return last_messages_; }
  // Forwarder (group rank) on `node` for destination group rank `dest`.
  int forwarder_of(int node, int dest) const;
  Communicator& node_comm() { return *node_comm_; }

 private:
  HierarchicalAllToAll(Communicator& group, std::unique_ptr<Communicator> node_comm)
      : group_(group), node_comm_(std::move(node_comm)) {}
  std::vector<int> fwd_dests_of(int forwarder) const;  // D(f) in group order

  Communicator& group_;
  std::unique_ptr<Communicator> node_comm_;
  int64_t last_messages_ = 0;
};

}  // namespace sw::comm

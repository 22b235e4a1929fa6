// Hierarchical all-to-all: plan (count exchange), phase 1 (node comm), phase 2 (grouped
// send/recv among lane peers on the group), local reorder. See the header for the route.
#include "comm/hierarchical_all_to_all.h"

#include <cstring>

namespace sw::comm {

Result<std::unique_ptr<HierarchicalAllToAll>> HierarchicalAllToAll::create(Communicator& group) {
  const Topology& t = group.topology();
  const int me = group.rank();
  SW_ASSIGN_OR_RETURN(auto node_comm, group.split(t.node_of(me), t.local_index(me)));
  if (!node_comm || node_comm->size() != t.num_local(t.node_of(me)) ||
      node_comm->rank() != t.local_index(me))
    return internal_error("{}: node sub-communicator does not match the topology {}",
                          group.where("hierarchical_all_to_all"), t.describe());
  return std::unique_ptr<HierarchicalAllToAll>(
      new HierarchicalAllToAll(group, std::move(node_comm)));
}

int HierarchicalAllToAll::forwarder_of(int node, int dest) const {
  const Topology& t = group_.topology();
  return t.rank_at(node, t.local_index(dest) % t.num_local(node));
}

std::vector<int> HierarchicalAllToAll::fwd_dests_of(int forwarder) const {
  const Topology& t = group_.topology();
  std::vector<int> out;
  for (int d = 0; d < group_.size(); ++d)
    if (forwarder_of(t.node_of(forwarder), d) == forwarder) out.push_back(d);
  return out;
}

Result<HierarchicalAllToAll::Plan> HierarchicalAllToAll::plan(
    std::span<const int64_t> send_counts, std::span<const int64_t> recv_counts) {
  const Topology& t = group_.topology();
  const int S = group_.size(), me = group_.rank(), k = t.node_of(me), g = t.num_local(k);
  if (send_counts.size() != size_t(S) || recv_counts.size() != size_t(S))
    return invalid_argument("{}: {} send / {} recv counts, expected {}",
                            group_.where("hierarchical_all_to_all plan"), send_counts.size(),
                            recv_counts.size(), S);
  Plan p;
  p.send_counts.assign(send_counts.begin(), send_counts.end());
  p.recv_counts.assign(recv_counts.begin(), recv_counts.end());
  p.fwd_dests = fwd_dests_of(me);
  const int num_fwd = static_cast<int>(p.fwd_dests.size());

  // Count exchange: tell each local forwarder f my counts for the destinations in D(f).
  std::vector<int64_t> meta_send, meta_sc(g), meta_sd(g), meta_rc(g), meta_rd(g);
  for (int f = 0; f < g; ++f) {
    meta_sd[f] = static_cast<int64_t>(meta_send.size());
    for (int d : fwd_dests_of(t.rank_at(k, f))) meta_send.push_back(send_counts[d]);
    meta_sc[f] = static_cast<int64_t>(meta_send.size()) - meta_sd[f];
    meta_rc[f] = num_fwd;
    meta_rd[f] = int64_t{f} * num_fwd;
  }
  std::vector<int64_t> meta_recv(size_t(g) * num_fwd);
  SW_RETURN_IF_ERROR(node_comm_->all_to_all_v(meta_send.data(), meta_sc, meta_sd, meta_recv.data(),
                                              meta_rc, meta_rd, DType::kI64));
  p.p1_counts.assign(g, std::vector<int64_t>(num_fwd));
  for (int s = 0; s < g; ++s)
    for (int j = 0; j < num_fwd; ++j) p.p1_counts[s][j] = meta_recv[size_t(s) * num_fwd + j];

  // Phase 1 sizes: to forwarder f the sum of my blocks for D(f); from source s its blocks
  // for D(me).
  p.p1_send_counts.resize(g);
  p.p1_send_displs.resize(g);
  p.p1_recv_counts.resize(g);
  p.p1_recv_displs.resize(g);
  for (int f = 0; f < g; ++f) {
    int64_t c = 0;
    for (int d : fwd_dests_of(t.rank_at(k, f))) c += send_counts[d];
    p.p1_send_displs[f] = p.p1_send_total;
    p.p1_send_counts[f] = c;
    p.p1_send_total += c;
    int64_t r = 0;
    for (int j = 0; j < num_fwd; ++j) r += p.p1_counts[f][j];
    p.p1_recv_displs[f] = p.p1_recv_total;
    p.p1_recv_counts[f] = r;
    p.p1_recv_total += r;
  }
  for (int j = 0; j < num_fwd; ++j) {
    if (t.node_of(p.fwd_dests[j]) == k) continue;
    for (int s = 0; s < g; ++s) p.p2_send_total += p.p1_counts[s][j];
  }
  for (int node = 0; node < t.num_nodes(); ++node) {
    if (node == k) continue;
    p.p2_recv_peers.push_back(forwarder_of(node, me));
    for (int s : t.ranks_on_node(node)) p.p2_recv_total += recv_counts[s];
  }
  return p;
}

Status HierarchicalAllToAll::execute(const Plan& p, const void* send,
                                     std::span<const int64_t> send_displs, void* recv,
                                     std::span<const int64_t> recv_displs, DType dtype) {
  const Topology& t = group_.topology();
  const int S = group_.size(), me = group_.rank(), k = t.node_of(me), g = t.num_local(k);
  if (send_displs.size() != size_t(S) || recv_displs.size() != size_t(S))
    return invalid_argument("{}: displacements have {} / {} entries, expected {}",
                            group_.where("hierarchical_all_to_all"), send_displs.size(),
                            recv_displs.size(), S);
  const size_t es = dtype_size(dtype);
  const char* src = static_cast<const char*>(send);
  char* dst = static_cast<char*>(recv);
  const int64_t msgs_before = group_.stats().messages_sent + node_comm_->stats().messages_sent;

  // Pack phase 1: for each local forwarder, my blocks for its destinations in group order.
  std::vector<char> p1_send(p.p1_send_total * es), p1_recv(p.p1_recv_total * es);
  {
    char* out = p1_send.data();
    for (int f = 0; f < g; ++f)
      for (int d : fwd_dests_of(t.rank_at(k, f))) {
        size_t n = p.send_counts[d] * es;
        if (n) std::memcpy(out, src + send_displs[d] * es, n);
        out += n;
      }
  }
  SW_RETURN_IF_ERROR(node_comm_
                         ->all_to_all_v(p1_send.data(), p.p1_send_counts, p.p1_send_displs,
                                        p1_recv.data(), p.p1_recv_counts, p.p1_recv_displs, dtype)
                         .with_context("hierarchical all_to_all phase 1 (intra-node)"));

  // Block offsets inside p1_recv: source s, destination index j.
  const int num_fwd = static_cast<int>(p.fwd_dests.size());
  std::vector<std::vector<int64_t>> off(g, std::vector<int64_t>(num_fwd));
  for (int s = 0; s < g; ++s) {
    int64_t o = p.p1_recv_displs[s];
    for (int j = 0; j < num_fwd; ++j) {
      off[s][j] = o;
      o += p.p1_counts[s][j];
    }
  }
  // Re-pack by destination: for each remote d, the blocks of every local source in order;
  // my own blocks go straight to recv.
  std::vector<char> p2_send(p.p2_send_total * es), p2_recv(p.p2_recv_total * es);
  std::vector<PeerSend> sends;
  {
    char* out = p2_send.data();
    for (int j = 0; j < num_fwd; ++j) {
      const int d = p.fwd_dests[j];
      if (d == me) {
        for (int s = 0; s < g; ++s) {
          size_t n = p.p1_counts[s][j] * es;
          if (n)
            std::memcpy(dst + recv_displs[t.rank_at(k, s)] * es, p1_recv.data() + off[s][j] * es,
                        n);
        }
        continue;
      }
      if (t.node_of(d) == k) continue;  // cannot happen: same-node lanes are the rank itself
      char* begin = out;
      for (int s = 0; s < g; ++s) {
        size_t n = p.p1_counts[s][j] * es;
        if (n) std::memcpy(out, p1_recv.data() + off[s][j] * es, n);
        out += n;
      }
      sends.push_back(PeerSend{d, begin, static_cast<int64_t>((out - begin) / es)});
    }
  }
  std::vector<PeerRecv> recvs;
  std::vector<int> recv_nodes;
  {
    char* in = p2_recv.data();
    for (int node = 0; node < t.num_nodes(); ++node) {
      if (node == k) continue;
      int64_t c = 0;
      for (int s : t.ranks_on_node(node)) c += p.recv_counts[s];
      recvs.push_back(PeerRecv{forwarder_of(node, me), in, c});
      recv_nodes.push_back(node);
      in += c * es;
    }
  }
  SW_RETURN_IF_ERROR(group_.group_send_recv(sends, recvs, dtype)
                         .with_context("hierarchical all_to_all phase 2 (inter-node)"));
  // Local reorder: each arrival holds node `node`'s sources in local order.
  for (size_t i = 0; i < recvs.size(); ++i) {
    const char* in = static_cast<const char*>(recvs[i].data);
    for (int s : t.ranks_on_node(recv_nodes[i])) {
      size_t n = p.recv_counts[s] * es;
      if (n) std::memcpy(dst + recv_displs[s] * es, in, n);
      in += n;
    }
  }
  last_messages_ = group_.stats().messages_sent + node_comm_->stats().messages_sent - msgs_before;
  return Status();
}

Status HierarchicalAllToAll::run(const void* send, std::span<const int64_t> send_counts,
                                 std::span<const int64_t> send_displs, void* recv,
                                 std::span<const int64_t> recv_counts,
                                 std::span<const int64_t> recv_displs, DType dtype) {
  SW_ASSIGN_OR_RETURN(Plan p, plan(send_counts, recv_counts));
  return execute(p, send, send_displs, recv, recv_displs, dtype);
}

}  // namespace sw::comm

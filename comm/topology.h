// Topology of one group: which node each member sits on and its index inside that node.
// Nodes come from the world layout (MPI_COMM_TYPE_SHARED or ranks_per_node emulation);
// a group (any subset of the world) derives each member's node from its world rank, so
// nodes may hold different numbers of the group's ranks.
#pragma once

#include <string>
#include <vector>

namespace sw::comm {

// Emulated layout: consecutive world ranks (coordinator included) fill node 0, then node 1.
std::vector<int> emulated_world_nodes(int world_size, int ranks_per_node);

class Topology {
 public:
  Topology() = default;
  // world_ranks[r]: world rank of group rank r; node_of_world[w]: node id of world rank w.
  static Topology build(const std::vector<int>& world_ranks, const std::vector<int>& node_of_world);

  int size() const { return static_cast<int>(node_of_.size()); }
  int num_nodes() const { return static_cast<int>(ranks_on_node_.size()); }
  // Group-local node index 0..num_nodes-1 (nodes numbered in order of their world node id).
  int node_of(int rank) const { return node_of_[rank]; }
  // Index of `rank` among the group's ranks on its node (ascending group rank).
  int local_index(int rank) const { return local_index_[rank]; }
  int num_local(int node) const { return static_cast<int>(ranks_on_node_[node].size()); }
  const std::vector<int>& ranks_on_node(int node) const { return ranks_on_node_[node]; }
  int rank_at(int node, int local) const { return ranks_on_node_[node][local]; }
  bool uniform() const;          // every node holds the same number of the group's ranks
  std::string describe() const;  // "3 nodes: [0 1 2] [3 4 5] [6]"

 private:
  std::vector<int> node_of_;
  std::vector<int> local_index_;
  std::vector<std::vector<int>> ranks_on_node_;
};

}  // namespace sw::comm

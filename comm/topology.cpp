// Topology construction from world ranks and the world's node table.
#include "comm/topology.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

namespace sw::comm {

std::vector<int> emulated_world_nodes(int world_size, int ranks_per_node) {
  std::vector<int> nodes(world_size);
  for (int w = 0; w < world_size; ++w) nodes[w] = ranks_per_node > 0 ? w / ranks_per_node : 0;
  return nodes;
}

Topology Topology::build(const std::vector<int>& world_ranks,
                         const std::vector<int>& node_of_world) {
  Topology t;
  std::map<int, int> node_index;  // world node id -> group-local node index, in id order
  for (int w : world_ranks) node_index[node_of_world[w]] = 0;
  int next = 0;
  for (auto& [id, idx] : node_index) idx = next++;
  t.ranks_on_node_.resize(node_index.size());
  t.node_of_.resize(world_ranks.size());
  t.local_index_.resize(world_ranks.size());
  for (size_t r = 0; r < world_ranks.size(); ++r) {
    int node = node_index[node_of_world[world_ranks[r]]];
    t.node_of_[r] = node;
    t.local_index_[r] = static_cast<int>(t.ranks_on_node_[node].size());
    t.ranks_on_node_[node].push_back(static_cast<int>(r));
  }
  return t;
}

bool Topology::uniform() const {
  return std::all_of(ranks_on_node_.begin(), ranks_on_node_.end(),
                     [&](const auto& v) { return v.size() == ranks_on_node_[0].size(); });
}

std::string Topology::describe() const {
  std::string s = fmt::format("{} node{}:", num_nodes(), num_nodes() == 1 ? "" : "s");
  for (const auto& v : ranks_on_node_) s += fmt::format(" [{}]", fmt::join(v, " "));
  return s;
}

}  // namespace sw::comm

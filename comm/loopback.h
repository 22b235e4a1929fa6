// LoopbackComm: N ranks as N threads of one process, exchanging through a shared mailbox.
// Same collectives, split and timeout semantics as MpiComm (both derive P2pCommunicator),
// so the self-checking suite runs everywhere in milliseconds.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "comm/p2p_comm.h"

namespace sw::comm {

class LoopbackHub;

class LoopbackComm final : public P2pCommunicator {
 public:
  // One communicator per rank; give each to its own thread. Nodes: ranks_per_node as in
  // emulated_world_nodes (0 = one node).
  static std::vector<std::unique_ptr<Communicator>> create_world(int num_ranks,
                                                                 const CommOptions& opts);
  const char* transport() const override { return "loopback"; }

  Result<std::unique_ptr<P2pBatch>> post(Channel channel, int tag,
                                         const std::vector<PeerOp>& ops) override;

  LoopbackComm(std::shared_ptr<LoopbackHub> hub, uint64_t context, int rank,
               std::shared_ptr<const std::vector<int>> world_ranks,
               std::shared_ptr<const std::vector<int>> node_of_world, std::string name,
               CommOptions opts);

 protected:
  Result<std::unique_ptr<Communicator>> make_child(int color, int key, std::vector<int> members,
                                                   int my_index) override;

 private:
  std::shared_ptr<LoopbackHub> hub_;
  uint64_t context_;
  uint64_t num_splits_ = 0;
};

// Runs body(comm) on num_ranks threads and returns each rank's status.
std::vector<Status> run_loopback(int num_ranks, const CommOptions& opts,
                                 const std::function<Status(Communicator&)>& body);

}  // namespace sw::comm

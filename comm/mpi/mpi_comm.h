// MpiComm: host-memory transport over MPI non-blocking point-to-point (Isend/Irecv polled
// with MPI_Testsome until the deadline). Device buffers are staged through pinned host
// memory, which is how several ranks share one GPU. The caller owns MPI_Init/MPI_Finalize.
#pragma once

#include <mpi.h>

#include <memory>

#include "comm/p2p_comm.h"

namespace sw::comm {

class MpiComm final : public P2pCommunicator {
 public:
  // Wraps MPI_COMM_WORLD (duplicated). Nodes: opts.ranks_per_node > 0 emulates them,
  // otherwise ranks that share memory (MPI_COMM_TYPE_SHARED) form a node.
  static Result<std::unique_ptr<MpiComm>> create_world(const CommOptions& opts);
  ~MpiComm() override;
  const char* transport() const override { return "mpi"; }
  // For bootstrap code that needs the raw handle (e.g. NCCL unique-id broadcast).
  MPI_Comm collective_comm() const { return coll_; }

  Result<std::unique_ptr<P2pBatch>> post(Channel channel, int tag,
                                         const std::vector<PeerOp>& ops) override;

  MpiComm(MPI_Comm coll, MPI_Comm user, int rank,
          std::shared_ptr<const std::vector<int>> world_ranks,
          std::shared_ptr<const std::vector<int>> node_of_world, std::string name,
          CommOptions opts);

 protected:
  Result<std::unique_ptr<Communicator>> make_child(int color, int key, std::vector<int> members,
                                                   int my_index) override;
  bool stages_device_buffers() const override { return true; }

 private:
  MPI_Comm coll_;  // collectives
  MPI_Comm user_;  // tagged send/recv
};

// Node id of every world rank from MPI_COMM_TYPE_SHARED (collective over MPI_COMM_WORLD).
Result<std::vector<int>> detect_world_nodes();

}  // namespace sw::comm

// comm::Communicator: the collective and point-to-point interface every transport implements
// (LoopbackComm, MpiComm, NcclComm). Buffers are raw pointers with a DType and element
// counts; a transport says which memory it takes (host, or device for NCCL / staged MPI).
// Add an op: a pure virtual *_async here, a blocking wrapper below, and an implementation in
// P2pCommunicator (loopback + MPI) and NcclComm; then a case in tests/mpi/comm_suite.h.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/options.h"
#include "comm/topology.h"
#include "common/dtype.h"
#include "common/status.h"

namespace sw::comm {

using Clock = std::chrono::steady_clock;

// What a transport has to do to finish one operation. Implementations advance on poll().
class WorkImpl {
 public:
  virtual ~WorkImpl() = default;
  // true once complete (then the result buffers hold the answer); an error ends the op.
  virtual Result<bool> poll() = 0;
  // Blocks a little (until progress is likely or `until`), never past `until`.
  virtual void wait_progress(Clock::time_point until) = 0;
  // Called when the deadline passes: cancel what is pending and return the error that names
  // the op, group, rank and the peers that never arrived.
  virtual Status on_deadline(double waited_s) = 0;
};

// Completion handle of an asynchronous op. Must not outlive its communicator or buffers.
class Work {
 public:
  Work() = default;  // an op that is already complete
  Work(std::unique_ptr<WorkImpl> impl, double timeout_s)
      : impl_(std::move(impl)), timeout_s_(timeout_s) {}
  Work(Work&&) = default;
  Work& operator=(Work&&) = default;
  // Waits at most the communicator's timeout_s; on expiry returns kDeadlineExceeded.
  Status wait();
  // Non-blocking: true when complete.
  Result<bool> poll();
  bool done() const { return impl_ == nullptr; }

 private:
  std::unique_ptr<WorkImpl> impl_;
  double timeout_s_ = 0;
};

// A block for group_send_recv: `count` elements at `data` to/from group rank `peer`.
struct PeerSend {
  int peer;
  const void* data;
  int64_t count;
};
struct PeerRecv {
  int peer;
  void* data;
  int64_t count;
};

// Messages and bytes this rank handed to the transport (self-copies excluded).
struct CommStats {
  int64_t messages_sent = 0;
  int64_t bytes_sent = 0;
};

enum class ReduceOp { kSum };

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }  // "world", "world/split(1)"...
  int world_rank_of(int rank) const { return (*world_ranks_)[rank]; }
  const std::vector<int>& world_ranks() const { return *world_ranks_; }
  const Topology& topology() const { return topology_; }
  // Node id of every world rank (shared by all communicators derived from one world).
  const std::shared_ptr<const std::vector<int>>& world_node_table() const { return node_of_world_; }
  const CommOptions& options() const { return options_; }
  const CommStats& stats() const { return stats_; }
  virtual const char* transport() const = 0;  // "loopback" | "mpi" | "nccl"
  // Non-OK once an op failed or timed out: the communicator then refuses further ops.
  const Status& health() const { return broken_; }

  // --- asynchronous ops (every rank of the group calls them in the same order) -----------
  // send/recv: [count] of dtype; in-place (send == recv) is allowed. Sum for f32/f16/bf16
  // accumulates in float32 and rounds once; i32/i64 sum exactly.
  virtual Result<Work> all_reduce_async(const void* send, void* recv, int64_t count,
                                        DType dtype) = 0;
  // send: [count]; recv: [size * count], rank r's block at r * count.
  virtual Result<Work> all_gather_async(const void* send, void* recv, int64_t count,
                                        DType dtype) = 0;
  // send: [size * count]; recv: [count] = sum over ranks of block `rank` of their send.
  virtual Result<Work> reduce_scatter_async(const void* send, void* recv, int64_t count,
                                            DType dtype) = 0;
  // Per-peer counts and displacements in elements (size() entries each, zeros allowed):
  // send_counts[p] elements from send + send_displs[p] go to peer p, which stores them at
  // its recv + recv_displs[rank()]. recv_counts[p] must equal peer p's send_counts[rank()].
  virtual Result<Work> all_to_all_v_async(const void* send, std::span<const int64_t> send_counts,
                                          std::span<const int64_t> send_displs, void* recv,
                                          std::span<const int64_t> recv_counts,
                                          std::span<const int64_t> recv_displs, DType dtype) = 0;
  // Grouped sends and receives to arbitrary peers (not self), completing together. Called by
  // every rank of the group (with empty lists where it has nothing), like an NCCL group.
  virtual Result<Work> group_send_recv_async(std::span<const PeerSend> sends,
                                             std::span<const PeerRecv> recvs, DType dtype) = 0;
  // Tagged point-to-point (tag >= 0); matches in order per (peer, tag).
  virtual Result<Work> send_async(const void* data, int64_t count, DType dtype, int peer,
                                  int tag) = 0;
  virtual Result<Work> recv_async(void* data, int64_t count, DType dtype, int peer, int tag) = 0;
  // buf: [count]; root's values end up on every rank.
  virtual Result<Work> broadcast_async(void* buf, int64_t count, DType dtype, int root) = 0;
  virtual Result<Work> barrier_async() = 0;
  // Collective: ranks with the same color form a child ordered by (key, rank). color < 0
  // returns a null pointer (the rank joins no child). Bounded by timeout_s like every op.
  virtual Result<std::unique_ptr<Communicator>> split(int color, int key) = 0;

  // --- blocking forms: issue + Work::wait() -------------------------------------------------
  Status all_reduce(const void* send, void* recv, int64_t count, DType dtype);
  Status all_gather(const void* send, void* recv, int64_t count, DType dtype);
  Status reduce_scatter(const void* send, void* recv, int64_t count, DType dtype);
  Status all_to_all_v(const void* send, std::span<const int64_t> send_counts,
                      std::span<const int64_t> send_displs, void* recv,
                      std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs,
                      DType dtype);
  Status group_send_recv(std::span<const PeerSend> sends, std::span<const PeerRecv> recvs,
                         DType dtype);
  Status send(const void* data, int64_t count, DType dtype, int peer, int tag);
  Status recv(void* data, int64_t count, DType dtype, int peer, int tag);
  Status broadcast(void* buf, int64_t count, DType dtype, int root);
  Status barrier();

  // "all_reduce on group 'world' (size 4, loopback): rank 2 (world rank 2)": error prefix.
  std::string where(const char* op) const;

 protected:
  Communicator(int rank, std::shared_ptr<const std::vector<int>> world_ranks,
               std::shared_ptr<const std::vector<int>> node_of_world, std::string name,
               CommOptions options);
  // Rejects ops once broken; returns the error to give the caller.
  Status check_usable(const char* op) const;
  void mark_broken(const Status& s) {
    if (broken_.ok()) broken_ = s;
  }
  Status check_peer(const char* op, int peer) const;
  Status check_counts(const char* op, std::span<const int64_t> counts,
                      std::span<const int64_t> displs, const char* what) const;

  int rank_;
  int size_;
  std::shared_ptr<const std::vector<int>> world_ranks_;
  std::shared_ptr<const std::vector<int>> node_of_world_;
  std::string name_;
  CommOptions options_;
  Topology topology_;
  CommStats stats_;
  Status broken_;
};

// "[1 3] (world ranks [2 4])": how errors list peers.
std::string describe_peers(const Communicator& comm, const std::vector<int>& peers);

}  // namespace sw::comm

// P2pCommunicator: every collective written once as direct point-to-point exchanges, for the
// transports that offer tagged non-blocking send/recv (LoopbackComm, MpiComm). Because each
// wait knows which receives are still pending, a timeout names exactly the missing peers.
// Add a transport: implement post() (a batch of sends/recvs) and make_child() (for split).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace sw::comm {

// Collective traffic and user send/recv never match each other.
enum class Channel : uint8_t { kCollective = 0, kUser = 1 };

struct PeerOp {
  bool is_send;
  int peer;  // group rank, never self
  const void* send_data;
  void* recv_data;
  size_t bytes;
};

// A set of posted sends/recvs that complete together.
class P2pBatch {
 public:
  virtual ~P2pBatch() = default;
  virtual Result<bool> test() = 0;  // true when every op completed
  virtual void wait_progress(Clock::time_point until) = 0;
  virtual std::vector<int> pending_peers(bool sends) = 0;  // peers of ops not yet complete
  virtual void cancel() = 0;                               // abandon pending ops
};

// One round of an op's schedule: post `ops`, wait for all, then run `after` locally.
struct P2pStep {
  std::vector<PeerOp> ops;
  std::function<Status()> after;
};

class P2pCommunicator : public Communicator {
 public:
  Result<Work> all_reduce_async(const void* send, void* recv, int64_t count, DType dtype) override;
  Result<Work> all_gather_async(const void* send, void* recv, int64_t count, DType dtype) override;
  Result<Work> reduce_scatter_async(const void* send, void* recv, int64_t count,
                                    DType dtype) override;
  Result<Work> all_to_all_v_async(const void* send, std::span<const int64_t> send_counts,
                                  std::span<const int64_t> send_displs, void* recv,
                                  std::span<const int64_t> recv_counts,
                                  std::span<const int64_t> recv_displs, DType dtype) override;
  Result<Work> group_send_recv_async(std::span<const PeerSend> sends,
                                     std::span<const PeerRecv> recvs, DType dtype) override;
  Result<Work> send_async(const void* data, int64_t count, DType dtype, int peer, int tag) override;
  Result<Work> recv_async(void* data, int64_t count, DType dtype, int peer, int tag) override;
  Result<Work> broadcast_async(void* buf, int64_t count, DType dtype, int root) override;
  Result<Work> barrier_async() override;
  Result<std::unique_ptr<Communicator>> split(int color, int key) override;

  // Used by P2pWork.
  virtual Result<std::unique_ptr<P2pBatch>> post(Channel channel, int tag,
                                                 const std::vector<PeerOp>& ops) = 0;
  void record_sent(const std::vector<PeerOp>& ops);
  void fail(const Status& s) { mark_broken(s); }

 protected:
  using Communicator::Communicator;
  // members: parent ranks of the child in child-rank order; my_index: this rank's position.
  virtual Result<std::unique_ptr<Communicator>> make_child(int color, int key,
                                                           std::vector<int> members,
                                                           int my_index) = 0;
  // Device buffers are staged through pinned host memory only where the transport allows.
  virtual bool stages_device_buffers() const { return false; }

 private:
  struct Staging;
  Result<Work> launch(const char* op, Channel channel, int tag, std::vector<P2pStep> steps,
                      std::shared_ptr<Staging> staging);
  int next_collective_tag();
  std::shared_ptr<Staging> new_staging() const;

  uint64_t collective_seq_ = 0;
};

}  // namespace sw::comm

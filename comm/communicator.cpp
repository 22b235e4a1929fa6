// Communicator base: blocking wrappers, argument checks, the bounded Work::wait().
#include "comm/communicator.h"

#include <fmt/ranges.h>

#include <thread>

namespace sw::comm {

Status Work::wait() {
  if (!impl_) return Status();
  auto start = Clock::now();
  auto deadline = start + steady_seconds(timeout_s_);  // clamped: 1e10 s must not wrap
  while (true) {
    auto done = impl_->poll();
    if (!done.ok()) {
      impl_.reset();
      return done.status();
    }
    if (*done) {
      impl_.reset();
      return Status();
    }
    auto now = Clock::now();
    if (now >= deadline) {
      Status s = impl_->on_deadline(std::chrono::duration<double>(now - start).count());
      impl_.reset();
      return s;
    }
    impl_->wait_progress(deadline);
  }
}

Result<bool> Work::poll() {
  if (!impl_) return true;
  auto done = impl_->poll();
  if (!done.ok() || *done) impl_.reset();
  return done;
}

Communicator::Communicator(int rank, std::shared_ptr<const std::vector<int>> world_ranks,
                           std::shared_ptr<const std::vector<int>> node_of_world, std::string name,
                           CommOptions options)
    : rank_(rank),
      size_(static_cast<int>(world_ranks->size())),
      world_ranks_(std::move(world_ranks)),
      node_of_world_(std::move(node_of_world)),
      name_(std::move(name)),
      options_(std::move(options)),
      topology_(Topology::build(*world_ranks_, *node_of_world_)) {}

std::string Communicator::where(const char* op) const {
  return fmt::format("{} on group '{}' (size {}, {}): rank {} (world rank {})", op, name_, size_,
                     transport(), rank_, world_rank_of(rank_));
}

Status Communicator::check_usable(const char* op) const {
  if (broken_.ok()) return Status();
  return unavailable("{}: communicator is unusable after an earlier failure: {}", where(op),
                     broken_.message());
}

Status Communicator::check_peer(const char* op, int peer) const {
  if (peer < 0 || peer >= size_)
    return invalid_argument("{}: peer {} is outside the group [0, {})", where(op), peer, size_);
  return Status();
}

Status Communicator::check_counts(const char* op, std::span<const int64_t> counts,
                                  std::span<const int64_t> displs, const char* what) const {
  if (counts.size() != static_cast<size_t>(size_) || displs.size() != static_cast<size_t>(size_))
    return invalid_argument("{}: {} counts/displs have {}/{} entries, expected {}", where(op), what,
                            counts.size(), displs.size(), size_);
  for (int p = 0; p < size_; ++p)
    if (counts[p] < 0 || displs[p] < 0)
      return invalid_argument("{}: {} count {} / displacement {} for peer {} is negative",
                              where(op), what, counts[p], displs[p], p);
  return Status();
}

Status Communicator::all_reduce(const void* send, void* recv, int64_t count, DType dtype) {
  SW_ASSIGN_OR_RETURN(Work w, all_reduce_async(send, recv, count, dtype));
  return w.wait();
}
Status Communicator::all_gather(const void* send, void* recv, int64_t count, DType dtype) {
  SW_ASSIGN_OR_RETURN(Work w, all_gather_async(send, recv, count, dtype));
  return w.wait();
}
Status Communicator::reduce_scatter(const void* send, void* recv, int64_t count, DType dtype) {
  SW_ASSIGN_OR_RETURN(Work w, reduce_scatter_async(send, recv, count, dtype));
  return w.wait();
}
Status Communicator::all_to_all_v(const void* send, std::span<const int64_t> send_counts,
                                  std::span<const int64_t> send_displs, void* recv,
                                  std::span<const int64_t> recv_counts,
                                  std::span<const int64_t> recv_displs, DType dtype) {
  SW_ASSIGN_OR_RETURN(Work w, all_to_all_v_async(send, send_counts, send_displs, recv, recv_counts,
                                                 recv_displs, dtype));
  return w.wait();
}
Status Communicator::group_send_recv(std::span<const PeerSend> sends,
                                     std::span<const PeerRecv> recvs, DType dtype) {
  SW_ASSIGN_OR_RETURN(Work w, group_send_recv_async(sends, recvs, dtype));
  return w.wait();
}
Status Communicator::send(const void* data, int64_t count, DType dtype, int peer, int tag) {
  SW_ASSIGN_OR_RETURN(Work w, send_async(data, count, dtype, peer, tag));
  return w.wait();
}
Status Communicator::recv(void* data, int64_t count, DType dtype, int peer, int tag) {
  SW_ASSIGN_OR_RETURN(Work w, recv_async(data, count, dtype, peer, tag));
  return w.wait();
}
Status Communicator::broadcast(void* buf, int64_t count, DType dtype, int root) {
  SW_ASSIGN_OR_RETURN(Work w, broadcast_async(buf, count, dtype, root));
  return w.wait();
}
Status Communicator::barrier() {
  SW_ASSIGN_OR_RETURN(Work w, barrier_async());
  return w.wait();
}

std::string describe_peers(const Communicator& comm, const std::vector<int>& peers) {
  std::vector<int> world;
  for (int p : peers) world.push_back(comm.world_rank_of(p));
  return fmt::format("[{}] (world ranks [{}])", fmt::join(peers, " "), fmt::join(world, " "));
}

}  // namespace sw::comm

// Loopback transport: a mailbox per rank (thread); sends copy eagerly, receives match in
// FIFO order per (context, channel, source, tag), waits sleep on a condition variable.
#include "comm/loopback.h"

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

namespace sw::comm {

class LoopbackHub {
 public:
  struct Message {
    uint64_t context;
    Channel channel;
    int src;  // world rank (thread index)
    int tag;
    std::vector<char> data;
  };
  explicit LoopbackHub(int n) : boxes_(n) {}

  void deliver(int dst, Message m) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      boxes_[dst].push_back(std::move(m));
      ++version_;
    }
    cv_.notify_all();
  }

  // 1: taken, 0: nothing yet, error on a size mismatch.
  Result<bool> try_take(int dst, uint64_t context, Channel channel, int src, int tag, void* buf,
                        size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& box = boxes_[dst];
    for (auto it = box.begin(); it != box.end(); ++it) {
      if (it->context != context || it->channel != channel || it->src != src || it->tag != tag)
        continue;
      if (it->data.size() != bytes)
        return internal_error("message from world rank {} with tag {} has {} bytes, expected {}",
                              src, tag, it->data.size(), bytes);
      if (bytes) std::memcpy(buf, it->data.data(), bytes);
      box.erase(it);
      return true;
    }
    return false;
  }

  uint64_t version() {
    std::lock_guard<std::mutex> lock(mu_);
    return version_;
  }

  void wait_change(uint64_t seen, Clock::time_point until) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_until(lock, until, [&] { return version_ != seen; });
  }

  uint64_t child_context(uint64_t parent, uint64_t split_index, int color) {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, fresh] = contexts_.try_emplace(std::tuple{parent, split_index, color}, 0);
    if (fresh) it->second = next_context_++;
    return it->second;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t version_ = 0;
  std::vector<std::deque<Message>> boxes_;
  std::map<std::tuple<uint64_t, uint64_t, int>, uint64_t> contexts_;
  uint64_t next_context_ = 1;
};

namespace {

class LoopbackBatch final : public P2pBatch {
 public:
  LoopbackBatch(LoopbackHub* hub, uint64_t context, Channel channel, int tag, int me,
                std::vector<std::pair<int, PeerOp>> recvs)
      : hub_(hub),
        context_(context),
        channel_(channel),
        tag_(tag),
        me_(me),
        recvs_(std::move(recvs)),
        done_(recvs_.size(), false) {}

  Result<bool> test() override {
    seen_ = hub_->version();
    bool all = true;
    for (size_t i = 0; i < recvs_.size(); ++i) {
      if (done_[i]) continue;
      const auto& [src_world, op] = recvs_[i];
      SW_ASSIGN_OR_RETURN(bool got, hub_->try_take(me_, context_, channel_, src_world, tag_,
                                                   op.recv_data, op.bytes));
      done_[i] = got;
      all = all && got;
    }
    return all;
  }
  void wait_progress(Clock::time_point until) override {
    hub_->wait_change(seen_, std::min(until, Clock::now() + std::chrono::milliseconds(20)));
  }
  std::vector<int> pending_peers(bool sends) override {
    std::vector<int> out;
    if (sends) return out;  // loopback sends complete at once
    for (size_t i = 0; i < recvs_.size(); ++i)
      if (!done_[i]) out.push_back(recvs_[i].second.peer);
    return out;
  }
  void cancel() override {}

 private:
  LoopbackHub* hub_;
  uint64_t context_;
  Channel channel_;
  int tag_;
  int me_;
  std::vector<std::pair<int, PeerOp>> recvs_;  // (source world rank, op)
  std::vector<bool> done_;
  uint64_t seen_ = 0;
};

}  // namespace

LoopbackComm::LoopbackComm(std::shared_ptr<LoopbackHub> hub, uint64_t context, int rank,
                           std::shared_ptr<const std::vector<int>> world_ranks,
                           std::shared_ptr<const std::vector<int>> node_of_world, std::string name,
                           CommOptions opts)
    : P2pCommunicator(rank, std::move(world_ranks), std::move(node_of_world), std::move(name),
                      std::move(opts)),
      hub_(std::move(hub)),
      context_(context) {}

std::vector<std::unique_ptr<Communicator>> LoopbackComm::create_world(int num_ranks,
                                                                      const CommOptions& opts) {
  auto hub = std::make_shared<LoopbackHub>(num_ranks);
  auto world = std::make_shared<std::vector<int>>(num_ranks);
  for (int r = 0; r < num_ranks; ++r) (*world)[r] = r;
  auto nodes = std::make_shared<const std::vector<int>>(
      emulated_world_nodes(num_ranks, opts.ranks_per_node));
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < num_ranks; ++r)
    out.push_back(std::make_unique<LoopbackComm>(hub, 0, r, world, nodes, "world", opts));
  return out;
}

Result<std::unique_ptr<P2pBatch>> LoopbackComm::post(Channel channel, int tag,
                                                     const std::vector<PeerOp>& ops) {
  const int me = world_rank_of(rank_);
  std::vector<std::pair<int, PeerOp>> recvs;
  for (const auto& op : ops) {
    int peer_world = world_rank_of(op.peer);
    if (op.is_send) {
      const char* p = static_cast<const char*>(op.send_data);
      hub_->deliver(peer_world, LoopbackHub::Message{context_, channel, me, tag,
                                                     std::vector<char>(p, p + op.bytes)});
    } else {
      recvs.emplace_back(peer_world, op);
    }
  }
  return std::unique_ptr<P2pBatch>(
      std::make_unique<LoopbackBatch>(hub_.get(), context_, channel, tag, me, std::move(recvs)));
}

Result<std::unique_ptr<Communicator>> LoopbackComm::make_child(int color, int /*key*/,
                                                               std::vector<int> members,
                                                               int my_index) {
  uint64_t ctx = hub_->child_context(context_, num_splits_++, color);
  if (my_index < 0) return std::unique_ptr<Communicator>();
  auto world = std::make_shared<std::vector<int>>();
  for (int m : members) world->push_back(world_rank_of(m));
  return std::unique_ptr<Communicator>(
      std::make_unique<LoopbackComm>(hub_, ctx, my_index, world, node_of_world_,
                                     fmt::format("{}/split({})", name_, color), options_));
}

std::vector<Status> run_loopback(int num_ranks, const CommOptions& opts,
                                 const std::function<Status(Communicator&)>& body) {
  auto comms = LoopbackComm::create_world(num_ranks, opts);
  std::vector<Status> results(num_ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < num_ranks; ++r)
    threads.emplace_back([&, r] { results[r] = body(*comms[r]); });
  for (auto& t : threads) t.join();
  return results;
}

}  // namespace sw::comm

// Collectives as direct point-to-point schedules (see p2p_comm.h). Every rank exchanges
// with every peer in one round (S - 1 messages each), reductions run in rank order on the
// chunk's owner so every rank gets bitwise-identical sums whatever the transport's timing.
#include "comm/p2p_comm.h"

#include <algorithm>
#include <cstring>

#include "comm/device_memory.h"
#include "common/tensor.h"

namespace sw::comm {
namespace {

constexpr int kMaxTag = 32767;  // the MPI standard's guaranteed MPI_TAG_UB

bool reducible(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF16 || d == DType::kI32 ||
         d == DType::kI64;
}

template <typename T>
void sum_ints(void* out, const std::vector<const void*>& in, int64_t n) {
  std::vector<T> acc(n, 0);
  for (const void* p : in) {
    const T* x = static_cast<const T*>(p);
    for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
  }
  std::memcpy(out, acc.data(), n * sizeof(T));
}

// out = sum of in[0..] in that order; out may alias an input.
void reduce_sum(DType dtype, void* out, const std::vector<const void*>& in, int64_t n) {
  if (n == 0) return;
  switch (dtype) {
    case DType::kI32: return sum_ints<int32_t>(out, in, n);
    case DType::kI64: return sum_ints<int64_t>(out, in, n);
    default: break;
  }
  std::vector<float> acc(n, 0.0f);
  for (const void* p : in) {
    if (dtype == DType::kF32) {
      const float* x = static_cast<const float*>(p);
      for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
    } else if (dtype == DType::kBF16) {
      const uint16_t* x = static_cast<const uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) acc[i] += bf16_bits_to_float(x[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) acc[i] += load_float(p, dtype, i);
    }
  }
  if (dtype == DType::kF32) {
    std::memcpy(out, acc.data(), n * sizeof(float));
  } else if (dtype == DType::kBF16) {
    uint16_t* y = static_cast<uint16_t*>(out);
    for (int64_t i = 0; i < n; ++i) y[i] = float_to_bf16_bits(acc[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) store_float(out, dtype, i, acc[i]);
  }
}

char* at(void* p, int64_t elems, size_t es) { return static_cast<char*>(p) + elems * es; }
const char* at(const void* p, int64_t elems, size_t es) {
  return static_cast<const char*>(p) + elems * es;
}

int64_t extent(std::span<const int64_t> counts, std::span<const int64_t> displs) {
  int64_t e = 0;
  for (size_t i = 0; i < counts.size(); ++i)
    if (counts[i] > 0) e = std::max(e, displs[i] + counts[i]);
  return e;
}

class P2pWork final : public WorkImpl {
 public:
  P2pWork(P2pCommunicator* comm, const char* op, Channel channel, int tag,
          std::vector<P2pStep> steps, std::shared_ptr<void> hold)
      : comm_(comm),
        op_(op),
        channel_(channel),
        tag_(tag),
        steps_(std::move(steps)),
        hold_(std::move(hold)) {}

  Result<bool> poll() override {
    while (step_ < steps_.size()) {
      P2pStep& st = steps_[step_];
      if (!batch_ && !st.ops.empty() && !posted_) {
        auto b = comm_->post(channel_, tag_, st.ops);
        if (!b.ok()) return fail(b.status());
        batch_ = std::move(b).value();
        posted_ = true;
        comm_->record_sent(st.ops);
      }
      if (batch_) {
        auto done = batch_->test();
        if (!done.ok()) return fail(done.status());
        if (!*done) return false;
        batch_.reset();
      }
      if (st.after) {
        Status s = st.after();
        if (!s.ok()) return fail(s);
      }
      ++step_;
      posted_ = false;
    }
    return true;
  }

  void wait_progress(Clock::time_point until) override {
    if (batch_) batch_->wait_progress(until);
  }

  Status on_deadline(double waited_s) override {
    std::vector<int> missing;
    bool sends = false;
    if (batch_) {
      missing = batch_->pending_peers(false);
      if (missing.empty()) {
        missing = batch_->pending_peers(true);
        sends = true;
      }
      batch_->cancel();
      batch_.reset();
    }
    Status s = deadline_exceeded(
        "{}: timed out after {:.1f} s (comm.timeout_s = {}) in round {} of {}; {} {}; the "
        "communicator is now unusable",
        comm_->where(op_), waited_s, comm_->options().timeout_s, step_ + 1, steps_.size(),
        sends ? "peers that never took our messages:" : "peers that never arrived:",
        describe_peers(*comm_, missing));
    comm_->fail(s);
    return s;
  }

 private:
  Result<bool> fail(const Status& s) {
    if (batch_) batch_->cancel();
    batch_.reset();
    Status e = s.with_context(comm_->where(op_));
    comm_->fail(e);
    return e;
  }

  P2pCommunicator* comm_;
  const char* op_;
  Channel channel_;
  int tag_;
  std::vector<P2pStep> steps_;
  std::shared_ptr<void> hold_;  // scratch buffers the steps point into
  std::unique_ptr<P2pBatch> batch_;
  size_t step_ = 0;
  bool posted_ = false;
};

}  // namespace

// Maps device buffers to pinned host copies for the op, and copies results back at the end.
struct P2pCommunicator::Staging {
  bool enabled = false;
  struct Map {
    const void* orig;
    void* host;
    size_t bytes;
    std::shared_ptr<void> buf;
  };
  std::vector<Map> maps;
  std::vector<std::pair<void*, Map>> copy_back;
  Status error;

  void* map(const void* p, size_t bytes, bool copy_in, bool copy_out) {
    if (!enabled || bytes == 0 || !is_device_pointer(p)) return const_cast<void*>(p);
    Map* m = nullptr;
    for (auto& x : maps)
      if (x.orig == p && x.bytes >= bytes) m = &x;
    if (!m) {
      auto buf = alloc_pinned(bytes);
      maps.push_back(Map{p, buf.get(), bytes, buf});
      m = &maps.back();
      if (copy_in && error.ok()) error = copy_device_to_host(m->host, p, bytes);
    }
    if (copy_out) copy_back.emplace_back(const_cast<void*>(p), Map{p, m->host, bytes, m->buf});
    return m->host;
  }
  Status finish() {
    for (auto& [dev, m] : copy_back) SW_RETURN_IF_ERROR(copy_host_to_device(dev, m.host, m.bytes));
    return Status();
  }
};

std::shared_ptr<P2pCommunicator::Staging> P2pCommunicator::new_staging() const {
  auto s = std::make_shared<Staging>();
  s->enabled = stages_device_buffers() && cuda_compiled();
  return s;
}

int P2pCommunicator::next_collective_tag() {
  return static_cast<int>(collective_seq_++ % static_cast<uint64_t>(kMaxTag));
}

void P2pCommunicator::record_sent(const std::vector<PeerOp>& ops) {
  for (const auto& op : ops) {
    if (!op.is_send) continue;
    stats_.messages_sent += 1;
    stats_.bytes_sent += static_cast<int64_t>(op.bytes);
  }
}

Result<Work> P2pCommunicator::launch(const char* op, Channel channel, int tag,
                                     std::vector<P2pStep> steps, std::shared_ptr<Staging> staging) {
  if (!staging->error.ok()) return staging->error.with_context(where(op));
  if (!staging->copy_back.empty())
    steps.push_back(P2pStep{{}, [staging] { return staging->finish(); }});
  auto impl = std::make_unique<P2pWork>(this, op, channel, tag, std::move(steps), staging);
  Work w(std::move(impl), options_.timeout_s);
  // Post the first round now so the transfer overlaps whatever the caller does next.
  auto first = w.poll();
  if (!first.ok()) return first.status();
  return w;
}

Result<Work> P2pCommunicator::all_reduce_async(const void* send, void* recv, int64_t count,
                                               DType dtype) {
  const char* op = "all_reduce";
  SW_RETURN_IF_ERROR(check_usable(op));
  if (!reducible(dtype) || count < 0)
    return invalid_argument("{}: sum of {} x {} is not supported", where(op), count,
                            dtype_name(dtype));
  const size_t es = dtype_size(dtype);
  auto staging = new_staging();
  const void* hs = staging->map(send, count * es, true, false);
  void* hr = staging->map(recv, count * es, false, true);
  const int s = size_, me = rank_;
  std::vector<int64_t> b(s + 1);
  for (int c = 0; c <= s; ++c) b[c] = count * c / s;
  const int64_t mine = b[me + 1] - b[me];
  auto tmp = std::shared_ptr<char[]>(new char[std::max<size_t>(1, s * mine * es)]);
  std::vector<P2pStep> steps(2);
  for (int p = 0; p < s; ++p) {
    if (p == me) continue;
    steps[0].ops.push_back({true, p, at(hs, b[p], es), nullptr, (b[p + 1] - b[p]) * es});
    steps[0].ops.push_back({false, p, nullptr, tmp.get() + p * mine * es, mine * es});
  }
  steps[0].after = [=]() {
    std::vector<const void*> in(s);
    for (int p = 0; p < s; ++p) in[p] = p == me ? at(hs, b[me], es) : tmp.get() + p * mine * es;
    reduce_sum(dtype, at(hr, b[me], es), in, mine);
    return Status();
  };
  for (int p = 0; p < s; ++p) {
    if (p == me) continue;
    steps[1].ops.push_back({true, p, at(hr, b[me], es), nullptr, mine * es});
    steps[1].ops.push_back({false, p, nullptr, at(hr, b[p], es), (b[p + 1] - b[p]) * es});
  }
  staging->maps.push_back({nullptr, nullptr, 0, tmp});
  return launch(op, Channel::kCollective, next_collective_tag(), std::move(steps), staging);
}

Result<Work> P2pCommunicator::reduce_scatter_async(const void* send, void* recv, int64_t count,
                                                   DType dtype) {
  const char* op = "reduce_scatter";
  SW_RETURN_IF_ERROR(check_usable(op));
  if (!reducible(dtype) || count < 0)
    return invalid_argument("{}: sum of {} x {} is not supported", where(op), count,
                            dtype_name(dtype));
  const size_t es = dtype_size(dtype);
  const int s = size_, me = rank_;
  auto staging = new_staging();
  const void* hs = staging->map(send, s * count * es, true, false);
  void* hr = staging->map(recv, count * es, false, true);
  auto tmp = std::shared_ptr<char[]>(new char[std::max<size_t>(1, s * count * es)]);
  std::vector<P2pStep> steps(1);
  for (int p = 0; p < s; ++p) {
    if (p == me) continue;
    steps[0].ops.push_back({true, p, at(hs, p * count, es), nullptr, count * es});
    steps[0].ops.push_back({false, p, nullptr, tmp.get() + p * count * es, count * es});
  }
  steps[0].after = [=]() {
    std::vector<const void*> in(s);
    for (int p = 0; p < s; ++p)
      in[p] = p == me ? at(hs, me * count, es) : tmp.get() + p * count * es;
    reduce_sum(dtype, hr, in, count);
    return Status();
  };
  staging->maps.push_back({nullptr, nullptr, 0, tmp});
  return launch(op, Channel::kCollective, next_collective_tag(), std::move(steps), staging);
}

Result<Work> P2pCommunicator::all_gather_async(const void* send, void* recv, int64_t count,
                                               DType dtype) {
  const char* op = "all_gather";
  SW_RETURN_IF_ERROR(check_usable(op));
  if (count < 0) return invalid_argument("{}: negative count {}", where(op), count);
  const size_t es = dtype_size(dtype);
  const int s = size_, me = rank_;
  auto staging = new_staging();
  const void* hs = staging->map(send, count * es, true, false);
  void* hr = staging->map(recv, s * count * es, false, true);
  std::vector<P2pStep> steps(1);
  for (int p = 0; p < s; ++p) {
    if (p == me) continue;
    steps[0].ops.push_back({true, p, hs, nullptr, count * es});
    steps[0].ops.push_back({false, p, nullptr, at(hr, p * count, es), count * es});
  }
  steps[0].after = [=]() {
    std::memmove(at(hr, me * count, es), hs, count * es);
    return Status();
  };
  return launch(op, Channel::kCollective, next_collective_tag(), std::move(steps), staging);
}

Result<Work> P2pCommunicator::all_to_all_v_async(const void* send,
                                                 std::span<const int64_t> send_counts,
                                                 std::span<const int64_t> send_displs, void* recv,
                                                 std::span<const int64_t> recv_counts,
                                                 std::span<const int64_t> recv_displs,
                                                 DType dtype) {
  const char* op = "all_to_all_v";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_RETURN_IF_ERROR(check_counts(op, send_counts, send_displs, "send"));
  SW_RETURN_IF_ERROR(check_counts(op, recv_counts, recv_displs, "recv"));
  const int s = size_, me = rank_;
  if (send_counts[me] != recv_counts[me])
    return invalid_argument("{}: send_counts[self] = {} but recv_counts[self] = {}", where(op),
                            send_counts[me], recv_counts[me]);
  const size_t es = dtype_size(dtype);
  auto staging = new_staging();
  const void* hs = staging->map(send, extent(send_counts, send_displs) * es, true, false);
  void* hr = staging->map(recv, extent(recv_counts, recv_displs) * es, false, true);
  std::vector<P2pStep> steps(1);
  for (int p = 0; p < s; ++p) {
    if (p == me) continue;
    steps[0].ops.push_back(
        {true, p, at(hs, send_displs[p], es), nullptr, size_t(send_counts[p]) * es});
    steps[0].ops.push_back(
        {false, p, nullptr, at(hr, recv_displs[p], es), size_t(recv_counts[p]) * es});
  }
  const char* self_src = at(hs, send_displs[me], es);
  char* self_dst = at(hr, recv_displs[me], es);
  const size_t self_bytes = send_counts[me] * es;
  steps[0].after = [=]() {
    if (self_bytes) std::memmove(self_dst, self_src, self_bytes);
    return Status();
  };
  return launch(op, Channel::kCollective, next_collective_tag(), std::move(steps), staging);
}

Result<Work> P2pCommunicator::group_send_recv_async(std::span<const PeerSend> sends,
                                                    std::span<const PeerRecv> recvs, DType dtype) {
  const char* op = "group_send_recv";
  SW_RETURN_IF_ERROR(check_usable(op));
  const size_t es = dtype_size(dtype);
  auto staging = new_staging();
  std::vector<P2pStep> steps(1);
  for (const auto& x : sends) {
    SW_RETURN_IF_ERROR(check_peer(op, x.peer));
    if (x.peer == rank_ || x.count < 0)
      return invalid_argument("{}: send of {} elements to peer {} (self or negative)", where(op),
                              x.count, x.peer);
    steps[0].ops.push_back(
        {true, x.peer, staging->map(x.data, x.count * es, true, false), nullptr, x.count * es});
  }
  for (const auto& x : recvs) {
    SW_RETURN_IF_ERROR(check_peer(op, x.peer));
    if (x.peer == rank_ || x.count < 0)
      return invalid_argument("{}: recv of {} elements from peer {} (self or negative)", where(op),
                              x.count, x.peer);
    steps[0].ops.push_back(
        {false, x.peer, nullptr, staging->map(x.data, x.count * es, false, true), x.count * es});
  }
  return launch(op, Channel::kCollective, next_collective_tag(), std::move(steps), staging);
}

Result<Work> P2pCommunicator::send_async(const void* data, int64_t count, DType dtype, int peer,
                                         int tag) {
  const char* op = "send";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_RETURN_IF_ERROR(check_peer(op, peer));
  if (peer == rank_ || tag < 0 || tag > kMaxTag || count < 0)
    return invalid_argument(
        "{}: send of {} elements to peer {} with tag {} (need a peer other "
        "than self, 0 <= tag <= {})",
        where(op), count, peer, tag, kMaxTag);
  const size_t es = dtype_size(dtype);
  auto staging = new_staging();
  std::vector<P2pStep> steps(1);
  steps[0].ops.push_back(
      {true, peer, staging->map(data, count * es, true, false), nullptr, count * es});
  return launch(op, Channel::kUser, tag, std::move(steps), staging);
}

Result<Work> P2pCommunicator::recv_async(void* data, int64_t count, DType dtype, int peer,
                                         int tag) {
  const char* op = "recv";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_RETURN_IF_ERROR(check_peer(op, peer));
  if (peer == rank_ || tag < 0 || tag > kMaxTag || count < 0)
    return invalid_argument(
        "{}: recv of {} elements from peer {} with tag {} (need a peer "
        "other than self, 0 <= tag <= {})",
        where(op), count, peer, tag, kMaxTag);
  const size_t es = dtype_size(dtype);
  auto staging = new_staging();
  std::vector<P2pStep> steps(1);
  steps[0].ops.push_back(
      {false, peer, nullptr, staging->map(data, count * es, false, true), count * es});
  return launch(op, Channel::kUser, tag, std::move(steps), staging);
}

Result<Work> P2pCommunicator::broadcast_async(void* buf, int64_t count, DType dtype, int root) {
  const char* op = "broadcast";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_RETURN_IF_ERROR(check_peer(op, root));
  const size_t es = dtype_size(dtype);
  auto staging = new_staging();
  const bool is_root = root == rank_;
  void* h = staging->map(buf, count * es, is_root, !is_root);
  std::vector<P2pStep> steps(1);
  if (is_root) {
    for (int p = 0; p < size_; ++p)
      if (p != rank_) steps[0].ops.push_back({true, p, h, nullptr, count * es});
  } else {
    steps[0].ops.push_back({false, root, nullptr, h, count * es});
  }
  return launch(op, Channel::kCollective, next_collective_tag(), std::move(steps), staging);
}

Result<Work> P2pCommunicator::barrier_async() {
  const char* op = "barrier";
  SW_RETURN_IF_ERROR(check_usable(op));
  std::vector<P2pStep> steps(1);
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    steps[0].ops.push_back({true, p, nullptr, nullptr, 0});
    steps[0].ops.push_back({false, p, nullptr, nullptr, 0});
  }
  return launch(op, Channel::kCollective, next_collective_tag(), std::move(steps), new_staging());
}

Result<std::unique_ptr<Communicator>> P2pCommunicator::split(int color, int key) {
  const char* op = "split";
  SW_RETURN_IF_ERROR(check_usable(op));
  int32_t mine[2] = {color, key};
  std::vector<int32_t> all(2 * size_);
  SW_RETURN_IF_ERROR(all_gather(mine, all.data(), 2, DType::kI32));
  std::vector<int> members;
  if (color >= 0) {
    for (int p = 0; p < size_; ++p)
      if (all[2 * p] == color) members.push_back(p);
    std::stable_sort(members.begin(), members.end(),
                     [&](int a, int b) { return all[2 * a + 1] < all[2 * b + 1]; });
  }
  int my_index = -1;
  for (size_t i = 0; i < members.size(); ++i)
    if (members[i] == rank_) my_index = static_cast<int>(i);
  return make_child(color, key, std::move(members), my_index);
}

}  // namespace sw::comm

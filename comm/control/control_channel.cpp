// ZeroMQ ROUTER/DEALER control channel with heartbeats and defensive decoding.
#include "comm/control/control_channel.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>

namespace sw::comm {
namespace {

constexpr const char* kCoordinatorPeer = "coordinator";

// Clamped (comm::steady_seconds): receive() takes any caller's timeout, and an overflowing
// conversion would make the deadline lie in the past.
std::chrono::steady_clock::duration seconds(double s) { return steady_seconds(s); }

}  // namespace

ControlChannel::ControlChannel(Role role, const CommOptions& opts)
    : role_(role),
      opts_(opts),
      ctx_(1),
      sock_(ctx_,
            role == Role::kCoordinator ? zmq::socket_type::router : zmq::socket_type::dealer) {
  sock_.set(zmq::sockopt::linger, 0);
  // libzmq drops the connection of a peer whose frame exceeds this as soon as the frame's
  // length arrives, before buffering any of it; without it a 1.5 GB frame is held whole
  // before decode_message() can refuse it. Peers that connect (workers) reconnect by
  // themselves, so the channel keeps working.
  sock_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(opts.control_max_message_bytes));
  next_heartbeat_ = std::chrono::steady_clock::now();
}

ControlChannel::~ControlChannel() = default;

Result<std::unique_ptr<ControlChannel>> ControlChannel::coordinator(const CommOptions& opts) {
  SW_RETURN_IF_ERROR(validate(opts));
  std::unique_ptr<ControlChannel> ch(new ControlChannel(Role::kCoordinator, opts));
  ch->self_id_ = kCoordinatorPeer;
  try {
    ch->sock_.set(zmq::sockopt::router_mandatory, 1);
    ch->sock_.bind(opts.control_endpoint);
    ch->endpoint_ = ch->sock_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return unavailable(
        "control channel: cannot bind ROUTER to '{}' (cluster.control_endpoint): "
        "{}",
        opts.control_endpoint, e.what());
  }
  spdlog::info("control: coordinator listening on {}", ch->endpoint_);
  return ch;
}

Result<std::unique_ptr<ControlChannel>> ControlChannel::worker(const CommOptions& opts,
                                                               const std::string& endpoint,
                                                               const std::string& worker_id) {
  SW_RETURN_IF_ERROR(validate(opts));
  if (worker_id.empty() || worker_id.size() > 255)
    return invalid_argument("control channel: worker id '{}' must have 1..255 bytes", worker_id);
  std::unique_ptr<ControlChannel> ch(new ControlChannel(Role::kWorker, opts));
  ch->self_id_ = worker_id;
  ch->endpoint_ = endpoint;
  try {
    ch->sock_.set(zmq::sockopt::routing_id, worker_id);
    ch->sock_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return unavailable("control channel: worker '{}' cannot connect to '{}': {}", worker_id,
                       endpoint, e.what());
  }
  ch->peers_[kCoordinatorPeer] = Peer{std::chrono::steady_clock::now(), false};
  SW_RETURN_IF_ERROR(ch->send("", MessageType::kHello, 0, worker_id));
  return ch;
}

Status ControlChannel::send(const std::string& peer, MessageType type, uint64_t request_id,
                            std::string_view payload) {
  std::string bytes = encode_message(type, request_id, payload);
  if (bytes.size() > opts_.control_max_message_bytes)
    return invalid_argument("control send of {} to '{}': {} bytes exceed {}",
                            message_type_name(type), peer, bytes.size(),
                            opts_.control_max_message_bytes);
  try {
    if (role_ == Role::kCoordinator) {
      sock_.send(zmq::buffer(peer), zmq::send_flags::sndmore);
    }
    auto sent = sock_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    if (!sent)
      return unavailable("control send of {} to '{}': queue full", message_type_name(type),
                         role_ == Role::kCoordinator ? peer : kCoordinatorPeer);
  } catch (const zmq::error_t& e) {
    return unavailable("control send of {} to '{}': {}", message_type_name(type),
                       role_ == Role::kCoordinator ? peer : kCoordinatorPeer, e.what());
  }
  return Status();
}

void ControlChannel::seen(const std::string& peer) {
  auto& p = peers_[peer];
  if (p.lost) spdlog::warn("control: peer '{}' is back after being declared lost", peer);
  p.last_seen = std::chrono::steady_clock::now();
  p.lost = false;
}

void ControlChannel::reject(const std::string& peer, const Status& why) {
  ++num_rejected_;
  spdlog::warn("control: {} rejected a message from '{}': {}", self_id_, peer, why.message());
}

void ControlChannel::tick() {
  auto now = std::chrono::steady_clock::now();
  if (now >= next_heartbeat_) {
    next_heartbeat_ = now + seconds(opts_.heartbeat_interval_s);
    for (auto& [id, p] : peers_) {
      if (p.lost) continue;
      Status s = send(id, MessageType::kHeartbeat, 0, {});
      if (!s.ok()) spdlog::debug("control: heartbeat to '{}': {}", id, s.message());
    }
  }
  auto limit = seconds(opts_.heartbeat_interval_s * opts_.heartbeat_miss_count);
  for (auto& [id, p] : peers_) {
    if (!p.lost && now - p.last_seen > limit) {
      p.lost = true;
      spdlog::warn("control: peer '{}' lost: no message for {:.2f} s ({} heartbeats of {} s)", id,
                   std::chrono::duration<double>(now - p.last_seen).count(),
                   opts_.heartbeat_miss_count, opts_.heartbeat_interval_s);
    }
  }
}

Result<std::optional<ControlMessage>> ControlChannel::receive(double timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + seconds(timeout_s);
  while (true) {
    tick();
    auto now = std::chrono::steady_clock::now();
    // Past the deadline one more poll that does not wait: what is queued is still read, so a
    // zero timeout drains the socket without blocking.
    const bool expired = now >= deadline;
    long ms = 0;
    if (!expired)
      ms = static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::min(deadline, next_heartbeat_) - now)
                                 .count()) +
           1;
    zmq::pollitem_t items[] = {{sock_.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, std::chrono::milliseconds(ms));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;  // a signal (serve's SIGTERM): the loop waits on
      return unavailable("control receive on {}: poll failed: {}", endpoint_, e.what());
    }
    if (!(items[0].revents & ZMQ_POLLIN)) {
      if (expired) return std::optional<ControlMessage>();
      continue;
    }
    std::vector<zmq::message_t> frames;
    try {
      while (true) {
        zmq::message_t f;
        if (!sock_.recv(f, zmq::recv_flags::dontwait)) break;
        bool more = f.more();
        frames.push_back(std::move(f));
        if (!more) break;
      }
    } catch (const zmq::error_t& e) {
      return unavailable("control receive on {}: {}", endpoint_, e.what());
    }
    if (frames.empty()) continue;
    std::string peer = kCoordinatorPeer;
    size_t body = 0;
    if (role_ == Role::kCoordinator) {
      peer = frames[0].to_string();
      body = 1;
    }
    if (frames.size() != body + 1) {
      reject(peer, data_loss("expected 1 body frame, got {}", frames.size() - body));
      continue;
    }
    auto msg = decode_message(frames[body].to_string_view(), opts_.control_max_message_bytes);
    if (!msg.ok()) {
      reject(peer, msg.status());
      continue;
    }
    seen(peer);
    if (msg->type == MessageType::kHeartbeat) continue;
    if (msg->type == MessageType::kHello) {
      spdlog::info("control: worker '{}' connected", peer);
      continue;
    }
    msg->peer = peer;
    return std::optional<ControlMessage>(std::move(msg).value());
  }
}

std::vector<std::string> ControlChannel::live_peers() const {
  std::vector<std::string> out;
  for (const auto& [id, p] : peers_)
    if (!p.lost) out.push_back(id);
  return out;
}

std::vector<std::string> ControlChannel::lost_peers() const {
  std::vector<std::string> out;
  for (const auto& [id, p] : peers_)
    if (p.lost) out.push_back(id);
  return out;
}

bool ControlChannel::is_lost(const std::string& peer) const {
  auto it = peers_.find(peer);
  return it != peers_.end() && it->second.lost;
}

}  // namespace sw::comm

// ZeroMQ ROUTER/DEALER control channel: CURVE authentication, an I/O thread with heartbeats,
// defensive decoding.
#include "comm/control/control_channel.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <iterator>
#include <zmq_addon.hpp>

#include "common/logging.h"

namespace sw::comm {
namespace {

constexpr const char* kCoordinatorPeer = "coordinator";
// What the caller's end of the queue carries: a message for the network ([kind][peer][body])
// or the last word ([kind]): everything before it has been handed on.
constexpr char kOutgoing = 'm';
constexpr char kQuit = 'q';

std::string pipe_endpoint(const void* owner) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "inproc://shardwise-control-%p", owner);
  return buf;
}

// [routing id] + body (the routing id only on the coordinator's ROUTER), never blocking:
// false when the peer's queue is full. With ROUTER_MANDATORY a full queue refuses the first
// frame (and would block the I/O thread without dontwait); an accepted first frame means the
// whole message goes. Throws zmq::error_t (EHOSTUNREACH: the peer is gone).
bool send_now(zmq::socket_t& sock, bool router, const std::string& routing_id,
              zmq::message_t& body) {
  if (router &&
      !sock.send(zmq::buffer(routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait))
    return false;
  return sock.send(body, zmq::send_flags::dontwait).has_value();
}

// The User-Id the ZAP handler gave the connection a frame came in on ("" when none).
std::string user_id_of(zmq::message_t& frame) {
  const char* user = zmq_msg_gets(frame.handle(), "User-Id");
  return user ? std::string(user) : std::string();
}

}  // namespace

ControlChannel::ControlChannel(Role role, const CommOptions& opts)
    : role_(role),
      opts_(opts),
      ctx_(1),
      sock_(ctx_, role == Role::kCoordinator ? zmq::socket_type::router : zmq::socket_type::dealer),
      pipe_in_(ctx_, zmq::socket_type::pair),
      pipe_out_(ctx_, zmq::socket_type::pair) {
  sock_.set(zmq::sockopt::linger, 0);
  // libzmq drops the connection of a peer whose frame exceeds this as soon as the frame's
  // length arrives, before buffering any of it; without it a 1.5 GB frame is held whole
  // before decode_message() can refuse it. Peers that connect (workers) reconnect by
  // themselves, so the channel keeps working.
  sock_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(opts.control_max_message_bytes));
  for (zmq::socket_t* p : {&pipe_in_, &pipe_out_}) {
    p->set(zmq::sockopt::linger, 0);
    p->set(zmq::sockopt::sndhwm, 0);  // the caller's sends never block nor fail for room
    p->set(zmq::sockopt::rcvhwm, 0);
  }
}

ControlChannel::~ControlChannel() { close(0); }

Status ControlChannel::start() {
  try {
    const std::string pipe = pipe_endpoint(this);
    pipe_in_.bind(pipe);
    pipe_out_.connect(pipe);
  } catch (const zmq::error_t& e) {
    return unavailable("control channel: cannot set up its I/O thread: {}", e.what());
  }
  last_run_ = next_heartbeat_ = Clock::now();
  // The socket moves to the thread; starting a thread is the full barrier ZeroMQ asks for.
  io_ = std::thread([this] { run(); });
  return Status();
}

Result<std::unique_ptr<ControlChannel>> ControlChannel::coordinator(const CommOptions& opts,
                                                                    const ControlKeys* keys) {
  SW_RETURN_IF_ERROR(validate(opts));
  std::unique_ptr<ControlChannel> ch(new ControlChannel(Role::kCoordinator, opts));
  ch->self_id_ = kCoordinatorPeer;
  const std::string bind_to =
      opts.control_endpoint.empty() ? std::string(kLoopbackControlEndpoint) : opts.control_endpoint;
  if (keys) {
    if (!is_curve_key(keys->own.public_key) || !is_curve_key(keys->own.secret_key))
      return invalid_argument("control channel: the coordinator's CURVE key pair is malformed");
    std::map<std::string, std::string> admitted;
    for (const auto& [id, key] : keys->workers) {
      if (!admitted.emplace(key, id).second)
        return invalid_argument("control channel: workers '{}' and '{}' have the same public key",
                                printable(admitted[key]), printable(id));
      ch->workers_.insert(id);
    }
    // The handler answers before the socket can accept anyone.
    SW_ASSIGN_OR_RETURN(ch->zap_, ZapHandler::start(ch->ctx_, std::move(admitted),
                                                    "control channel (coordinator)"));
    ch->authenticated_ = true;
  }
  try {
    ch->sock_.set(zmq::sockopt::router_mandatory, 1);
    if (keys) {
      ch->sock_.set(zmq::sockopt::zap_domain, "shardwise-control");
      ch->sock_.set(zmq::sockopt::curve_server, 1);
      ch->sock_.set(zmq::sockopt::curve_secretkey, keys->own.secret_key);
    }
    ch->sock_.bind(bind_to);
    ch->endpoint_ = ch->sock_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return unavailable("control channel: cannot bind ROUTER to '{}' (cluster.control_endpoint): {}",
                       bind_to, e.what());
  }
  if (keys) {
    SW_ASSIGN_OR_RETURN(ch->monitor_, HandshakeMonitor::attach(ch->ctx_, ch->sock_,
                                                               "control channel (coordinator)"));
  }
  SW_RETURN_IF_ERROR(ch->start());
  spdlog::info("control: coordinator listening on {}{}", ch->endpoint_,
               keys ? fmt::format(" (CURVE; {} worker keys admitted)", keys->workers.size())
                    : std::string(" (unauthenticated)"));
  return ch;
}

Result<std::unique_ptr<ControlChannel>> ControlChannel::worker(const CommOptions& opts,
                                                               const std::string& endpoint,
                                                               const std::string& worker_id,
                                                               const ControlKeys* keys) {
  SW_RETURN_IF_ERROR(validate(opts));
  if (worker_id.empty() || worker_id.size() > 255)
    return invalid_argument("control channel: worker id '{}' must have 1..255 bytes",
                            printable(worker_id));
  std::unique_ptr<ControlChannel> ch(new ControlChannel(Role::kWorker, opts));
  ch->self_id_ = worker_id;
  ch->endpoint_ = endpoint;
  try {
    if (keys) {
      if (!is_curve_key(keys->own.public_key) || !is_curve_key(keys->own.secret_key) ||
          !is_curve_key(keys->server_public_key))
        return invalid_argument("control channel: worker '{}' has malformed CURVE keys",
                                printable(worker_id));
      // The coordinator names the worker by its key; a routing id would be a claim anyone
      // could make, so the ROUTER picks one.
      ch->sock_.set(zmq::sockopt::curve_serverkey, keys->server_public_key);
      ch->sock_.set(zmq::sockopt::curve_publickey, keys->own.public_key);
      ch->sock_.set(zmq::sockopt::curve_secretkey, keys->own.secret_key);
      ch->authenticated_ = true;
    } else {
      ch->sock_.set(zmq::sockopt::routing_id, worker_id);
    }
    ch->sock_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return unavailable("control channel: worker '{}' cannot connect to '{}': {}",
                       printable(worker_id), endpoint, e.what());
  }
  ch->peers_[kCoordinatorPeer].last_seen = Clock::now();
  SW_RETURN_IF_ERROR(ch->start());
  SW_RETURN_IF_ERROR(ch->send("", MessageType::kHello, 0, worker_id));
  return ch;
}

Status ControlChannel::send(const std::string& peer, MessageType type, uint64_t request_id,
                            std::string_view payload) {
  const std::string to = role_ == Role::kCoordinator ? peer : kCoordinatorPeer;
  std::string bytes = encode_message(type, request_id, payload);
  if (bytes.size() > opts_.control_max_message_bytes)
    return invalid_argument("control send of {} to '{}': {} bytes exceed {}",
                            message_type_name(type), printable(to), bytes.size(),
                            opts_.control_max_message_bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.ok()) return broken_;
    if (role_ == Role::kCoordinator && !peers_.count(peer))
      return unavailable("control send of {} to '{}': no such worker has connected",
                         message_type_name(type), printable(peer));
  }
  std::lock_guard<std::mutex> lock(send_mu_);
  if (closed_)
    return unavailable("control send of {} to '{}': the channel is closed", message_type_name(type),
                       printable(to));
  try {
    pipe_out_.send(zmq::const_buffer(&kOutgoing, 1), zmq::send_flags::sndmore);
    pipe_out_.send(zmq::buffer(to), zmq::send_flags::sndmore);
    auto* owned = new std::string(std::move(bytes));
    zmq::message_t body(
        owned->data(), owned->size(),
        [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned);
    pipe_out_.send(body, zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    return unavailable("control send of {} to '{}': {}", message_type_name(type), printable(to),
                       e.what());
  }
  return Status();
}

Result<std::optional<ControlMessage>> ControlChannel::receive(double timeout_s) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto deadline = Clock::now() + steady_seconds(timeout_s);
  // A loss since the last receive() (also one between the caller's last look and this call)
  // ends the wait, once.
  arrived_.wait_until(lock, deadline, [&] {
    return !inbox_.empty() || !broken_.ok() || num_losses_ != losses_reported_;
  });
  losses_reported_ = num_losses_;
  if (!inbox_.empty()) {
    ControlMessage m = std::move(inbox_.front());
    inbox_.pop_front();
    return std::optional<ControlMessage>(std::move(m));
  }
  if (!broken_.ok()) return broken_;
  return std::optional<ControlMessage>();
}

void ControlChannel::close(double linger_s) {
  {
    std::lock_guard<std::mutex> lock(send_mu_);
    if (closed_) return;
    closed_ = true;
    if (io_.joinable()) {
      try {
        pipe_out_.send(zmq::const_buffer(&kQuit, 1), zmq::send_flags::none);
      } catch (const zmq::error_t&) {
      }
    }
  }
  if (io_.joinable()) io_.join();
  // The I/O thread handed everything to the socket before it quit; closing with a linger lets
  // libzmq finish writing it before the context ends.
  monitor_.reset();
  try {
    sock_.set(zmq::sockopt::linger, static_cast<int>(std::clamp(linger_s, 0.0, 60.0) * 1000));
  } catch (const zmq::error_t&) {
  }
  sock_.close();
  pipe_in_.close();
  pipe_out_.close();
  zap_.reset();
  ctx_.close();
  std::lock_guard<std::mutex> lock(mu_);
  if (broken_.ok()) broken_ = unavailable("control channel on {} is closed", endpoint_);
  arrived_.notify_all();
}

void ControlChannel::run() {
  while (true) {
    const auto now = Clock::now();
    beat_and_judge(now);
    // Wake for the next heartbeat or the next possible loss, whichever comes first.
    auto wake = next_heartbeat_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto limit = steady_seconds(opts_.heartbeat_interval_s * opts_.heartbeat_miss_count);
      for (const auto& [id, p] : peers_)
        if (!p.lost) wake = std::min(wake, p.last_seen + limit);
    }
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake - Clock::now());
    std::vector<zmq::pollitem_t> items = {{sock_.handle(), 0, ZMQ_POLLIN, 0},
                                          {pipe_in_.handle(), 0, ZMQ_POLLIN, 0}};
    if (monitor_) items.push_back(monitor_->poll_item());
    try {
      zmq::poll(items.data(), items.size(),
                std::chrono::milliseconds(std::max<int64_t>(wait.count() + 1, 0)));
      if (items.size() > 2 && (items[2].revents & ZMQ_POLLIN)) {
        monitor_->drain();
        num_refused_ = monitor_->num_refused();
      }
      if (items[0].revents & ZMQ_POLLIN)
        while (read_incoming()) {
        }
      if (items[1].revents & ZMQ_POLLIN) {
        // Every message the caller queued before its quit has been forwarded when it arrives.
        while (true) {
          zmq::message_t kind;
          if (!pipe_in_.recv(kind, zmq::recv_flags::dontwait)) break;
          if (kind.size() == 1 && *static_cast<const char*>(kind.data()) == kQuit) return;
          zmq::message_t to, body;
          if (!kind.more() || !pipe_in_.recv(to) || !to.more() || !pipe_in_.recv(body)) continue;
          std::string routing_id = to.to_string();
          if (role_ == Role::kCoordinator) {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = peers_.find(routing_id);
            if (it != peers_.end()) routing_id = it->second.routing_id;
          }
          try {
            if (!send_now(sock_, role_ == Role::kCoordinator, routing_id, body)) {
              ++num_send_drops_;
              spdlog::warn("control: {}: send to '{}' dropped: its queue is full", self_id_,
                           printable(to.to_string_view()));
            }
          } catch (const zmq::error_t& e) {
            // A worker that went away: it is declared lost by the heartbeat rule.
            ++num_send_drops_;
            spdlog::debug("control: {}: send to '{}': {}", self_id_, printable(to.to_string_view()),
                          e.what());
          }
        }
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      // A signal handled on this thread (serve's SIGTERM may land on any thread): wait again.
      if (e.num() == EINTR) continue;
      std::lock_guard<std::mutex> lock(mu_);
      broken_ = unavailable("control channel on {}: {}", endpoint_, e.what());
      arrived_.notify_all();
      spdlog::error("{}", broken_.message());
      return;
    }
  }
}

bool ControlChannel::read_incoming() {
  std::vector<zmq::message_t> frames;
  (void)zmq::recv_multipart(sock_, std::back_inserter(frames), zmq::recv_flags::dontwait);
  if (frames.empty()) return false;
  file(frames);
  return true;
}

void ControlChannel::file(std::vector<zmq::message_t>& frames) {
  std::string peer = kCoordinatorPeer;
  std::string routing_id;
  size_t body = 0;
  if (role_ == Role::kCoordinator) {
    routing_id = frames[0].to_string();
    peer = routing_id;
    body = 1;
    if (authenticated_) {
      // The peer is whoever the key proved to be; the routing id is only where replies go.
      const std::string user = frames.size() > 1 ? user_id_of(frames[1]) : std::string();
      if (!workers_.count(user)) {
        reject(routing_id, "no authenticated worker id on its connection");
        return;
      }
      peer = user;
    }
  }
  if (frames.size() != body + 1) {
    reject(peer, fmt::format("expected 1 body frame, got {}", frames.size() - body));
    return;
  }
  auto msg = decode_message(frames[body].to_string_view(), opts_.control_max_message_bytes);
  if (!msg.ok()) {
    reject(peer, msg.status().message());
    return;
  }
  if (msg->type == MessageType::kHello && role_ == Role::kCoordinator && authenticated_ &&
      msg->payload != peer) {
    reject(peer, fmt::format("its hello claims to be '{}'", printable(msg->payload)));
    return;
  }
  seen(peer, routing_id);
  if (msg->type == MessageType::kHeartbeat) return;
  if (msg->type == MessageType::kHello) {
    spdlog::info("control: worker '{}' connected{}", printable(peer),
                 authenticated_ ? " (CURVE key verified)" : "");
    // A heartbeat at once: the worker counts the coordinator's silence from its own start.
    if (role_ == Role::kCoordinator) {
      try {
        zmq::message_t beat(encode_message(MessageType::kHeartbeat, 0, {}));
        (void)send_now(sock_, true, routing_id, beat);
      } catch (const zmq::error_t& e) {
        spdlog::debug("control: heartbeat to '{}': {}", printable(peer), e.what());
      }
    }
    return;
  }
  msg->peer = peer;
  std::lock_guard<std::mutex> lock(mu_);
  inbox_.push_back(std::move(msg).value());
  arrived_.notify_one();
}

void ControlChannel::seen(const std::string& peer, const std::string& routing_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& p = peers_[peer];
  if (p.lost) spdlog::warn("control: peer '{}' is back after being declared lost", printable(peer));
  p.last_seen = Clock::now();
  p.lost = false;
  p.heard = true;
  if (role_ == Role::kCoordinator) p.routing_id = routing_id;  // the newest connection wins
}

void ControlChannel::reject(const std::string& peer, const std::string& why) {
  const int64_t n = ++num_rejected_;
  if (n <= 10 || n % 1000 == 0)
    spdlog::warn("control: {} rejected a message from '{}': {} ({} rejected so far)",
                 printable(self_id_), printable(peer), printable(why), n);
}

void ControlChannel::beat_and_judge(Clock::time_point now) {
  const auto interval = steady_seconds(opts_.heartbeat_interval_s);
  const auto limit = steady_seconds(opts_.heartbeat_interval_s * opts_.heartbeat_miss_count);
  std::vector<std::string> due;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // This thread wakes at least once per interval. A longer gap means this process did not
    // run (stopped, or starved of CPU): it could not hear anyone meanwhile, so that time does
    // not count as the peers' silence.
    const auto gap = now - last_run_;
    if (gap > 2 * interval) {
      spdlog::warn("control: {} did not run for {:.2f} s; peers' silence is counted from now",
                   printable(self_id_), std::chrono::duration<double>(gap).count());
      for (auto& [id, p] : peers_) p.last_seen = std::min(now, p.last_seen + gap);
    }
    last_run_ = now;
    for (auto& [id, p] : peers_) {
      if (!p.lost && now - p.last_seen > limit) {
        p.lost = true;
        ++num_losses_;
        arrived_.notify_all();
        spdlog::warn("control: peer '{}' lost: no message for {:.2f} s ({} heartbeats of {} s)",
                     printable(id), std::chrono::duration<double>(now - p.last_seen).count(),
                     opts_.heartbeat_miss_count, opts_.heartbeat_interval_s);
      }
      if (now >= next_heartbeat_ && !p.lost)
        due.push_back(role_ == Role::kCoordinator ? p.routing_id : std::string());
    }
  }
  if (now < next_heartbeat_) return;
  next_heartbeat_ = now + interval;
  const std::string beat = encode_message(MessageType::kHeartbeat, 0, {});
  for (const std::string& routing_id : due) {
    try {
      zmq::message_t m(beat);
      (void)send_now(sock_, role_ == Role::kCoordinator, routing_id, m);
    } catch (const zmq::error_t& e) {
      spdlog::debug("control: heartbeat from {}: {}", printable(self_id_), e.what());
    }
  }
}

std::vector<std::string> ControlChannel::live_peers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [id, p] : peers_)
    if (!p.lost) out.push_back(id);
  return out;
}

std::vector<std::string> ControlChannel::lost_peers() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [id, p] : peers_)
    if (p.lost) out.push_back(id);
  return out;
}

bool ControlChannel::ever_heard(const std::string& peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(peer);
  return it != peers_.end() && it->second.heard;
}

bool ControlChannel::is_lost(const std::string& peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = peers_.find(peer);
  return it != peers_.end() && it->second.lost;
}

}  // namespace sw::comm

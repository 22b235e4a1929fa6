// The ZeroMQ endpoint's thread: ROUTER in, ready requests to the engine loop, its events back
// out as token streams (see zmq_server.h).
#include "frontend/zmq_server.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <iterator>
#include <thread>
#include <zmq_addon.hpp>

#include "comm/options.h"
#include "common/limits.h"
#include "common/logging.h"
#include "frontend/json_limits.h"

namespace sw::frontend {

namespace {

namespace serve = coordinator::serve;
using coordinator::FinishReason;
using coordinator::RequestUpdate;
using serve::ProtocolError;

// Deeper than any request of the wire format needs (it nests 2 levels).
constexpr int kMaxJsonDepth = 16;
// Longest a turn reads frames before it sends what the engine produced.
constexpr double kReceiveSliceS = 0.005;
// Frames up to this size are parsed at once on the server's thread (a prompt of ~8k ids);
// larger ones on the large-frame lane, at most kLargeLaneDepth waiting.
constexpr int64_t kInlineFrameBytes = 64 << 10;
constexpr size_t kLargeLaneDepth = 8;

Status check_endpoint(const std::string& e) {
  if (e.rfind("tcp://", 0) == 0 || e.rfind("ipc://", 0) == 0) return Status();
  return invalid_argument(
      "serve endpoint '{}': expected tcp://HOST:PORT (PORT * = any free port) or ipc://PATH", e);
}

bool is_loopback(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0) return true;
  const std::string host = endpoint.substr(6, endpoint.rfind(':') - 6);
  return host.rfind("127.", 0) == 0 || host == "localhost" || host == "[::1]" || host == "::1";
}

}  // namespace

std::string describe_peer(const std::string& routing_id, const std::string& address) {
  std::string hex;
  for (unsigned char c : routing_id.substr(0, 16)) hex += fmt::format("{:02x}", c);
  if (routing_id.size() > 16) hex += "...";
  return address.empty() ? fmt::format("client {}", hex)
                         : fmt::format("client {} from {}", hex, address);
}

// The large-frame lane: one thread at the lowest scheduling priority that parses frames over
// kInlineFrameBytes and hands the results back through the server's inbox, so a client that
// floods large frames costs the others neither the server's thread nor the engine's CPU.
class ZmqServer::LargeLane {
 public:
  LargeLane(std::shared_ptr<Inbox> inbox) : inbox_(std::move(inbox)), thread_([this] { run(); }) {}
  ~LargeLane() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  bool push(LargeFrame f) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.size() >= kLargeLaneDepth) return false;
      queue_.push_back(std::move(f));
    }
    cv_.notify_one();
    return true;
  }

 private:
  void run() {
    // Lowest priority for this thread only (Linux nice values are per thread).
    (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
    for (;;) {
      LargeFrame f;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        f = std::move(queue_.front());
        queue_.pop_front();
      }
      Parsed p = parse_frame(
          std::string_view(static_cast<const char*>(f.payload.data()), f.payload.size()));
      {
        std::lock_guard<std::mutex> lock(inbox_->mu);
        inbox_->parsed.emplace_back(std::move(f.routing_id), std::move(p));
      }
      const uint64_t one = 1;
      (void)!::write(inbox_->event_fd, &one, sizeof(one));
    }
  }

  std::shared_ptr<Inbox> inbox_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<LargeFrame> queue_;
  bool stop_ = false;
  std::thread thread_;
};

ZmqServer::ZmqServer(const ZmqServerOptions& options, serve::ServerInfo info,
                     coordinator::EngineLoop* loop)
    : options_(options),
      info_(std::move(info)),
      loop_(loop),
      socket_(context_, zmq::socket_type::router),
      inbox_(std::make_shared<Inbox>()) {}

ZmqServer::~ZmqServer() {
  large_lane_.reset();  // joins its thread
}

ZmqServer::Inbox::~Inbox() {
  // Here, not in ~ZmqServer: a sink that still holds the inbox may still write to the fd.
  if (event_fd >= 0) ::close(event_fd);
}

Result<std::unique_ptr<ZmqServer>> ZmqServer::bind(const ZmqServerOptions& options,
                                                   serve::ServerInfo info,
                                                   coordinator::EngineLoop* loop) {
  SW_RETURN_IF_ERROR(check_endpoint(options.endpoint));
  if (!(options.heartbeat_s >= 1e-3 && options.heartbeat_s <= limits::kMaxTimeoutS) ||
      options.max_frame_bytes < 1 || options.send_hwm < 1)
    return invalid_argument(
        "serve: heartbeat ({} s) must be in [0.001, {:g}] s, frame limit ({}) and send queue "
        "({}) >= 1",
        options.heartbeat_s, limits::kMaxTimeoutS, options.max_frame_bytes, options.send_hwm);
  std::unique_ptr<ZmqServer> s(new ZmqServer(options, std::move(info), loop));
  s->inbox_->event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->inbox_->event_fd < 0) return unavailable("serve: eventfd: {}", std::strerror(errno));
  s->large_lane_ = std::make_unique<LargeLane>(s->inbox_);
  try {
    s->socket_.set(zmq::sockopt::router_mandatory, 1);  // a send to a gone client fails
    s->socket_.set(zmq::sockopt::linger, 0);
    s->socket_.set(zmq::sockopt::sndhwm, options.send_hwm);
    s->socket_.set(zmq::sockopt::maxmsgsize, options.max_frame_bytes);
    s->socket_.bind(options.endpoint);
    s->endpoint_ = s->socket_.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return unavailable("serve: cannot bind '{}' (--endpoint): {}", options.endpoint, e.what());
  }
  if (!is_loopback(s->endpoint_))
    spdlog::warn("serve: {} is reachable from other machines and has no authentication",
                 s->endpoint_);
  s->next_heartbeat_ = Clock::now();
  return s;
}

uint64_t ZmqServer::ticket(const std::string& client_request_id) const {
  for (const auto& [t, o] : open_)
    if (o.id == client_request_id) return t;
  return 0;
}

Status ZmqServer::run(const std::atomic<bool>& stop) {
  Status st;
  while (st.ok() && !stop.load()) st = run_once(0.05);
  take_events();  // the engine loop has drained: its last events go out
  // Whatever is still open (the loop stopped on an error, or this thread failed) is told so,
  // rather than left to its client's timeout.
  std::vector<uint64_t> tickets;
  for (const auto& [t, o] : open_) tickets.push_back(t);
  for (uint64_t t : tickets) {
    auto it = open_.find(t);
    if (it == open_.end()) continue;  // its client was dropped by an earlier send
    const Open o = it->second;
    open_.erase(it);
    loop_->abort(t, "the server is shutting down");
    if (auto c = clients_.find(o.routing_id); c != clients_.end()) c->second.open.erase(o.id);
    reject(o.routing_id, ProtocolError{serve::kShuttingDown,
                                       "the server stopped before this request ended", o.id});
  }
  // A moment for the last messages to leave before the socket closes.
  socket_.set(zmq::sockopt::linger, 1000);
  return st;
}

Status ZmqServer::run_once(double max_wait_s) {
  zmq::pollitem_t items[2] = {{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0},
                              {nullptr, inbox_->event_fd, ZMQ_POLLIN, 0}};
  try {
    zmq::poll(items, 2,
              std::chrono::milliseconds(static_cast<int64_t>(std::max(0.0, max_wait_s) * 1000.0)));
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) return unavailable("serve: poll on {}: {}", endpoint_, e.what());
  }
  uint64_t count = 0;
  if (::read(inbox_->event_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
    return unavailable("serve: reading the engine's event fd: {}", std::strerror(errno));
  take_events();
  SW_RETURN_IF_ERROR(receive((items[0].revents & ZMQ_POLLIN) != 0));
  heartbeats();
  return Status();
}

Status ZmqServer::receive(bool have_frames) {
  if (!have_frames) return Status();
  // A turn reads for at most kReceiveSliceS, and hands the engine's events out between frames:
  // a client flooding expensive frames delays the others' frames by one of its own at most
  // (ROUTER queues fairly between peers), never their tokens.
  const auto slice_end = Clock::now() + comm::steady_seconds(kReceiveSliceS);
  for (int n = 0; n < 4096 && Clock::now() < slice_end; ++n) {
    if (n > 0) take_events();
    std::vector<zmq::message_t> frames;
    std::optional<size_t> got;
    try {
      got = zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return Status();
      return unavailable("serve: receive on {}: {}", endpoint_, e.what());
    }
    if (!got) break;
    if (frames.empty()) continue;
    const std::string routing_id = frames[0].to_string();
    std::string address;
    try {
      if (frames.size() > 1) address = frames.back().gets("Peer-Address");
    } catch (const zmq::error_t&) {
    }
    const bool envelope = frames.size() == 3 && frames[1].size() == 0;
    if (frames.size() != 2 && !envelope) {
      auto [it, is_new] = clients_.try_emplace(routing_id);
      if (is_new) it->second.peer = describe_peer(routing_id, address);
      reject(routing_id, ProtocolError{serve::kBadFrame,
                                       fmt::format("a message is one frame of JSON (optionally "
                                                   "after an empty delimiter frame); got {} frames",
                                                   frames.size() - 1),
                                       ""});
      forget_if_idle(routing_id);
      continue;
    }
    handle(routing_id, envelope, std::move(frames.back()), address);
  }
  return Status();
}

ZmqServer::Parsed ZmqServer::parse_frame(std::string_view frame) {
  Parsed p;
  // Depth-bounded, duplicate keys refused: a hostile frame costs one linear pass and is never
  // half-read into a request.
  auto doc = parse_json_bounded(frame, kMaxJsonDepth, /*reject_duplicate_keys=*/true);
  if (!doc.ok()) {
    p.error = ProtocolError{
        serve::kBadFrame,
        fmt::format("a message is one JSON object per frame: {}", doc.status().message()), ""};
    return p;
  }
  auto parsed = serve::parse_client_message(*doc, frame.size(), &p.error);
  if (parsed.ok()) p.message = std::move(parsed).value();
  return p;
}

void ZmqServer::handle(const std::string& routing_id, bool envelope, zmq::message_t&& payload,
                       const std::string& address) {
  auto [it, is_new] = clients_.try_emplace(routing_id);
  if (is_new) it->second.peer = describe_peer(routing_id, address);
  it->second.envelope = envelope;
  // A client with frames on the lane sends its small ones there too, so that its frames are
  // acted on in the order it sent them (an abort never overtakes its own generate).
  if (static_cast<int64_t>(payload.size()) <= kInlineFrameBytes && it->second.in_lane == 0) {
    Parsed p =
        parse_frame(std::string_view(static_cast<const char*>(payload.data()), payload.size()));
    act(routing_id, std::move(p));
  } else {
    // Large frames (and the frames a client sends behind them) are parsed on the large-frame
    // lane, so that other clients' small frames never wait behind them; a lane already full
    // refuses the frame unread.
    ++it->second.in_lane;
    if (!large_lane_->push(LargeFrame{routing_id, std::move(payload)})) {
      --it->second.in_lane;
      reject(routing_id,
             ProtocolError{serve::kOverloaded,
                           fmt::format("{} large frames are waiting to be parsed; send this one "
                                       "again later",
                                       kLargeLaneDepth),
                           ""});
    }
  }
  forget_if_idle(routing_id);  // only clients with open requests (or frames in the lane) stay
}

void ZmqServer::act(const std::string& routing_id, Parsed&& p) {
  auto it = clients_.find(routing_id);
  if (it == clients_.end()) return;  // dropped meanwhile
  Client& client = it->second;
  if (!p.message) {
    reject(routing_id, p.error);
    return;
  }
  serve::ClientMessage& m = *p.message;
  switch (m.type) {
    case serve::ClientMessageType::kPing:
      send(routing_id, serve::encode_simple(serve::ServerMessageType::kPong));
      return;
    case serve::ClientMessageType::kInfo: send(routing_id, serve::encode_info(info_)); return;
    case serve::ClientMessageType::kStats:
      send(routing_id, serve::encode_stats(loop_->snapshot().stats));
      return;
    case serve::ClientMessageType::kAbort: {
      auto o = client.open.find(m.id);
      if (o == client.open.end()) {
        reject(
            routing_id,
            ProtocolError{serve::kUnknownId,
                          fmt::format("abort: no open request '{}' from this client", m.id), m.id});
        return;
      }
      // Its done message (finish_reason abort) follows once the engine loop has ended it.
      loop_->abort(o->second, "aborted by the client");
      ++counters_.aborted;
      return;
    }
    case serve::ClientMessageType::kGenerate: break;
  }
  serve::GenerateRequest& g = m.generate;
  // A REQ socket takes one reply per request: the done message with every token, no
  // heartbeats (a REQ client cannot be told apart from a vanished one while it waits).
  if (client.envelope) g.stream = false;
  if (loop_->draining()) {
    reject(routing_id, ProtocolError{serve::kShuttingDown, "the server is shutting down", g.id});
    return;
  }
  if (g.id.empty()) {
    do g.id = fmt::format("req-{}", next_auto_id_++);
    while (client.open.count(g.id));
  } else if (client.open.count(g.id)) {
    reject(routing_id,
           ProtocolError{serve::kDuplicateId,
                         fmt::format("request '{}' is already open on this client", g.id), g.id});
    return;
  }
  // Checked here, on this thread: the engine only gets requests that can run.
  if (Status st = coordinator::check_request_fits(g.spec, info_.vocab_size, info_.max_model_len);
      !st.ok()) {
    reject(routing_id, ProtocolError{serve::kInvalidRequest, st.message(), g.id});
    return;
  }
  std::weak_ptr<Inbox> weak = inbox_;
  const uint64_t ticket = loop_->submit(std::move(g.spec), [weak](RequestUpdate&& e) {
    auto inbox = weak.lock();
    if (!inbox) return;
    {
      std::lock_guard<std::mutex> lock(inbox->mu);
      inbox->events.emplace_back(e.ticket, std::move(e));
    }
    const uint64_t one = 1;
    (void)!::write(inbox->event_fd, &one, sizeof(one));
  });
  client.open[g.id] = ticket;
  Open o;
  o.routing_id = routing_id;
  o.id = g.id;
  o.stream = g.stream;
  open_.emplace(ticket, std::move(o));
  spdlog::debug("serve: {} request '{}' is ticket {}", client.peer, g.id, ticket);
}

void ZmqServer::take_events() {
  std::deque<std::pair<uint64_t, RequestUpdate>> events;
  std::deque<std::pair<std::string, Parsed>> parsed;
  {
    std::lock_guard<std::mutex> lock(inbox_->mu);
    events.swap(inbox_->events);
    parsed.swap(inbox_->parsed);
  }
  for (auto& [ticket, e] : events) on_event(ticket, std::move(e));
  for (auto& [routing_id, p] : parsed) {
    auto c = clients_.find(routing_id);
    if (c == clients_.end()) continue;  // dropped while its frame waited
    // A client dropped and back on the same routing id has a new entry: its count starts at 0.
    if (c->second.in_lane > 0) --c->second.in_lane;
    act(routing_id, std::move(p));
    forget_if_idle(routing_id);
  }
}

void ZmqServer::on_event(uint64_t ticket, RequestUpdate&& e) {
  auto it = open_.find(ticket);
  if (it == open_.end()) return;  // its client is gone
  Open& o = it->second;
  const std::string routing_id = o.routing_id;  // `o` goes if the client is dropped
  if (e.rejected || e.unavailable) {
    const std::string id = o.id;
    open_.erase(it);
    if (auto c = clients_.find(routing_id); c != clients_.end()) c->second.open.erase(id);
    const char* code = e.rejected          ? serve::kInvalidRequest
                       : loop_->draining() ? serve::kShuttingDown
                                           : serve::kOverloaded;
    reject(routing_id, ProtocolError{code, e.error, id});
    forget_if_idle(routing_id);
    return;
  }
  if (!o.counted) {
    o.counted = true;
    ++counters_.accepted;
  }
  if (!e.new_tokens.empty()) {
    o.tokens.insert(o.tokens.end(), e.new_tokens.begin(), e.new_tokens.end());
    if (o.stream) {
      const std::string msg = serve::encode_tokens(o.id, e.new_tokens, o.num_sent);
      o.num_sent += static_cast<int64_t>(e.new_tokens.size());
      if (!send(routing_id, msg)) return;
    }
  }
  if (!e.finished) return;
  const Open done = std::move(o);
  open_.erase(it);
  if (auto c = clients_.find(routing_id); c != clients_.end()) c->second.open.erase(done.id);
  ++counters_.completed;
  send(routing_id, serve::encode_done(done.id, e.summary, done.stream ? nullptr : &done.tokens));
  forget_if_idle(routing_id);
}

bool ZmqServer::send(const std::string& routing_id, const std::string& payload) {
  auto c = clients_.find(routing_id);
  if (c == clients_.end()) return false;
  std::string why;
  try {
    // With ROUTER_MANDATORY a full queue refuses the first frame (EAGAIN with dontwait, else a
    // send that blocks the thread until the client reads); the rest of an accepted message
    // always goes.
    constexpr auto more = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
    if (socket_.send(zmq::buffer(routing_id), more)) {
      if (c->second.envelope) socket_.send(zmq::message_t(), more);
      socket_.send(zmq::buffer(payload), zmq::send_flags::dontwait);
      c->second.last_sent = Clock::now();
      return true;
    }
    why = fmt::format("stopped reading ({} messages queued)", options_.send_hwm);
  } catch (const zmq::error_t& e) {
    why = e.num() == EHOSTUNREACH ? "disconnected" : fmt::format("send failed: {}", e.what());
  }
  drop_client(routing_id, why);
  return false;
}

void ZmqServer::reject(const std::string& routing_id, const ProtocolError& e) {
  ++counters_.rejected;
  // The first 100 refusals, then one in 1000: a client sending garbage cannot flood the log.
  // The id and message may quote the client's bytes: escaped (printable), on one line.
  if (counters_.rejected <= 100 || counters_.rejected % 1000 == 0) {
    auto c = clients_.find(routing_id);
    spdlog::warn("serve: {}: refused{}: {}: {} ({} refused so far)",
                 c == clients_.end() ? "client" : c->second.peer,
                 e.id.empty() ? "" : fmt::format(" request '{}'", printable(e.id)), e.code,
                 printable(e.message), counters_.rejected);
  }
  send(routing_id, serve::encode_error(e));
}

void ZmqServer::drop_client(const std::string& routing_id, const std::string& why) {
  auto c = clients_.find(routing_id);
  if (c == clients_.end()) return;
  const size_t n = c->second.open.size();
  if (n > 0) {
    ++counters_.disconnects;
    spdlog::warn("serve: {} {}: aborting its {} open request(s)", c->second.peer, why, n);
  }
  for (const auto& [id, ticket] : c->second.open) {
    loop_->abort(ticket, fmt::format("its client {}", why));
    open_.erase(ticket);
    ++counters_.dropped_requests;
  }
  clients_.erase(c);
}

void ZmqServer::heartbeats() {
  const auto now = Clock::now();
  if (now < next_heartbeat_) return;
  const auto period = comm::steady_seconds(options_.heartbeat_s);
  next_heartbeat_ = now + period / 4;
  std::vector<std::string> due;
  for (const auto& [rid, c] : clients_)
    if (!c.open.empty() && !c.envelope && now - c.last_sent >= period) due.push_back(rid);
  const std::string beat = serve::encode_simple(serve::ServerMessageType::kHeartbeat);
  for (const auto& rid : due) send(rid, beat);
}

void ZmqServer::forget_if_idle(const std::string& routing_id) {
  auto c = clients_.find(routing_id);
  if (c != clients_.end() && c->second.open.empty() && c->second.in_lane == 0) clients_.erase(c);
}

}  // namespace sw::frontend

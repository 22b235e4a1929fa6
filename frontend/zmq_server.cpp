// The ZeroMQ endpoint's thread: ROUTER in, ready requests to the engine loop, its events back
// out as token streams (see zmq_server.h).
#include "frontend/zmq_server.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <iterator>
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

ZmqServer::ZmqServer(const ZmqServerOptions& options, serve::ServerInfo info,
                     coordinator::EngineLoop* loop)
    : options_(options),
      info_(std::move(info)),
      loop_(loop),
      socket_(context_, zmq::socket_type::router),
      inbox_(std::make_shared<Inbox>()) {}

ZmqServer::~ZmqServer() {
  if (inbox_->event_fd >= 0) ::close(inbox_->event_fd);
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
  if (s->inbox_->event_fd < 0)
    return unavailable("serve: eventfd: {}", std::strerror(errno));
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
  while (!stop.load()) SW_RETURN_IF_ERROR(run_once(0.05));
  take_events();  // the engine loop has drained: its last events go out
  return Status();
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
  // A bounded batch per turn, so a flood of frames cannot starve the engine's events.
  for (int n = 0; n < 4096; ++n) {
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
    const zmq::message_t& payload = frames.back();
    handle(routing_id, envelope,
           std::string_view(static_cast<const char*>(payload.data()), payload.size()), address);
  }
  return Status();
}

void ZmqServer::handle(const std::string& routing_id, bool envelope, std::string_view frame,
                       const std::string& address) {
  handle_message(routing_id, envelope, frame, address);
  forget_if_idle(routing_id);  // only clients with open requests are kept
}

void ZmqServer::handle_message(const std::string& routing_id, bool envelope,
                               std::string_view frame, const std::string& address) {
  auto [it, is_new] = clients_.try_emplace(routing_id);
  Client& client = it->second;
  if (is_new) client.peer = describe_peer(routing_id, address);
  client.envelope = envelope;
  // Depth-bounded, duplicate keys refused: a hostile frame costs this thread one linear pass
  // and is never half-read into a request.
  auto doc = parse_json_bounded(frame, kMaxJsonDepth, /*reject_duplicate_keys=*/true);
  if (!doc.ok()) {
    reject(routing_id, ProtocolError{serve::kBadFrame,
                                     fmt::format("a message is one JSON object per frame: {}",
                                                 doc.status().message()),
                                     ""});
    return;
  }
  ProtocolError err;
  auto parsed = serve::parse_client_message(*doc, frame.size(), &err);
  if (!parsed.ok()) {
    reject(routing_id, err);
    return;
  }
  serve::ClientMessage& m = *parsed;
  switch (m.type) {
    case serve::ClientMessageType::kPing:
      send(routing_id, serve::encode_simple(serve::ServerMessageType::kPong));
      return;
    case serve::ClientMessageType::kInfo:
      send(routing_id, serve::encode_info(info_));
      return;
    case serve::ClientMessageType::kStats:
      send(routing_id, serve::encode_stats(loop_->snapshot().stats));
      return;
    case serve::ClientMessageType::kAbort: {
      auto o = client.open.find(m.id);
      if (o == client.open.end()) {
        reject(routing_id,
               ProtocolError{serve::kUnknownId,
                             fmt::format("abort: no open request '{}' from this client", m.id),
                             m.id});
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
  {
    std::lock_guard<std::mutex> lock(inbox_->mu);
    events.swap(inbox_->events);
  }
  for (auto& [ticket, e] : events) on_event(ticket, std::move(e));
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
    const char* code = e.rejected           ? serve::kInvalidRequest
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
  if (c != clients_.end() && c->second.open.empty()) clients_.erase(c);
}

}  // namespace sw::frontend

// The serve loop: ROUTER in, Engine, token streams out (see server.h).
#include "coordinator/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <iterator>
#include <nlohmann/json.hpp>
#include <zmq_addon.hpp>

#include "comm/options.h"
#include "common/limits.h"
#include "common/logging.h"

namespace sw::coordinator {

namespace {

using serve::ProtocolError;

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

Server::Server(const ServerOptions& options, serve::ServerInfo info)
    : options_(options), info_(std::move(info)), socket_(context_, zmq::socket_type::router) {}

Server::~Server() = default;

Result<std::unique_ptr<Server>> Server::bind(const ServerOptions& options, serve::ServerInfo info) {
  SW_RETURN_IF_ERROR(check_endpoint(options.endpoint));
  const auto seconds_ok = [](double s, double min) {
    return s >= min && s <= limits::kMaxTimeoutS;
  };
  if (!seconds_ok(options.heartbeat_s, 1e-3) || !seconds_ok(options.drain_timeout_s, 0) ||
      options.max_frame_bytes < 1 || options.max_open_requests < 1 || options.send_hwm < 1)
    return invalid_argument(
        "serve: heartbeat ({} s) must be in [0.001, {:g}] s, drain timeout ({} s) in [0, {:g}] "
        "s, frame limit ({}), open request limit ({}) and send queue ({}) >= 1",
        options.heartbeat_s, limits::kMaxTimeoutS, options.drain_timeout_s, limits::kMaxTimeoutS,
        options.max_frame_bytes, options.max_open_requests, options.send_hwm);
  std::unique_ptr<Server> s(new Server(options, std::move(info)));
  try {
    s->socket_.set(zmq::sockopt::router_mandatory, 1);  // a send to a gone client fails
    s->socket_.set(zmq::sockopt::linger, 0);
    s->socket_.set(zmq::sockopt::sndhwm, options.send_hwm);
    s->socket_.set(zmq::sockopt::maxmsgsize,
                   std::max(options.hard_frame_bytes, options.max_frame_bytes + 4096));
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

int64_t Server::engine_id(const std::string& client_request_id) const {
  for (const auto& [eid, o] : open_)
    if (o.id == client_request_id) return eid;
  return -1;
}

Status Server::run(Engine& engine, const std::atomic<int>& stop) {
  bool aborted = false;
  while (!drained(engine)) {
    const int level = stop.load();
    if (level >= 1) begin_drain();
    if (level >= 2 && !aborted) {
      aborted = true;
      abort_open(engine, "server stopped by a second signal");
    }
    SW_RETURN_IF_ERROR(run_once(engine, 0.05));
  }
  return Status();
}

void Server::begin_drain() {
  if (draining_) return;
  draining_ = true;
  drain_deadline_ = Clock::now() + comm::steady_seconds(options_.drain_timeout_s);
  spdlog::warn("serve: stopping: {} open request(s) get {:.0f} s to finish; new ones are refused",
               open_.size(), options_.drain_timeout_s);
}

Status Server::run_once(Engine& engine, double max_wait_s) {
  const bool active = engine.has_unfinished() || engine.busy();
  SW_RETURN_IF_ERROR(receive(engine, active ? 0.0 : max_wait_s));
  // Stepped even when idle: that keeps the workers' heartbeats going and notices a lost one.
  // A short wait for a step: new requests are read again within 2 ms.
  const bool work = engine.has_unfinished() || engine.busy();
  SW_ASSIGN_OR_RETURN(auto outputs, engine.step(work ? 0.002 : 0.0));
  deliver(engine, outputs);
  if (draining_ && !open_.empty() && Clock::now() >= drain_deadline_)
    abort_open(engine, fmt::format("server shutting down: not finished within the {:.0f} s drain "
                                   "timeout",
                                   options_.drain_timeout_s));
  heartbeats(engine);
  return Status();
}

Status Server::receive(Engine& engine, double max_wait_s) {
  zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
  try {
    const int rc = zmq::poll(
        &item, 1,
        std::chrono::milliseconds(static_cast<int64_t>(std::max(0.0, max_wait_s) * 1000.0)));
    if (rc <= 0) return Status();
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return Status();  // SIGTERM: the caller starts the drain
    return unavailable("serve: poll on {}: {}", endpoint_, e.what());
  }
  // A bounded batch per turn, so a flood of frames cannot starve the engine.
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
      reject(engine, routing_id,
             ProtocolError{serve::kBadFrame,
                           fmt::format("a message is one frame of JSON (optionally after an "
                                       "empty delimiter frame); got {} frames",
                                       frames.size() - 1),
                           ""});
      forget_if_idle(routing_id);
      continue;
    }
    const zmq::message_t& payload = frames.back();
    handle(engine, routing_id, envelope,
           std::string_view(static_cast<const char*>(payload.data()), payload.size()), address);
  }
  return Status();
}

void Server::handle(Engine& engine, const std::string& routing_id, bool envelope,
                    std::string_view frame, const std::string& address) {
  handle_message(engine, routing_id, envelope, frame, address);
  forget_if_idle(routing_id);  // only clients with open requests are kept
}

void Server::handle_message(Engine& engine, const std::string& routing_id, bool envelope,
                            std::string_view frame, const std::string& address) {
  auto [it, is_new] = clients_.try_emplace(routing_id);
  Client& client = it->second;
  if (is_new) client.peer = describe_peer(routing_id, address);
  client.envelope = envelope;
  if (static_cast<int64_t>(frame.size()) > options_.max_frame_bytes) {
    reject(engine, routing_id,
           ProtocolError{serve::kTooLarge,
                         fmt::format("frame of {} bytes exceeds the server's limit of {} bytes",
                                     frame.size(), options_.max_frame_bytes),
                         ""});
    return;
  }
  ProtocolError err;
  auto parsed = serve::parse_client_message(frame, &err);
  if (!parsed.ok()) {
    reject(engine, routing_id, err);
    return;
  }
  serve::ClientMessage& m = *parsed;
  switch (m.type) {
    case serve::ClientMessageType::kPing:
      send(engine, routing_id, serve::encode_simple(serve::ServerMessageType::kPong));
      return;
    case serve::ClientMessageType::kInfo:
      send(engine, routing_id, serve::encode_info(info_));
      return;
    case serve::ClientMessageType::kStats:
      send(engine, routing_id, serve::encode_stats(serve::engine_stats(engine)));
      return;
    case serve::ClientMessageType::kAbort: {
      auto o = client.open.find(m.id);
      if (o == client.open.end()) {
        reject(
            engine, routing_id,
            ProtocolError{serve::kUnknownId,
                          fmt::format("abort: no open request '{}' from this client", m.id), m.id});
        return;
      }
      const int64_t eid = o->second;
      (void)engine.abort(eid);
      ++counters_.aborted;
      finish(engine, eid);
      return;
    }
    case serve::ClientMessageType::kGenerate: break;
  }
  serve::GenerateRequest& g = m.generate;
  // A REQ socket takes one reply per request: the done message with every token, no
  // heartbeats (a REQ client cannot be told apart from a vanished one while it waits).
  if (client.envelope) g.stream = false;
  if (draining_) {
    reject(engine, routing_id,
           ProtocolError{serve::kShuttingDown, "the server is shutting down", g.id});
    return;
  }
  if (static_cast<int64_t>(open_.size()) >= options_.max_open_requests) {
    reject(
        engine, routing_id,
        ProtocolError{serve::kOverloaded,
                      fmt::format("{} requests are open, the server's limit", open_.size()), g.id});
    return;
  }
  if (g.id.empty()) {
    do g.id = fmt::format("req-{}", next_auto_id_++);
    while (client.open.count(g.id));
  } else if (client.open.count(g.id)) {
    reject(engine, routing_id,
           ProtocolError{serve::kDuplicateId,
                         fmt::format("request '{}' is already open on this client", g.id), g.id});
    return;
  }
  auto added = engine.add(std::move(g.spec));
  if (!added.ok()) {
    reject(engine, routing_id,
           ProtocolError{serve::kInvalidRequest, added.status().message(), g.id});
    return;
  }
  ++counters_.accepted;
  client.open[g.id] = *added;
  open_[*added] = Open{routing_id, g.id, g.stream, 0};
  spdlog::debug("serve: {} request '{}' is engine request {}", client.peer, g.id, *added);
}

void Server::deliver(Engine& engine, const std::vector<RequestOutput>& outputs) {
  for (const RequestOutput& out : outputs) {
    auto it = open_.find(out.id);
    if (it == open_.end()) continue;  // its client is gone (aborted, released)
    Open& o = it->second;
    if (o.stream && !out.new_tokens.empty()) {
      const std::string routing_id = o.routing_id;  // `o` goes if the client is dropped
      const std::string msg = serve::encode_tokens(o.id, out.new_tokens, o.num_sent);
      o.num_sent += static_cast<int64_t>(out.new_tokens.size());
      if (!send(engine, routing_id, msg)) continue;
    }
    if (out.finished()) finish(engine, out.id);
  }
}

void Server::finish(Engine& engine, int64_t engine_id) {
  auto it = open_.find(engine_id);
  if (it == open_.end()) return;
  const Open o = it->second;
  open_.erase(it);
  auto c = clients_.find(o.routing_id);
  if (c != clients_.end()) c->second.open.erase(o.id);
  const Request* r = engine.request(engine_id);
  if (r) {
    const serve::RequestSummary s = serve::summarize(*r);
    ++counters_.completed;
    send(engine, o.routing_id, serve::encode_done(o.id, s, o.stream ? nullptr : &r->output_ids));
  }
  engine.release(engine_id);
  forget_if_idle(o.routing_id);
}

bool Server::send(Engine& engine, const std::string& routing_id, const std::string& payload) {
  auto c = clients_.find(routing_id);
  if (c == clients_.end()) return false;
  std::string why;
  try {
    // With ROUTER_MANDATORY a full queue refuses the first frame (EAGAIN with dontwait, else a
    // send that blocks the loop until the client reads); the rest of an accepted message
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
  drop_client(engine, routing_id, why);
  return false;
}

void Server::reject(Engine& engine, const std::string& routing_id, const ProtocolError& e) {
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
  send(engine, routing_id, serve::encode_error(e));
}

void Server::drop_client(Engine& engine, const std::string& routing_id, const std::string& why) {
  auto c = clients_.find(routing_id);
  if (c == clients_.end()) return;
  const size_t n = c->second.open.size();
  if (n > 0) {
    ++counters_.disconnects;
    spdlog::warn("serve: {} {}: aborting its {} open request(s)", c->second.peer, why, n);
  }
  for (const auto& [id, eid] : c->second.open) {
    (void)engine.abort(eid);
    engine.release(eid);
    open_.erase(eid);
    ++counters_.dropped_requests;
  }
  clients_.erase(c);
}

void Server::abort_open(Engine& engine, const std::string& why) {
  spdlog::warn("serve: aborting {} open request(s): {}", open_.size(), why);
  std::vector<int64_t> ids;
  for (const auto& [eid, o] : open_) ids.push_back(eid);
  for (int64_t eid : ids) {
    (void)engine.abort(eid);
    finish(engine, eid);
  }
}

void Server::heartbeats(Engine& engine) {
  const auto now = Clock::now();
  if (now < next_heartbeat_) return;
  const auto period = comm::steady_seconds(options_.heartbeat_s);
  next_heartbeat_ = now + period / 4;
  std::vector<std::string> due;
  for (const auto& [rid, c] : clients_)
    if (!c.open.empty() && !c.envelope && now - c.last_sent >= period) due.push_back(rid);
  const std::string beat = serve::encode_simple(serve::ServerMessageType::kHeartbeat);
  for (const auto& rid : due) send(engine, rid, beat);
}

void Server::forget_if_idle(const std::string& routing_id) {
  auto c = clients_.find(routing_id);
  if (c != clients_.end() && c->second.open.empty()) clients_.erase(c);
}

}  // namespace sw::coordinator

// ServeClient: a DEALER speaking the serve wire format (see serve_client.h).
#include "coordinator/serve_client.h"

#include <fmt/format.h>

#include <cerrno>
#include <chrono>

#include "comm/options.h"

namespace sw::coordinator {

namespace {

// Clamped to [0, limits::kMaxTimeoutS] (NaN: 0), so neither the int64 nor the int of
// ZMQ_SNDTIMEO (about 24 days of milliseconds) can wrap.
std::chrono::milliseconds to_ms(double s) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(comm::steady_seconds(s));
}

}  // namespace

ServeClient::ServeClient(std::string endpoint, const ServeClientOptions& options)
    : endpoint_(std::move(endpoint)),
      options_(options),
      socket_(context_, zmq::socket_type::dealer),
      last_heard_(Clock::now()) {}

ServeClient::~ServeClient() = default;

Result<std::unique_ptr<ServeClient>> ServeClient::connect(const std::string& endpoint,
                                                          const ServeClientOptions& options) {
  if (endpoint.rfind("tcp://", 0) != 0 && endpoint.rfind("ipc://", 0) != 0)
    return invalid_argument("serve endpoint '{}': expected tcp://HOST:PORT or ipc://PATH",
                            endpoint);
  std::unique_ptr<ServeClient> c(new ServeClient(endpoint, options));
  try {
    c->socket_.set(zmq::sockopt::linger, 0);
    c->socket_.set(zmq::sockopt::maxmsgsize, options.max_message_bytes);
    c->socket_.set(zmq::sockopt::sndtimeo,
                   static_cast<int>(to_ms(options.server_timeout_s).count()));
    c->socket_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return unavailable("cannot connect to serve endpoint '{}': {}", endpoint, e.what());
  }
  return c;
}

Status ServeClient::send_frame(const std::string& payload) {
  try {
    if (socket_.send(zmq::buffer(payload), zmq::send_flags::none)) return Status();
  } catch (const zmq::error_t& e) {
    return unavailable("send to serve endpoint {}: {}", endpoint_, e.what());
  }
  return deadline_exceeded("send to serve endpoint {}: no server took the message within {} s",
                           endpoint_, options_.server_timeout_s);
}

Result<std::string> ServeClient::send(serve::GenerateRequest r) {
  if (r.id.empty()) {
    do r.id = fmt::format("c{}", next_id_++);
    while (open_.count(r.id));
  }
  if (open_.count(r.id)) return invalid_argument("request '{}' is already open", r.id);
  SW_RETURN_IF_ERROR(send_frame(serve::encode_generate(r)));
  if (open_.empty()) last_heard_ = Clock::now();  // the server's silence counts from here
  open_.insert(r.id);
  return r.id;
}

Status ServeClient::abort(const std::string& id) {
  if (!open_.count(id)) return not_found("request '{}' is not open", id);
  return send_frame(serve::encode_abort(id));
}

Status ServeClient::pump(double max_wait_s, serve::ServerMessageType* want,
                         serve::ServerMessage* reply, bool* got_reply) {
  zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
  try {
    if (zmq::poll(&item, 1, to_ms(max_wait_s)) <= 0) return Status();
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return Status();
    return unavailable("poll on serve endpoint {}: {}", endpoint_, e.what());
  }
  for (;;) {
    zmq::message_t frame;
    std::optional<size_t> got;
    try {
      got = socket_.recv(frame, zmq::recv_flags::dontwait);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return Status();
      return unavailable("receive from serve endpoint {}: {}", endpoint_, e.what());
    }
    if (!got) return Status();
    const auto now = Clock::now();
    last_heard_ = now;
    auto parsed = serve::parse_server_message(frame.to_string_view());
    if (!parsed.ok()) return parsed.status().with_context(endpoint_);
    serve::ServerMessage& m = *parsed;
    RequestEvent e;
    e.id = m.id;
    e.received = now;
    switch (m.type) {
      case serve::ServerMessageType::kTokens:
        e.kind = RequestEvent::Kind::kTokens;
        e.tokens = std::move(m.tokens);
        pending_.push_back(std::move(e));
        break;
      case serve::ServerMessageType::kDone:
        e.kind = RequestEvent::Kind::kDone;
        e.tokens = std::move(m.tokens);
        e.summary = std::move(m.summary);
        open_.erase(e.id);
        pending_.push_back(std::move(e));
        break;
      case serve::ServerMessageType::kError:
        e.kind = RequestEvent::Kind::kError;
        e.error = std::move(m.error);
        open_.erase(e.id);
        pending_.push_back(std::move(e));
        break;
      case serve::ServerMessageType::kInfo:
      case serve::ServerMessageType::kStats:
      case serve::ServerMessageType::kPong:
        if (want && m.type == *want && !*got_reply) {
          *reply = std::move(m);
          *got_reply = true;
        }
        break;
      case serve::ServerMessageType::kHeartbeat: break;
    }
  }
}

Result<std::vector<RequestEvent>> ServeClient::poll(double max_wait_s) {
  bool unused = false;
  SW_RETURN_IF_ERROR(pump(pending_.empty() ? max_wait_s : 0.0, nullptr, nullptr, &unused));
  if (pending_.empty() && !open_.empty()) {
    const double silent = std::chrono::duration<double>(Clock::now() - last_heard_).count();
    if (silent > options_.server_timeout_s)
      return deadline_exceeded(
          "no message from serve endpoint {} for {:.0f} s while {} request(s) were open (the "
          "first: '{}'); is the server still running?",
          endpoint_, silent, open_.size(), *open_.begin());
  }
  std::vector<RequestEvent> out(std::make_move_iterator(pending_.begin()),
                                std::make_move_iterator(pending_.end()));
  pending_.clear();
  return out;
}

Result<serve::ServerMessage> ServeClient::query(serve::ClientMessageType type,
                                                serve::ServerMessageType reply, double timeout_s) {
  SW_RETURN_IF_ERROR(send_frame(serve::encode_query(type)));
  const auto deadline = Clock::now() + to_ms(timeout_s);
  serve::ServerMessage m;
  bool got = false;
  while (!got) {
    const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
    if (left <= 0)
      return deadline_exceeded(
          "serve endpoint {}: no reply within {} s (is a server running "
          "there?)",
          endpoint_, timeout_s);
    SW_RETURN_IF_ERROR(pump(left, &reply, &m, &got));
  }
  return m;
}

Result<serve::ServerInfo> ServeClient::info(double timeout_s) {
  SW_ASSIGN_OR_RETURN(
      auto m, query(serve::ClientMessageType::kInfo, serve::ServerMessageType::kInfo, timeout_s));
  return m.info;
}

Result<serve::ServerStats> ServeClient::stats(double timeout_s) {
  SW_ASSIGN_OR_RETURN(
      auto m, query(serve::ClientMessageType::kStats, serve::ServerMessageType::kStats, timeout_s));
  return m.stats;
}

Status ServeClient::ping(double timeout_s) {
  return query(serve::ClientMessageType::kPing, serve::ServerMessageType::kPong, timeout_s)
      .status();
}

}  // namespace sw::coordinator

// CURVE key pairs, the ZAP handler and the handshake monitor.
#include "comm/curve.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>
#include <iterator>
#include <zmq_addon.hpp>

#include "common/logging.h"

namespace sw::comm {
namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

// Whether the n-th refusal is logged: the first ten, then one in a thousand, so a process
// that retries forever cannot flood the log (every one is counted).
bool worth_logging(int64_t n) { return n <= 10 || n % 1000 == 0; }

std::string unique_inproc(const char* kind, const void* owner) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "inproc://shardwise-%s-%p", kind, owner);
  return buf;
}

}  // namespace

bool curve_available() { return zmq_has("curve") != 0; }

Result<CurveKeyPair> make_curve_keypair() {
  if (!curve_available())
    return unavailable(
        "this libzmq has no CURVE support (zmq_has(\"curve\") is false): the control channel "
        "cannot authenticate the job's ranks; install a libzmq built with libsodium");
  char pub[kCurveKeyChars + 1] = {0}, sec[kCurveKeyChars + 1] = {0};
  if (zmq_curve_keypair(pub, sec) != 0)
    return unavailable("zmq_curve_keypair failed: {}", zmq_strerror(zmq_errno()));
  return CurveKeyPair{pub, sec};
}

bool is_curve_key(std::string_view key) {
  if (key.size() != kCurveKeyChars) return false;
  static constexpr std::string_view kZ85 =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  return key.find_first_not_of(kZ85) == std::string_view::npos;
}

ZapHandler::ZapHandler(zmq::context_t& ctx, std::map<std::string, std::string> admitted,
                       std::string what)
    : admitted_(std::move(admitted)),
      what_(std::move(what)),
      rep_(ctx, zmq::socket_type::rep),
      stop_rx_(ctx, zmq::socket_type::pair),
      stop_tx_(ctx, zmq::socket_type::pair) {}

Result<std::unique_ptr<ZapHandler>> ZapHandler::start(zmq::context_t& ctx,
                                                      std::map<std::string, std::string> admitted,
                                                      std::string what) {
  for (const auto& [key, user] : admitted)
    if (!is_curve_key(key))
      return invalid_argument("{}: the admitted key of '{}' is not a 40-character Z85 key", what,
                              printable(user));
  std::unique_ptr<ZapHandler> h(new ZapHandler(ctx, std::move(admitted), std::move(what)));
  try {
    for (zmq::socket_t* s : {&h->rep_, &h->stop_rx_, &h->stop_tx_}) s->set(zmq::sockopt::linger, 0);
    h->rep_.bind(kZapEndpoint);
    const std::string stop = unique_inproc("zap-stop", h.get());
    h->stop_rx_.bind(stop);
    h->stop_tx_.connect(stop);
  } catch (const zmq::error_t& e) {
    return unavailable("{}: cannot start the ZAP handler on {}: {}", h->what_, kZapEndpoint,
                       e.what());
  }
  // The sockets move to the thread; starting a thread is the full barrier ZeroMQ asks for.
  h->thread_ = std::thread([p = h.get()] { p->run(); });
  return h;
}

ZapHandler::~ZapHandler() {
  try {
    stop_tx_.send(zmq::str_buffer("stop"), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
  }
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::run() {
  while (true) {
    zmq::pollitem_t items[] = {{rep_.handle(), 0, ZMQ_POLLIN, 0},
                               {stop_rx_.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
      if (items[1].revents & ZMQ_POLLIN) return;
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> request;
      (void)zmq::recv_multipart(rep_, std::back_inserter(request), zmq::recv_flags::dontwait);
      answer(request);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      spdlog::error("{}: ZAP handler: {}", what_, e.what());
    }
  }
}

void ZapHandler::answer(std::vector<zmq::message_t>& req) {
  // Request: version, request id, domain, address, identity, mechanism, credentials...
  std::string status = "400", text = "not a key of this job", user;
  std::string address = req.size() > 3 ? req[3].to_string() : std::string();
  std::string mechanism = req.size() > 5 ? req[5].to_string() : std::string();
  if (req.size() < 6 || req[0].to_string_view() != "1.0") {
    status = "500";
    text = "malformed ZAP request";
  } else if (mechanism == "CURVE" && req.size() == 7 && req[6].size() == 32) {
    char z85[kCurveKeyChars + 1] = {0};
    zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
    auto it = admitted_.find(z85);
    if (it != admitted_.end()) {
      status = "200";
      text = "OK";
      user = it->second;
    }
  }
  if (status != "200") {
    const int64_t n = ++refused_;
    if (worth_logging(n))
      spdlog::warn(
          "{}: refused a connection from {} (mechanism {}): its key is not one of this job's "
          "ranks ({} refused so far)",
          what_, printable(address), printable(mechanism), n);
  }
  const std::string request_id = req.size() > 1 ? req[1].to_string() : std::string();
  rep_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
  rep_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
  rep_.send(zmq::buffer(status), zmq::send_flags::sndmore);
  rep_.send(zmq::buffer(text), zmq::send_flags::sndmore);
  rep_.send(zmq::buffer(user), zmq::send_flags::sndmore);
  rep_.send(zmq::str_buffer(""), zmq::send_flags::none);
}

HandshakeMonitor::HandshakeMonitor(zmq::context_t& ctx, zmq::socket_t& socket, std::string what)
    : socket_(&socket), what_(std::move(what)), events_(ctx, zmq::socket_type::pair) {}

Result<std::unique_ptr<HandshakeMonitor>> HandshakeMonitor::attach(zmq::context_t& ctx,
                                                                   zmq::socket_t& socket,
                                                                   std::string what) {
  std::unique_ptr<HandshakeMonitor> m(new HandshakeMonitor(ctx, socket, std::move(what)));
  const std::string endpoint = unique_inproc("monitor", m.get());
  if (zmq_socket_monitor(socket.handle(), endpoint.c_str(),
                         ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0)
    return unavailable("{}: cannot monitor handshakes: {}", m->what_, zmq_strerror(zmq_errno()));
  try {
    m->events_.set(zmq::sockopt::linger, 0);
    m->events_.connect(endpoint);
  } catch (const zmq::error_t& e) {
    zmq_socket_monitor(socket.handle(), nullptr, 0);
    return unavailable("{}: cannot read handshake events: {}", m->what_, e.what());
  }
  return m;
}

HandshakeMonitor::~HandshakeMonitor() { zmq_socket_monitor(socket_->handle(), nullptr, 0); }

int64_t HandshakeMonitor::drain() {
  int64_t found = 0;
  while (true) {
    zmq::message_t event, endpoint;
    try {
      if (!events_.recv(event, zmq::recv_flags::dontwait)) return found;
      if (event.more()) (void)events_.recv(endpoint, zmq::recv_flags::dontwait);
    } catch (const zmq::error_t&) {
      return found;
    }
    if (event.size() < 6) continue;
    uint16_t id = 0;
    uint32_t value = 0;
    std::memcpy(&id, event.data(), 2);
    std::memcpy(&value, static_cast<const char*>(event.data()) + 2, 4);
    ++found;
    ++refused_;
    // A key the ZAP handler refused is logged there, with the peer's address.
    if (id != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && worth_logging(refused_))
      spdlog::warn(
          "{}: refused a connection on {}: {} handshake failed (code {:#x}): not a rank of this "
          "job, or one without its keys ({} refused so far)",
          what_, printable(endpoint.to_string_view()),
          id == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "CURVE" : "the", value, refused_);
  }
}

}  // namespace sw::comm

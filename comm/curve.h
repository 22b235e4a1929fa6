// CURVE authentication for the job's ZeroMQ sockets (control channel, KV transport): per-job
// key pairs, made by each rank at start-up and exchanged (public halves only) over MPI; a ZAP
// handler that admits exactly a given set of client keys, each under its own user id; and a
// monitor that counts the handshakes a socket refused. Add a mechanism: another handler here.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <zmq.hpp>

#include "common/status.h"

namespace sw::comm {

// Curve25519 keys in Z85 text (40 characters each), as ZeroMQ's CURVE options take them.
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};

constexpr size_t kCurveKeyChars = 40;

// Whether this libzmq can do CURVE (Debian's is built with libsodium).
bool curve_available();
// A fresh key pair from libzmq's random source; an error names what is missing.
Result<CurveKeyPair> make_curve_keypair();
// A well-formed Z85 key (40 characters of the Z85 alphabet).
bool is_curve_key(std::string_view key);

// Answers the ZAP requests (RFC 27) of every socket of one ZeroMQ context, on a thread of its
// own: a CURVE client whose public key is a key of `admitted` is let in with that entry's value
// as its User-Id (the receiver reads it from each message's metadata); any other client is
// refused, counted and logged with its address. Start it before a CURVE server socket of the
// context binds, and destroy it before the context. One per context (it binds
// inproc://zeromq.zap.01).
class ZapHandler {
 public:
  // `what` names the sockets in log lines, e.g. "control channel".
  static Result<std::unique_ptr<ZapHandler>> start(zmq::context_t& ctx,
                                                   std::map<std::string, std::string> admitted,
                                                   std::string what);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  int64_t num_refused() const { return refused_.load(); }

 private:
  ZapHandler(zmq::context_t& ctx, std::map<std::string, std::string> admitted, std::string what);
  void run();
  void answer(std::vector<zmq::message_t>& request);

  std::map<std::string, std::string> admitted_;  // Z85 public key -> user id
  std::string what_;
  zmq::socket_t rep_;      // inproc://zeromq.zap.01, owned by the thread once it runs
  zmq::socket_t stop_rx_;  // the thread's end of the stop signal
  zmq::socket_t stop_tx_;  // the owner's end
  std::atomic<int64_t> refused_{0};
  std::thread thread_;
};

// Counts the handshakes a socket refused (no CURVE, a wrong server key, a client key the ZAP
// handler refused), from the socket's monitor events. poll_item() can join a zmq::poll; drain()
// reads what is pending without waiting. Owned and driven by the thread that drives `socket`'s
// owner loop; destroy it before the socket.
class HandshakeMonitor {
 public:
  static Result<std::unique_ptr<HandshakeMonitor>> attach(zmq::context_t& ctx,
                                                          zmq::socket_t& socket, std::string what);
  ~HandshakeMonitor();
  zmq::pollitem_t poll_item() { return {events_.handle(), 0, ZMQ_POLLIN, 0}; }
  // Reads pending events; returns how many refused handshakes they reported (also logged).
  int64_t drain();
  int64_t num_refused() const { return refused_; }

 private:
  HandshakeMonitor(zmq::context_t& ctx, zmq::socket_t& socket, std::string what);
  zmq::socket_t* socket_;
  std::string what_;
  zmq::socket_t events_;
  int64_t refused_ = 0;
};

}  // namespace sw::comm

// ControlChannel: the coordinator <-> worker control plane on ZeroMQ. The coordinator binds a
// ROUTER, each worker connects a DEALER. With keys (every cluster job) it is CURVE: the ROUTER's
// ZAP handler admits exactly the job's worker keys, each under its worker id, and a message's
// peer is the id its key authenticated (a connection's routing id is never trusted), so only the
// job's ranks are heard and none can speak for another; a worker only completes the handshake
// with the holder of the coordinator's secret key. Without keys (unit tests of the framing)
// peers are named by their routing ids. An I/O thread owns the socket: it sends heartbeats every
// heartbeat_interval_s and reads what arrives whatever the caller is doing, so a caller that
// computes for long between receive() calls neither starves its peers nor is declared lost;
// a peer silent for interval x miss_count (counted only while this process ran) is lost.
// Malformed, truncated, oversized, wrong-version and unauthenticated messages are dropped,
// logged (escaped) and counted; ZMQ_MAXMSGSIZE = control_max_message_bytes on the socket.
// Add a message kind: a MessageType in message.h; heartbeats/hello are consumed by the thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "comm/control/message.h"
#include "comm/curve.h"
#include "comm/options.h"

namespace sw::comm {

// CURVE keys of one end of the channel (Z85).
struct ControlKeys {
  CurveKeyPair own;               // coordinator: its server key pair; worker: its client pair
  std::string server_public_key;  // worker: the coordinator's public key
  std::map<std::string, std::string> workers;  // coordinator: worker id -> its public key
};

class ControlChannel {
 public:
  enum class Role { kCoordinator, kWorker };

  // Binds opts.control_endpoint ("" or "tcp://127.0.0.1:*": loopback, a free port; see
  // endpoint()). `keys` (optional): authenticate every worker (see the file comment).
  static Result<std::unique_ptr<ControlChannel>> coordinator(const CommOptions& opts,
                                                             const ControlKeys* keys = nullptr);
  // Connects to `endpoint` and says hello as `worker_id`.
  static Result<std::unique_ptr<ControlChannel>> worker(const CommOptions& opts,
                                                        const std::string& endpoint,
                                                        const std::string& worker_id,
                                                        const ControlKeys* keys = nullptr);
  ~ControlChannel();
  ControlChannel(const ControlChannel&) = delete;
  ControlChannel& operator=(const ControlChannel&) = delete;

  Role role() const { return role_; }
  bool authenticated() const { return authenticated_; }
  const std::string& endpoint() const { return endpoint_; }  // the bound/connected address
  const CommOptions& options() const { return opts_; }
  // Coordinator: to worker `peer` (an error when it never connected); worker: to the
  // coordinator (peer ignored). Queued for the I/O thread; safe from any thread. A message
  // the network cannot take (the peer's queue is full, or it went away) is dropped by the I/O
  // thread, logged and counted (num_send_drops): OK here means queued, not delivered.
  Status send(const std::string& peer, MessageType type, uint64_t request_id,
              std::string_view payload);
  // Waits up to timeout_s for one application message (heartbeats and hellos are consumed by
  // the I/O thread). nullopt on timeout, or at once when a peer is declared lost meanwhile (so
  // the caller can act on it); 0 takes a message already filed without waiting.
  Result<std::optional<ControlMessage>> receive(double timeout_s);
  // Hands everything sent so far to the network, waiting at most linger_s for it to leave,
  // and closes the channel (later sends fail). For a process about to end.
  void close(double linger_s);

  std::vector<std::string> live_peers() const;
  std::vector<std::string> lost_peers() const;
  bool is_lost(const std::string& peer) const;
  // Whether any message of `peer` ever arrived (a worker that never heard its coordinator
  // could not reach the endpoint at all).
  bool ever_heard(const std::string& peer) const;
  int64_t num_rejected() const { return num_rejected_.load(); }      // messages dropped
  int64_t num_send_drops() const { return num_send_drops_.load(); }  // sends not taken
  // Connections refused at the handshake (no CURVE, wrong keys, a key not of this job).
  int64_t num_refused_connections() const { return num_refused_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  ControlChannel(Role role, const CommOptions& opts);
  Status start();        // the caller's queue, then the I/O thread
  void run();            // the I/O thread
  bool read_incoming();  // false: nothing was waiting
  void file(std::vector<zmq::message_t>& frames);
  void beat_and_judge(Clock::time_point now);
  void seen(const std::string& peer, const std::string& routing_id);
  void reject(const std::string& peer, const std::string& why);

  Role role_;
  CommOptions opts_;
  bool authenticated_ = false;
  std::string endpoint_;
  std::string self_id_;
  std::set<std::string> workers_;  // coordinator with keys: the ids the ZAP handler hands out
  zmq::context_t ctx_;
  std::unique_ptr<ZapHandler> zap_;  // coordinator with keys; before sock_ so it outlives it
  zmq::socket_t sock_;               // the network socket (the I/O thread's)
  std::unique_ptr<HandshakeMonitor> monitor_;  // coordinator with keys (the I/O thread's)
  zmq::socket_t pipe_in_;                      // the I/O thread's end of the caller's queue
  std::mutex send_mu_;
  zmq::socket_t pipe_out_;  // the callers' end (guarded by send_mu_)
  bool closed_ = false;     // guarded by send_mu_
  std::thread io_;

  mutable std::mutex mu_;  // everything below
  std::condition_variable arrived_;
  std::deque<ControlMessage> inbox_;
  struct Peer {
    Clock::time_point last_seen;
    bool lost = false;
    bool heard = false;
    std::string routing_id;  // where the coordinator sends to reach it
  };
  std::map<std::string, Peer> peers_;  // worker ids (coordinator) or "coordinator" (worker)
  Status broken_;                      // the I/O thread stopped on an error
  uint64_t num_losses_ = 0;            // peers declared lost so far (wakes receive())
  uint64_t losses_reported_ = 0;       // num_losses_ when receive() last returned
  std::atomic<int64_t> num_rejected_{0};
  std::atomic<int64_t> num_send_drops_{0};
  std::atomic<int64_t> num_refused_{0};
  // The I/O thread's own: when the next heartbeats go out, and when it last ran.
  Clock::time_point next_heartbeat_;
  Clock::time_point last_run_;
};

}  // namespace sw::comm

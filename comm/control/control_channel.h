// ControlChannel: the coordinator <-> worker control plane on ZeroMQ. The coordinator binds a
// ROUTER, each worker connects a DEALER whose routing id is its worker id. Heartbeats go
// both ways every heartbeat_interval_s; a peer silent for interval x miss_count is lost.
// Malformed, truncated, oversized or wrong-version messages are rejected and logged and the
// channel keeps working. Every socket has ZMQ_MAXMSGSIZE = control_max_message_bytes: a larger
// frame drops its sender's connection before it is buffered (a worker's DEALER reconnects).
// Not thread-safe: one thread drives it (never the data plane's).
// Add a message kind: a MessageType in message.h; heartbeats/hello are consumed in receive().
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "comm/control/message.h"
#include "comm/options.h"

namespace sw::comm {

class ControlChannel {
 public:
  enum class Role { kCoordinator, kWorker };

  // Binds opts.control_endpoint ("tcp://127.0.0.1:*" picks a free port; see endpoint()).
  static Result<std::unique_ptr<ControlChannel>> coordinator(const CommOptions& opts);
  // Connects to `endpoint` and says hello as `worker_id`.
  static Result<std::unique_ptr<ControlChannel>> worker(const CommOptions& opts,
                                                        const std::string& endpoint,
                                                        const std::string& worker_id);
  ~ControlChannel();

  Role role() const { return role_; }
  const std::string& endpoint() const { return endpoint_; }  // the bound/connected address
  const CommOptions& options() const { return opts_; }
  // Coordinator: to worker `peer`; worker: to the coordinator (peer ignored).
  Status send(const std::string& peer, MessageType type, uint64_t request_id,
              std::string_view payload);
  // Waits up to timeout_s for one application message, sending due heartbeats and absorbing
  // heartbeats, hellos and rejected messages meanwhile. nullopt on timeout; 0 takes a message
  // that is already queued without waiting.
  Result<std::optional<ControlMessage>> receive(double timeout_s);
  // Sends due heartbeats and updates liveness; receive() calls it too.
  void tick();

  std::vector<std::string> live_peers() const;
  std::vector<std::string> lost_peers() const;
  bool is_lost(const std::string& peer) const;
  int64_t num_rejected() const { return num_rejected_; }

 private:
  using TimePoint = std::chrono::steady_clock::time_point;
  ControlChannel(Role role, const CommOptions& opts);
  void seen(const std::string& peer);
  void reject(const std::string& peer, const Status& why);

  Role role_;
  CommOptions opts_;
  std::string endpoint_;
  std::string self_id_;
  zmq::context_t ctx_;
  zmq::socket_t sock_;
  struct Peer {
    TimePoint last_seen;
    bool lost = false;
  };
  std::map<std::string, Peer> peers_;  // worker ids (coordinator) or "coordinator" (worker)
  TimePoint next_heartbeat_;
  int64_t num_rejected_ = 0;
};

}  // namespace sw::comm

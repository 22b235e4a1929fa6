// ControlHub: the coordinator's end of the control channel, shared by every RemoteExecutor of
// a cluster. One ZeroMQ ROUTER receives every worker's replies; the hub files them per worker
// so that each executor reads only its own instance's. Single-threaded, like the channel.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "comm/control/control_channel.h"

namespace sw::coordinator {

class ControlHub {
 public:
  explicit ControlHub(std::unique_ptr<comm::ControlChannel> channel);

  const std::string& endpoint() const { return channel_->endpoint(); }
  // Files every message that arrives within `max_s` (returns once a batch has arrived; 0
  // takes what is queued without waiting).
  Status pump(double max_s);
  // The oldest filed message from `peer`, if any.
  std::optional<comm::ControlMessage> take(const std::string& peer);
  Status send(const std::string& peer, comm::MessageType type, uint64_t request_id,
              std::string_view payload);
  bool is_lost(const std::string& peer) const { return channel_->is_lost(peer); }
  double loss_after_s() const;  // silence after which a peer counts as lost
  // Waits until every peer has connected and sent its info message (bounded by `timeout_s`);
  // a worker that reports an error meanwhile ends the wait with it. Returns each peer's info
  // payload; the error names the peers that never came.
  Result<std::map<std::string, std::string>> wait_for_peers(const std::vector<std::string>& peers,
                                                            double timeout_s);
  // The job ends on an error: tells every worker that ever connected to stop now (`why` is
  // shown in their error), waits at most linger_s for the messages to leave and closes.
  void abort_workers(const std::string& why, double linger_s);

 private:
  void file(comm::ControlMessage msg);
  std::unique_ptr<comm::ControlChannel> channel_;
  std::map<std::string, std::deque<comm::ControlMessage>> inbox_;
};

}  // namespace sw::coordinator

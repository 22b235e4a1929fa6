// Filing of control messages per worker.
#include "coordinator/control_hub.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>

#include "common/logging.h"

namespace sw::coordinator {

ControlHub::ControlHub(std::unique_ptr<comm::ControlChannel> channel)
    : channel_(std::move(channel)) {}

void ControlHub::file(comm::ControlMessage msg) { inbox_[msg.peer].push_back(std::move(msg)); }

Status ControlHub::pump(double max_s) {
  SW_ASSIGN_OR_RETURN(auto first, channel_->receive(max_s));
  if (!first) return Status();
  file(std::move(*first));
  while (true) {
    SW_ASSIGN_OR_RETURN(auto more, channel_->receive(0));
    if (!more) return Status();
    file(std::move(*more));
  }
}

std::optional<comm::ControlMessage> ControlHub::take(const std::string& peer) {
  auto it = inbox_.find(peer);
  if (it == inbox_.end() || it->second.empty()) return std::nullopt;
  comm::ControlMessage m = std::move(it->second.front());
  it->second.pop_front();
  return m;
}

Status ControlHub::send(const std::string& peer, comm::MessageType type, uint64_t request_id,
                        std::string_view payload) {
  return channel_->send(peer, type, request_id, payload);
}

double ControlHub::loss_after_s() const {
  return channel_->options().heartbeat_interval_s * channel_->options().heartbeat_miss_count;
}

void ControlHub::abort_workers(const std::string& why, double linger_s) {
  std::vector<std::string> peers = channel_->live_peers();
  for (const std::string& p : channel_->lost_peers()) peers.push_back(p);
  for (const std::string& p : peers) (void)channel_->send(p, comm::MessageType::kAbort, 0, why);
  channel_->close(linger_s);
}

Result<std::map<std::string, std::string>> ControlHub::wait_for_peers(
    const std::vector<std::string>& peers, double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  std::map<std::string, std::string> info;
  while (true) {
    std::vector<std::string> missing;
    for (const auto& p : peers) {
      while (!info.count(p)) {
        auto m = take(p);
        if (!m) break;
        if (m->type == comm::MessageType::kError)
          return unavailable("{} failed during start-up: {}", p, printable(m->payload, 4096));
        if (m->type == comm::MessageType::kInfo) info[p] = m->payload;
      }
      if (!info.count(p)) missing.push_back(p);
    }
    if (missing.empty()) return info;
    if (std::chrono::steady_clock::now() > deadline)
      return deadline_exceeded(
          "coordinator: workers {} did not connect to {} within {:.0f} s (cluster.timeout_s)",
          fmt::join(missing, ", "), endpoint(), timeout_s);
    SW_RETURN_IF_ERROR(pump(0.05));
  }
}

}  // namespace sw::coordinator

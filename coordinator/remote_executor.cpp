// Steps and KV transfers of one instance over the control channel.
#include "coordinator/remote_executor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>

#include "comm/options.h"
#include "common/logging.h"

namespace sw::coordinator {

namespace {
std::string peer_of(int rank) { return fmt::format("rank{}", rank); }
}  // namespace

RemoteExecutor::RemoteExecutor(ControlHub& hub, RemoteInstance instance,
                               const KvDirectory* directory)
    : hub_(hub), instance_(std::move(instance)), directory_(directory) {}

std::vector<std::string> RemoteExecutor::peers() const {
  std::vector<std::string> out;
  for (const auto& stage : instance_.ranks)
    for (int r : stage) out.push_back(peer_of(r));
  return out;
}

int RemoteExecutor::reply_rank(int stage, int dp) const {
  return instance_.ranks[static_cast<size_t>(stage)][static_cast<size_t>(dp * instance_.tp)];
}

std::vector<int> RemoteExecutor::group_ranks(int dp) const {
  std::vector<int> out;
  for (const auto& stage : instance_.ranks)
    for (int t = 0; t < instance_.tp; ++t)
      out.push_back(stage[static_cast<size_t>(dp * instance_.tp + t)]);
  return out;
}

Status RemoteExecutor::fill_destinations(worker::KvSendOrder& order) const {
  if (!directory_ || order.dst_instance < 0 ||
      order.dst_instance >= static_cast<int>(directory_->ranks.size()))
    return internal_error("{}: KV transfer {} to unknown instance {}", instance_.name,
                          order.transfer, order.dst_instance);
  const auto& groups = directory_->ranks[static_cast<size_t>(order.dst_instance)];
  if (order.dst_group < 0 || order.dst_group >= static_cast<int>(groups.size()))
    return internal_error("{}: KV transfer {} to dp group {} of {}", instance_.name, order.transfer,
                          order.dst_group, groups.size());
  order.dst_ranks.clear();
  order.dst_addresses.clear();
  for (const auto& [rank, address] : groups[static_cast<size_t>(order.dst_group)]) {
    if (address.empty()) return internal_error("rank {} has no KV transport address", rank);
    order.dst_ranks.push_back(rank);
    order.dst_addresses.push_back(address);
  }
  return Status();
}

Status RemoteExecutor::submit(const worker::StepCommand& command) {
  if (in_flight_) return internal_error("{}: a step is already in flight", instance_.name);
  SW_RETURN_IF_ERROR(error_);
  std::string payload;
  if (command.kv_sends.empty()) {
    payload = worker::encode_step_command(command);
  } else {  // the destinations' addresses are this executor's to add: a copy, only then
    worker::StepCommand cmd = command;
    for (worker::KvSendOrder& o : cmd.kv_sends) SW_RETURN_IF_ERROR(fill_destinations(o));
    payload = worker::encode_step_command(cmd);
  }
  const uint64_t request = request_ + 1;
  for (const auto& peer : peers()) {
    Status st = hub_.send(peer, comm::MessageType::kCommand, request, payload);
    if (!st.ok()) return st.with_context(instance_.name);
  }
  request_ = request;
  in_flight_ = true;
  collect_metrics_ = command.collect_moe_metrics;
  deadline_ = std::chrono::steady_clock::now() + comm::steady_seconds(instance_.timeout_s);
  const size_t stages = instance_.ranks.size();
  replies_.assign(static_cast<size_t>(instance_.dp), worker::StepReply{});
  metrics_.assign(
      stages, std::vector<std::vector<moe::MoeLayerMetrics>>(static_cast<size_t>(instance_.dp)));
  got_.clear();
  return Status();
}

void RemoteExecutor::wait(double max_s) {
  Status st = hub_.pump(max_s);
  (void)st;  // a broken channel shows in the next poll
}

Status RemoteExecutor::drain() {
  SW_RETURN_IF_ERROR(hub_.pump(0));
  const int last = static_cast<int>(instance_.ranks.size()) - 1;
  for (size_t s = 0; s < instance_.ranks.size(); ++s) {
    for (int rank : instance_.ranks[s]) {
      const std::string peer = peer_of(rank);
      while (auto msg = hub_.take(peer)) {
        if (msg->type == comm::MessageType::kError) {
          if (error_.ok())
            error_ = unavailable("rank {} failed: {}", rank, printable(msg->payload, 4096));
          continue;
        }
        if (msg->type == comm::MessageType::kKvDone) {
          auto done = worker::decode_kv_done(msg->payload);
          if (!done.ok()) {
            if (error_.ok())
              error_ = done.status().with_context(fmt::format("KV report of rank {}", rank));
            continue;
          }
          auto it = pending_kv_.find(done->transfer);
          if (it == pending_kv_.end() || !it->second.ranks.erase(rank)) continue;  // cancelled
          KvTransferEvent& e = it->second.event;
          if (!done->ok) {
            e.status = unavailable("{}", printable(done->error, 4096));
            it->second.ranks.clear();
          }
          e.bytes += done->bytes;
          e.first_part_us = std::min(e.first_part_us, done->first_part_us);
          e.done_us = std::max(e.done_us, done->done_us);
          if (it->second.ranks.empty()) {
            kv_events_.push_back(std::move(e));
            pending_kv_.erase(it);
          }
          continue;
        }
        // Replies to an earlier step (after a timeout) are stale.
        if (msg->type != comm::MessageType::kResult || !in_flight_ || msg->request_id != request_)
          continue;
        auto rep = worker::decode_step_reply(msg->payload);
        if (!rep.ok()) {
          if (error_.ok())
            error_ = rep.status().with_context(fmt::format("reply of rank {}", rank));
          continue;
        }
        if (rep->stage != static_cast<int>(s) || rep->dp_group < 0 ||
            rep->dp_group >= instance_.dp || reply_rank(rep->stage, rep->dp_group) != rank) {
          if (error_.ok())
            error_ = internal_error("rank {} replied as stage {} dp {}, which it is not", rank,
                                    rep->stage, rep->dp_group);
          continue;
        }
        got_.insert({rep->stage, rep->dp_group});
        metrics_[s][static_cast<size_t>(rep->dp_group)] = std::move(rep->moe_metrics);
        if (rep->stage == last) replies_[static_cast<size_t>(rep->dp_group)] = std::move(*rep);
      }
    }
  }
  return Status();
}

Result<std::optional<StepOutput>> RemoteExecutor::poll() {
  SW_RETURN_IF_ERROR(drain());
  if (!error_.ok()) {
    in_flight_ = false;
    return error_;
  }
  // A lost worker ends the instance at once, idle or not: its peers in a collective with it
  // never finish, and it would not answer the next step.
  std::vector<int> lost, alive;
  for (const auto& stage : instance_.ranks)
    for (int r : stage) (hub_.is_lost(peer_of(r)) ? lost : alive).push_back(r);
  // Only the silent ranks are named lost; the others are alive but cannot finish a step (or
  // a collective) without them.
  auto lost_error = [&] {
    return unavailable(
        "worker rank(s) [{}] lost: no heartbeat for {:.1f} s (heartbeat_interval_s x "
        "heartbeat_miss_count){}",
        fmt::join(lost, ", "), hub_.loss_after_s(),
        alive.empty() ? std::string()
                      : fmt::format("; rank(s) [{}] of the instance are alive but cannot go on "
                                    "without them",
                                    fmt::join(alive, ", ")));
  };
  if (!in_flight_) {
    if (lost.empty()) return std::optional<StepOutput>();
    return lost_error();
  }
  const int last = static_cast<int>(instance_.ranks.size()) - 1;
  const int expected = instance_.dp * (collect_metrics_ ? last + 1 : 1);
  if (static_cast<int>(got_.size()) >= expected) return assemble();
  if (!lost.empty()) {
    in_flight_ = false;
    return lost_error();
  }
  if (std::chrono::steady_clock::now() > deadline_) {
    std::vector<std::string> missing;
    for (int s = collect_metrics_ ? 0 : last; s <= last; ++s)
      for (int g = 0; g < instance_.dp; ++g)
        if (!got_.count({s, g}))
          missing.push_back(fmt::format("rank {} (stage {} dp {})", reply_rank(s, g), s, g));
    in_flight_ = false;
    return deadline_exceeded("step {} got no reply from [{}] within {:.0f} s (cluster.timeout_s)",
                             request_, fmt::join(missing, ", "), instance_.timeout_s);
  }
  return std::optional<StepOutput>();
}

Result<std::optional<StepOutput>> RemoteExecutor::assemble() {
  in_flight_ = false;
  StepOutput out;
  for (worker::StepReply& rep : replies_) {
    worker::StepResult r;
    r.sampled = std::move(rep.sampled);
    r.logits_row = std::move(rep.logits_row);
    r.logits = std::move(rep.logits);
    out.groups.push_back(std::move(r));
  }
  // EP metrics are already summed over the whole stage (every dp group); MoE tp metrics are
  // per dp group and are added up here.
  const bool per_group = instance_.moe == parallel::MoeMode::kTp;
  for (const auto& stage : metrics_) {
    std::vector<moe::MoeLayerMetrics> layers = stage[0];
    for (size_t g = 1; per_group && g < stage.size(); ++g)
      for (size_t l = 0; l < layers.size() && l < stage[g].size(); ++l)
        layers[l].merge(stage[g][l]);
    for (auto& m : layers) m.finalize();
    out.moe_metrics.insert(out.moe_metrics.end(), layers.begin(), layers.end());
  }
  return std::optional<StepOutput>(std::move(out));
}

Status RemoteExecutor::send_kv_command(const std::vector<int>& ranks, const worker::KvCommand& c) {
  const std::string payload = worker::encode_kv_command(c);
  for (int r : ranks) {
    Status st = hub_.send(peer_of(r), comm::MessageType::kKv, 0, payload);
    if (!st.ok()) return st.with_context(instance_.name);
  }
  return Status();
}

Status RemoteExecutor::expect_kv(const worker::KvRecvOrder& order) {
  if (order.dp_group < 0 || order.dp_group >= instance_.dp)
    return internal_error("{}: KV transfer {} into dp group {} of {}", instance_.name,
                          order.transfer, order.dp_group, instance_.dp);
  worker::KvCommand c;
  c.kind = worker::KvCommand::Kind::kRecv;
  c.recv = order;
  const std::vector<int> ranks = group_ranks(order.dp_group);
  SW_RETURN_IF_ERROR(send_kv_command(ranks, c));
  Pending p;
  p.ranks.insert(ranks.begin(), ranks.end());
  p.event.transfer = order.transfer;
  p.event.first_part_us = std::numeric_limits<int64_t>::max();
  p.event.done_us = 0;
  pending_kv_[order.transfer] = std::move(p);
  return Status();
}

Status RemoteExecutor::send_kv(const worker::KvSendOrder& order) {
  if (order.dp_group < 0 || order.dp_group >= instance_.dp)
    return internal_error("{}: KV transfer {} from dp group {} of {}", instance_.name,
                          order.transfer, order.dp_group, instance_.dp);
  worker::KvCommand c;
  c.kind = worker::KvCommand::Kind::kSend;
  c.send = order;
  SW_RETURN_IF_ERROR(fill_destinations(c.send));
  return send_kv_command(group_ranks(order.dp_group), c);
}

Status RemoteExecutor::cancel_kv(uint64_t transfer) {
  pending_kv_.erase(transfer);
  worker::KvCommand c;
  c.kind = worker::KvCommand::Kind::kCancel;
  c.transfer = transfer;
  std::vector<int> all;
  for (const auto& stage : instance_.ranks) all.insert(all.end(), stage.begin(), stage.end());
  return send_kv_command(all, c);
}

std::vector<KvTransferEvent> RemoteExecutor::poll_kv() {
  Status st = drain();
  (void)st;  // a broken channel or a worker's error shows in the next poll()
  return std::exchange(kv_events_, {});
}

std::string RemoteExecutor::kv_missing(uint64_t transfer) const {
  auto it = pending_kv_.find(transfer);
  if (it == pending_kv_.end()) return "";
  std::vector<std::string> names;
  for (int r : it->second.ranks) names.push_back(fmt::format("rank {}", r));
  return fmt::format("[{}] of {}", fmt::join(names, ", "), instance_.name);
}

Status RemoteExecutor::shutdown() {
  if (in_flight_) return internal_error("{}: shutdown with a step in flight", instance_.name);
  for (const auto& peer : peers())
    SW_RETURN_IF_ERROR(hub_.send(peer, comm::MessageType::kShutdown, 0, ""));
  return Status();
}

}  // namespace sw::coordinator

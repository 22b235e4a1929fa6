// Steps of one instance over the control channel.
#include "coordinator/remote_executor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace sw::coordinator {

namespace {
std::string peer_of(int rank) { return fmt::format("rank{}", rank); }
}  // namespace

RemoteExecutor::RemoteExecutor(ControlHub& hub, RemoteInstance instance)
    : hub_(hub), instance_(std::move(instance)) {}

std::vector<std::string> RemoteExecutor::peers() const {
  std::vector<std::string> out;
  for (const auto& stage : instance_.ranks)
    for (int r : stage) out.push_back(peer_of(r));
  return out;
}

int RemoteExecutor::reply_rank(int stage, int dp) const {
  return instance_.ranks[static_cast<size_t>(stage)][static_cast<size_t>(dp * instance_.tp)];
}

Status RemoteExecutor::submit(const worker::StepCommand& command) {
  if (in_flight_) return internal_error("{}: a step is already in flight", instance_.name);
  const std::string payload = worker::encode_step_command(command);
  const uint64_t request = request_ + 1;
  for (const auto& peer : peers()) {
    Status st = hub_.send(peer, comm::MessageType::kCommand, request, payload);
    if (!st.ok()) return st.with_context(instance_.name);
  }
  request_ = request;
  in_flight_ = true;
  collect_metrics_ = command.collect_moe_metrics;
  deadline_ = std::chrono::steady_clock::now() +
              std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                  std::chrono::duration<double>(instance_.timeout_s));
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

Result<std::optional<StepOutput>> RemoteExecutor::poll() {
  if (!in_flight_) return std::optional<StepOutput>();
  SW_RETURN_IF_ERROR(hub_.pump(0));
  const int last = static_cast<int>(instance_.ranks.size()) - 1;
  for (size_t s = 0; s < instance_.ranks.size(); ++s) {
    for (int rank : instance_.ranks[s]) {
      const std::string peer = peer_of(rank);
      while (auto msg = hub_.take(peer)) {
        if (msg->type == comm::MessageType::kError) {
          in_flight_ = false;
          return unavailable("rank {} failed: {}", rank, msg->payload);
        }
        // Replies to an earlier step (after a timeout) are stale.
        if (msg->type != comm::MessageType::kResult || msg->request_id != request_) continue;
        auto rep = worker::decode_step_reply(msg->payload);
        if (!rep.ok()) {
          in_flight_ = false;
          return rep.status().with_context(fmt::format("reply of rank {}", rank));
        }
        if (rep->stage != static_cast<int>(s) || rep->dp_group < 0 ||
            rep->dp_group >= instance_.dp || reply_rank(rep->stage, rep->dp_group) != rank) {
          in_flight_ = false;
          return internal_error("rank {} replied as stage {} dp {}, which it is not", rank,
                                rep->stage, rep->dp_group);
        }
        got_.insert({rep->stage, rep->dp_group});
        metrics_[s][static_cast<size_t>(rep->dp_group)] = std::move(rep->moe_metrics);
        if (rep->stage == last) replies_[static_cast<size_t>(rep->dp_group)] = std::move(*rep);
      }
    }
  }
  const int expected = instance_.dp * (collect_metrics_ ? last + 1 : 1);
  if (static_cast<int>(got_.size()) >= expected) return assemble();

  // A lost worker ends the wait at once: its peers in a collective with it never finish.
  std::vector<int> lost;
  for (const auto& stage : instance_.ranks)
    for (int r : stage)
      if (hub_.is_lost(peer_of(r))) lost.push_back(r);
  if (!lost.empty()) {
    in_flight_ = false;
    return unavailable("worker rank(s) [{}] lost: no heartbeat for {:.1f} s", fmt::join(lost, ", "),
                       hub_.loss_after_s());
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

Status RemoteExecutor::shutdown() {
  if (in_flight_) return internal_error("{}: shutdown with a step in flight", instance_.name);
  for (const auto& peer : peers())
    SW_RETURN_IF_ERROR(hub_.send(peer, comm::MessageType::kShutdown, 0, ""));
  return Status();
}

}  // namespace sw::coordinator

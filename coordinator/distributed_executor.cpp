// Step orchestration from the coordinator.
#include "coordinator/distributed_executor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cstring>
#include <set>

#include "worker/step_protocol.h"

namespace sw::coordinator {

namespace {
std::string worker_id(int rank) { return fmt::format("rank{}", rank); }
}  // namespace

DistributedExecutor::DistributedExecutor(const worker::ClusterRuntime& rt,
                                         comm::ControlChannel& channel)
    : rt_(rt), channel_(channel) {}

Result<std::unique_ptr<DistributedExecutor>> DistributedExecutor::create(
    const worker::ClusterRuntime& rt, comm::ControlChannel& channel, int64_t num_kv_blocks) {
  const auto& pools = rt.plan.pools;
  if (pools.size() != 1 || pools[0].kind != parallel::PoolKind::kMixed || pools[0].instances != 1)
    return unimplemented(
        "{}: generate --config runs one mixed pool with one instance; prefill/decode pools and "
        "several instances are not supported yet",
        rt.cluster.source);
  std::unique_ptr<DistributedExecutor> ex(new DistributedExecutor(rt, channel));
  const auto& pool = pools[0];
  ex->num_stages_ = pool.pp;
  for (int s = 0; s < pool.pp; ++s)
    for (int r : rt.plan.stage_ranks(0, 0, s)) ex->workers_.push_back(worker_id(r));
  for (int g = 0; g < pool.dp; ++g)
    ex->pools_.push_back(
        std::make_unique<worker::KvBlockPool>(num_kv_blocks, rt.cluster.runtime.kv_block_size));

  // Hellos arrive as workers connect; receive() absorbs them.
  const double timeout_s = rt.cluster.comm.timeout_s;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    auto live = channel.live_peers();
    std::set<std::string> have(live.begin(), live.end());
    std::vector<std::string> missing;
    for (const auto& w : ex->workers_)
      if (!have.count(w)) missing.push_back(w);
    if (missing.empty()) break;
    if (std::chrono::steady_clock::now() > deadline)
      return deadline_exceeded(
          "coordinator: workers {} did not connect to {} within {:.0f} s (cluster.timeout_s)",
          fmt::join(missing, ", "), channel.endpoint(), timeout_s);
    SW_ASSIGN_OR_RETURN(auto msg, channel.receive(0.05));
    if (msg && msg->type == comm::MessageType::kError)
      return unavailable("{} failed during start-up: {}", msg->peer, msg->payload);
  }
  return ex;
}

Result<worker::StepResult> DistributedExecutor::step(
    const std::vector<worker::SequenceInput>& batch) {
  const int groups = num_kv_groups();
  std::vector<std::vector<const worker::SequenceInput*>> by_group(groups);
  std::vector<std::pair<int, size_t>> where(batch.size());  // input -> (group, index in group)
  for (size_t i = 0; i < batch.size(); ++i) {
    const int g = batch[i].kv_group;
    if (g < 0 || g >= groups)
      return invalid_argument("step: sequence {} names KV group {} of {}", batch[i].seq_id, g,
                              groups);
    where[i] = {g, by_group[g].size()};
    by_group[g].push_back(&batch[i]);
  }
  // Check every group before appending to any, so a refused step changes nothing.
  for (int g = 0; g < groups; ++g) {
    Status st = worker::check_step(*pools_[g], by_group[g], rt_.model.vocab_size);
    if (!st.ok()) return st.with_context(fmt::format("dp group {}", g));
  }
  worker::StepCommand cmd;
  cmd.collect_moe_metrics = collect_moe_metrics_;
  for (int g = 0; g < groups; ++g) {
    SW_ASSIGN_OR_RETURN(worker::StepMetadata m,
                        worker::allocate_step(*pools_[g], by_group[g], rt_.model.vocab_size));
    cmd.groups.push_back(std::move(m));
  }
  const uint64_t request = next_request_++;
  const std::string payload = worker::encode_step_command(cmd);
  for (const auto& w : workers_)
    SW_RETURN_IF_ERROR(channel_.send(w, comm::MessageType::kCommand, request, payload));

  // Replies: one per dp group from the last stage, plus (metrics on) one per dp group from
  // every earlier stage.
  const int last = num_stages_ - 1;
  const int expected = groups * (collect_moe_metrics_ ? num_stages_ : 1);
  std::vector<worker::StepReply> replies(groups);
  // [stage][dp group] -> that group's per-layer metrics
  std::vector<std::vector<std::vector<moe::MoeLayerMetrics>>> metrics(
      num_stages_, std::vector<std::vector<moe::MoeLayerMetrics>>(groups));
  std::set<std::pair<int, int>> got;  // (stage, dp group)
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(rt_.cluster.comm.timeout_s);
  while (static_cast<int>(got.size()) < expected) {
    const double left =
        std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      std::vector<std::string> missing;
      for (int s = collect_moe_metrics_ ? 0 : last; s <= last; ++s)
        for (int g = 0; g < groups; ++g)
          if (!got.count({s, g})) missing.push_back(fmt::format("stage {} dp {}", s, g));
      return deadline_exceeded(
          "coordinator: step {} got no reply from [{}] within {:.0f} s (cluster.timeout_s); "
          "lost workers: [{}]",
          request, fmt::join(missing, ", "), rt_.cluster.comm.timeout_s,
          fmt::join(channel_.lost_peers(), ", "));
    }
    SW_ASSIGN_OR_RETURN(auto msg, channel_.receive(std::min(left, 0.5)));
    if (!msg) continue;
    if (msg->type == comm::MessageType::kError)
      return unavailable("{}: {}", msg->peer, msg->payload);
    if (msg->type != comm::MessageType::kResult || msg->request_id != request) continue;
    SW_ASSIGN_OR_RETURN(worker::StepReply rep, worker::decode_step_reply(msg->payload));
    if (rep.dp_group < 0 || rep.dp_group >= groups || rep.stage < 0 || rep.stage > last)
      return internal_error("step {}: reply from {} names stage {} dp {}", request, msg->peer,
                            rep.stage, rep.dp_group);
    got.insert({rep.stage, rep.dp_group});
    metrics[rep.stage][rep.dp_group] = std::move(rep.moe_metrics);
    if (rep.stage == last) replies[rep.dp_group] = std::move(rep);
  }

  worker::StepResult result;
  result.sampled.assign(batch.size(), -1);
  result.logits_row.assign(batch.size(), -1);
  int64_t rows = 0;
  std::vector<int64_t> row_base(groups, 0);
  for (int g = 0; g < groups; ++g) {
    row_base[g] = rows;
    const Tensor& l = replies[g].logits;
    if (l.defined() && (l.ndim() != 2 || l.dim(1) != rt_.model.vocab_size))
      return internal_error("step {}: dp group {} sent logits of shape {}, expected [rows, {}]",
                            request, g, shape_str(l.shape()), rt_.model.vocab_size);
    if (l.defined()) rows += l.dim(0);
  }
  if (rows > 0) {
    const int64_t V = rt_.model.vocab_size;
    result.logits = Tensor::empty({rows, V}, DType::kF32);
    for (int g = 0; g < groups; ++g)
      if (replies[g].logits.defined())
        std::memcpy(result.logits.data_as<float>() + row_base[g] * V, replies[g].logits.data(),
                    replies[g].logits.nbytes());
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto [g, j] = where[i];
    const auto& rep = replies[g];
    if (j >= rep.sampled.size() || j >= rep.logits_row.size())
      return internal_error("step {}: dp group {} replied for {} sequences, expected {}", request,
                            g, rep.sampled.size(), by_group[g].size());
    result.sampled[i] = rep.sampled[j];
    if (rep.logits_row[j] >= 0) {
      if (!rep.logits.defined() || rep.logits_row[j] >= rep.logits.dim(0))
        return internal_error("step {}: dp group {} points at logits row {} of {}", request, g,
                              rep.logits_row[j], rep.logits.defined() ? rep.logits.dim(0) : 0);
      result.logits_row[i] = row_base[g] + rep.logits_row[j];
    }
  }
  // EP metrics are already summed over the whole stage (every dp group); MoE tp metrics are
  // per dp group and are added up here.
  const bool per_group = rt_.plan.pools[0].moe == parallel::MoeMode::kTp;
  for (int st = 0; st <= last; ++st) {
    for (size_t l = 0; l < metrics[st][0].size(); ++l) {
      moe::MoeLayerMetrics m = metrics[st][0][l];
      for (int g = 1; per_group && g < groups; ++g) {
        if (l >= metrics[st][g].size()) continue;
        const auto& o = metrics[st][g][l];
        m.tokens_per_expert.resize(std::max(m.tokens_per_expert.size(), o.tokens_per_expert.size()),
                                   0);
        for (size_t e = 0; e < o.tokens_per_expert.size(); ++e)
          m.tokens_per_expert[e] += o.tokens_per_expert[e];
        m.num_assignments += o.num_assignments;
        m.num_dropped += o.num_dropped;
      }
      result.moe_metrics.push_back(std::move(m));
    }
  }
  return result;
}

Status DistributedExecutor::shutdown() {
  for (const auto& w : workers_)
    SW_RETURN_IF_ERROR(channel_.send(w, comm::MessageType::kShutdown, 0, ""));
  return Status();
}

}  // namespace sw::coordinator

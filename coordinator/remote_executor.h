// RemoteExecutor: one instance's worker ranks, driven over the control channel. submit()
// sends the step command to every worker of the instance and returns; poll() files the
// replies (one per dp group from the last stage's tp-rank-0, plus every other stage's
// tp-rank-0 when MoE metrics are collected) and hands back the output once all are in. A
// worker's error report, a worker lost by heartbeat, or a step past cluster.timeout_s ends the
// instance with a message that names the ranks.
#pragma once

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "coordinator/control_hub.h"
#include "coordinator/executor.h"
#include "parallel/cluster_config.h"

namespace sw::coordinator {

struct RemoteInstance {
  std::string name;                     // "mixed instance 0 (ranks 1-4)"
  std::vector<std::vector<int>> ranks;  // [stage] -> world ranks, dp-major, tp-minor
  int tp = 1;                           // ranks per dp group of a stage
  int dp = 1;                           // dp groups
  parallel::MoeMode moe = parallel::MoeMode::kEp;
  double timeout_s = 300;  // a step must finish within this
  int64_t vocab_size = 0;
};

class RemoteExecutor final : public Executor {
 public:
  RemoteExecutor(ControlHub& hub, RemoteInstance instance);

  std::string describe() const override { return instance_.name; }
  Status submit(const worker::StepCommand& command) override;
  Result<std::optional<StepOutput>> poll() override;
  void wait(double max_s) override;
  bool busy() const override { return in_flight_; }
  Status shutdown() override;
  // Worker peer ids of the instance ("rank<N>"), for the start-up wait.
  std::vector<std::string> peers() const;

 private:
  Result<std::optional<StepOutput>> assemble();
  // The rank that answers for (stage, dp group): its tp-rank-0.
  int reply_rank(int stage, int dp) const;

  ControlHub& hub_;
  RemoteInstance instance_;
  bool in_flight_ = false;
  bool collect_metrics_ = false;
  uint64_t request_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  std::vector<worker::StepReply> replies_;  // last stage, per dp group
  // [stage][dp group] -> that group's per-layer MoE metrics
  std::vector<std::vector<std::vector<moe::MoeLayerMetrics>>> metrics_;
  std::set<std::pair<int, int>> got_;  // (stage, dp group)
};

}  // namespace sw::coordinator

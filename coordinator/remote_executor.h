// RemoteExecutor: one instance's worker ranks, driven over the control channel. submit()
// sends the step command to every worker of the instance and returns; poll() files the
// replies (one per dp group from the last stage's tp-rank-0, plus every other stage's
// tp-rank-0 when MoE metrics are collected) and hands back the output once all are in. A
// worker's error report, a worker lost by heartbeat, or a step past cluster.timeout_s ends the
// instance with a message that names the ranks. For disaggregation it also tells its workers
// which KV to send or expect, and gathers their transfer reports.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "coordinator/control_hub.h"
#include "coordinator/executor.h"
#include "parallel/cluster_config.h"

namespace sw::coordinator {

// Where each instance's ranks receive KV: [instance][dp group][stage * tp + tp rank] ->
// (world rank, KvTransport address). Filled from the workers' info messages at start-up.
struct KvDirectory {
  std::vector<std::vector<std::vector<std::pair<int, std::string>>>> ranks;
};

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
  // `directory` (disaggregated jobs) must outlive the executor.
  RemoteExecutor(ControlHub& hub, RemoteInstance instance, const KvDirectory* directory = nullptr);

  std::string describe() const override { return instance_.name; }
  Status submit(const worker::StepCommand& command) override;
  Result<std::optional<StepOutput>> poll() override;
  void wait(double max_s) override;
  bool busy() const override { return in_flight_; }
  Status shutdown() override;
  Status expect_kv(const worker::KvRecvOrder& order) override;
  Status send_kv(const worker::KvSendOrder& order) override;
  Status cancel_kv(uint64_t transfer) override;
  std::vector<KvTransferEvent> poll_kv() override;
  std::string kv_missing(uint64_t transfer) const override;
  // Worker peer ids of the instance ("rank<N>"), for the start-up wait.
  std::vector<std::string> peers() const;

 private:
  // Files every message of this instance's workers: step replies, errors, KV reports.
  Status drain();
  Result<std::optional<StepOutput>> assemble();
  // The rank that answers for (stage, dp group): its tp-rank-0.
  int reply_rank(int stage, int dp) const;
  std::vector<int> group_ranks(int dp) const;  // every stage's tp ranks of one dp group
  Status fill_destinations(worker::KvSendOrder& order) const;
  Status send_kv_command(const std::vector<int>& ranks, const worker::KvCommand& c);

  ControlHub& hub_;
  RemoteInstance instance_;
  const KvDirectory* directory_;
  Status error_;  // a worker's error report: the instance is done
  bool in_flight_ = false;
  bool collect_metrics_ = false;
  uint64_t request_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  std::vector<worker::StepReply> replies_;  // last stage, per dp group
  // [stage][dp group] -> that group's per-layer MoE metrics
  std::vector<std::vector<std::vector<moe::MoeLayerMetrics>>> metrics_;
  std::set<std::pair<int, int>> got_;  // (stage, dp group)
  // Transfers this (decode) instance expects: the ranks still to report, and the totals.
  struct Pending {
    std::set<int> ranks;
    KvTransferEvent event;
  };
  std::map<uint64_t, Pending> pending_kv_;
  std::vector<KvTransferEvent> kv_events_;
};

}  // namespace sw::coordinator

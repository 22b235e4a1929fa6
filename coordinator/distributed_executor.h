// DistributedExecutor: the coordinator's StepExecutor for one instance of a pool. It owns
// the KV block pools (one per dp group) and so decides every sequence's block table; each
// step it sends one StepCommand to every worker of the instance over the control channel and
// waits (bounded by comm.timeout_s) for the replies of each dp group's last-stage tp-rank-0.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/control/control_channel.h"
#include "worker/cluster_runtime.h"
#include "worker/model_runner.h"

namespace sw::coordinator {

class DistributedExecutor final : public worker::StepExecutor {
 public:
  // Waits until every worker of the instance has said hello (bounded by timeout_s; the
  // error names the ranks that never did).
  static Result<std::unique_ptr<DistributedExecutor>> create(const worker::ClusterRuntime& rt,
                                                             comm::ControlChannel& channel,
                                                             int64_t num_kv_blocks);

  const model::ModelConfig& config() const override { return rt_.model; }
  int num_kv_groups() const override { return static_cast<int>(pools_.size()); }
  worker::KvBlockPool& kv_pool(int group) override { return *pools_[group]; }
  Result<worker::StepResult> step(const std::vector<worker::SequenceInput>& batch) override;
  Status free_sequence(int64_t seq_id, int group) override {
    return pools_[group]->free_sequence(seq_id);
  }

  void set_collect_moe_metrics(bool on) { collect_moe_metrics_ = on; }
  // Tells every worker to exit its loop.
  Status shutdown();

 private:
  DistributedExecutor(const worker::ClusterRuntime& rt, comm::ControlChannel& channel);
  const worker::ClusterRuntime& rt_;
  comm::ControlChannel& channel_;
  std::vector<std::string> workers_;  // peer ids of the instance's ranks
  std::vector<std::unique_ptr<worker::KvBlockPool>> pools_;
  int num_stages_ = 1;
  uint64_t next_request_ = 1;
  bool collect_moe_metrics_ = false;
};

}  // namespace sw::coordinator

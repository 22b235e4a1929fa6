// DistributedForward: ForwardParallelism over real communicators — tensor parallelism
// (all-reduce after row-parallel layers, vocab-parallel embedding and LM head), pipeline
// stages (hidden + residual sent stage to stage) and MoE in either mode: `ep` (tokens split
// over the tp ranks, experts over the stage's ranks, dispatched by moe::ExpertDispatcher) or
// `tp` (each expert split over tp like a dense FFN, then all-reduced).
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "parallel/cluster_config.h"
#include "parallel/forward_parallelism.h"

namespace sw::moe {
class ExpertDispatcher;
}

namespace sw::parallel {

struct DistributedForwardOptions {
  comm::Communicator* world = nullptr;        // for pipeline send/recv
  comm::Communicator* tp_group = nullptr;     // this rank's tp group (size tp)
  comm::Communicator* stage_group = nullptr;  // this rank's stage (size tp * dp), EP group
  int prev_stage_rank = -1;                   // world rank of the same (dp, tp) on stage - 1
  int next_stage_rank = -1;                   // ... on stage + 1
  int dp = 1;
  int pp = 1;
  MoeMode moe_mode = MoeMode::kEp;
  int num_experts = 0;  // of the model (0: dense)
  comm::AllToAllAlgorithm all_to_all = comm::AllToAllAlgorithm::kAuto;
};

class DistributedForward final : public ForwardParallelism {
 public:
  static Result<std::unique_ptr<DistributedForward>> create(kernels::Backend& backend,
                                                            const DistributedForwardOptions& o);
  ~DistributedForward() override;

  Status tp_all_reduce(Tensor& x) override;
  Status moe_ffn(const Tensor& x, const Tensor& router_w, const Tensor& w_gate_up,
                 const Tensor& w_down, const moe::MoeOptions& options, Tensor& out,
                 moe::MoeLayerMetrics* metrics) override;
  Status gather_logits(const Tensor& local, Tensor& full) override;
  Status recv_from_prev_stage(Tensor& hidden, Tensor& residual) override;
  Status send_to_next_stage(const Tensor& hidden, const Tensor& residual) override;
  int num_microbatches() const override { return o_.pp; }
  bool moe_spans_dp_groups() const override {
    return o_.num_experts > 0 && o_.moe_mode == MoeMode::kEp && o_.dp > 1;
  }

 private:
  DistributedForward(kernels::Backend& backend, const DistributedForwardOptions& o);
  Status sync_device();
  int tp_size() const { return o_.tp_group ? o_.tp_group->size() : 1; }
  kernels::Backend& backend_;
  DistributedForwardOptions o_;
  std::unique_ptr<moe::ExpertDispatcher> dispatcher_;
};

}  // namespace sw::parallel

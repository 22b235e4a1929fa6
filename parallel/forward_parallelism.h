// ForwardParallelism: the seams where a parallel layout touches the model forward. The
// forward (worker/model_runner) stays free of parallelism and calls these at fixed points;
// a null ForwardParallelism means one process holding the whole model. The TP/PP/EP
// implementation is parallel/distributed_forward.h. Add a seam: a virtual here, its call in
// the forward, and both implementations.
#pragma once

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "moe/expert_ffn.h"

namespace sw::parallel {

class ForwardParallelism {
 public:
  virtual ~ForwardParallelism() = default;
  // Sums partial results over the tp group in place: after the vocab-parallel embedding and
  // the row-parallel o_proj / down_proj. x: [T, H].
  virtual Status tp_all_reduce(Tensor& x) = 0;
  // One MoE FFN layer: x [T, H] (replicated over the tp group) -> out [T, H] (replicated).
  // Local expert weights: w_gate_up [E_local, 2I_local, H], w_down [E_local, H, I_local].
  virtual Status moe_ffn(const Tensor& x, const Tensor& router_w, const Tensor& w_gate_up,
                         const Tensor& w_down, const moe::MoeOptions& options, Tensor& out,
                         moe::MoeLayerMetrics* metrics) = 0;
  // Vocab-parallel logits: local [N, V_local] -> full [N, V] (on every tp rank).
  virtual Status gather_logits(const Tensor& local, Tensor& full) = 0;
  // Pipeline stages: hidden and residual [T, H] from the previous stage / to the next.
  virtual Status recv_from_prev_stage(Tensor& hidden, Tensor& residual) = 0;
  virtual Status send_to_next_stage(const Tensor& hidden, const Tensor& residual) = 0;
  // True when MoE layers hold collectives across dp groups (EP over dp > 1): the forward then
  // runs them even when this rank's dp group has no tokens in a step.
  virtual bool moe_spans_dp_groups() const = 0;
  // Micro-batches per step: with pipeline stages, a step is split so that stage s works on
  // micro-batch m + 1 while stage s + 1 works on m. Every rank of an instance uses the same
  // count (EP collectives pair up micro-batch by micro-batch across dp groups).
  virtual int num_microbatches() const = 0;
};

}  // namespace sw::parallel

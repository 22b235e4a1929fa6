// ExpertDispatcher: expert parallelism (EP) over a stage communicator, DeepEP style:
// layout(topk) -> handle; dispatch(x, handle) -> received rows grouped by local expert;
// the caller runs its local experts; combine(y, handle) -> weighted outputs per token.
// Group rank i owns experts [i * E / S, (i + 1) * E / S). Extend: a new transport path
// (e.g. low-latency decode) is another branch in exchange(); the handle stays the contract.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "comm/hierarchical_all_to_all.h"
#include "comm/options.h"
#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "moe/expert_ffn.h"

namespace sw::moe {

// Everything one layer's routing decided, computed by layout() and reused by dispatch()
// and combine(). Device tensors live on the dispatcher's backend; host vectors are small
// (O(S * E / S) entries). Valid for one (topk, x) batch; do not share across layers.
struct DispatchHandle {
  int64_t num_tokens = 0;  // T_local
  int top_k = 0;
  int64_t capacity = -1;  // per expert per source rank; < 0: dropless

  // Source side (this rank's tokens).
  Tensor dest_rows;     // int32 [T, k] device: row in the send buffer, -1 = dropped
  Tensor weights;       // float32 [T, k] device: routing weights used by combine
  Tensor send_offsets;  // int32 [E + 1] device: moe_assign's expert offsets (all experts)
  std::vector<int64_t> send_expert_counts;  // [E] host: kept assignments per expert
  std::vector<int64_t> send_counts;         // [S] host: rows to each peer
  std::vector<int64_t> send_displs;         // [S] host: first row for each peer
  int64_t num_send_rows = 0;                // R_send = sum(send_counts)

  // Destination side (rows arriving for this rank's local experts).
  std::vector<int64_t> recv_expert_counts;  // [S * E_local] host: (source, local expert)
  std::vector<int64_t> recv_counts;         // [S] host: rows from each source
  std::vector<int64_t> recv_displs;         // [S] host: first row of each source
  int64_t num_recv_rows = 0;                // R_recv
  // Received rows arrive source-major (source 0's rows for local experts 0..E_local-1, then
  // source 1's...). to_expert_major[i] (int32 [R_recv, 1] device) is the expert-major row of
  // source-major row i; to_source_major is its inverse. Both are moe_permute row maps.
  Tensor to_expert_major;
  Tensor to_source_major;
  std::vector<int64_t> local_expert_counts;  // [E_local] host: rows per local expert
  Tensor local_expert_offsets;               // int32 [E_local + 1] device, for grouped_gemm

  // Hierarchical plans, built by dispatch() for rows of `plan_hidden` elements.
  int64_t plan_hidden = -1;
  comm::HierarchicalAllToAll::Plan dispatch_plan, combine_plan;
};

class ExpertDispatcher {
 public:
  // Typical dispatch block size assumed when `algo` is kAuto and no hint is given: 64 rows
  // of 4096 bf16 values per (source, destination) pair.
  static constexpr double kDefaultBytesPerPair = 64.0 * 4096 * 2;

  // Collective over `group` (every rank calls it). num_experts must be divisible by
  // group.size(). algo kAuto asks comm::choose_all_to_all with the group's topology, the
  // cost model from group.options() and `bytes_per_pair_hint`; kHierarchical builds a
  // comm::HierarchicalAllToAll (node sub-communicator). `backend` and `group` must outlive
  // the dispatcher.
  static Result<std::unique_ptr<ExpertDispatcher>> create(
      kernels::Backend& backend, comm::Communicator& group, int num_experts,
      comm::AllToAllAlgorithm algo, double bytes_per_pair_hint = kDefaultBytesPerPair);

  int num_experts() const { return num_experts_; }
  int num_local_experts() const { return num_local_experts_; }
  int first_local_expert() const { return group_.rank() * num_local_experts_; }
  // kFlat or kHierarchical (never kAuto).
  comm::AllToAllAlgorithm algorithm() const { return algo_; }

  // Collective. topk_ids: int32 [T, k] global expert ids; topk_weights: float32 [T, k]
  // combine weights (device; kept by reference in the handle, so leave them unchanged until
  // combine). capacity: slots per expert for this rank's tokens (moe::expert_capacity), < 0
  // dropless. priority_weights: float32 [T, k] that a priority policy scores tokens by
  // (route_topk's; null: topk_weights). Runs moe_assign over all E experts (so kept rows are
  // expert- and rank-contiguous), then exchanges the E_local kept counts with every peer (one
  // small all_to_all_v of int64). T may be 0.
  Result<DispatchHandle> layout(const Tensor& topk_ids, const Tensor& topk_weights,
                                int64_t capacity, kernels::DropPolicy policy,
                                const Tensor* priority_weights = nullptr);

  // Collective. x: [T, H] any float dtype (device). Returns recv: [R_recv, H] same dtype,
  // rows grouped by local expert (h.local_expert_offsets delimits them; within an expert,
  // rows are ordered by source rank, then by slot). Builds h's hierarchical plans.
  Result<Tensor> dispatch(const Tensor& x, DispatchHandle& h);

  // Collective. y: [R_recv, H] expert outputs in dispatch()'s row order; out: [T, H]
  // (preallocated, same dtype): out[t] = sum_j weights[t, j] * y_of(t, j) over kept choices;
  // a token whose choices were all dropped gets zeros (the residual path carries it).
  Status combine(const Tensor& y, const DispatchHandle& h, Tensor& out);

  // The whole EP MoE FFN on this rank's tokens. Collective.
  // x: [T, H]; router_w: [E, H] (replicated); w_gate_up: [E_local, 2I, H] and
  // w_down: [E_local, H, I] for this rank's experts; out: [T, H]. options.capacity is the
  // per-expert capacity for this rank's tokens (expert_capacity with T_local).
  // metrics (non-null on all ranks or on none: it adds one all_reduce of E + 2 int64):
  // group-wide tokens per expert, assignments, drops and imbalance.
  Status moe_ffn_ep(const Tensor& x, const Tensor& router_w, const Tensor& w_gate_up,
                    const Tensor& w_down, const MoeOptions& options, Tensor& out,
                    MoeLayerMetrics* metrics = nullptr);

  // Group-wide metrics for a handle (collective: one all_reduce of E + 2 int64).
  Result<MoeLayerMetrics> metrics(const DispatchHandle& h);

 private:
  ExpertDispatcher(kernels::Backend& backend, comm::Communicator& group, int num_experts,
                   comm::AllToAllAlgorithm algo,
                   std::unique_ptr<comm::HierarchicalAllToAll> hierarchical);
  // all_to_all_v of rows of `hidden` elements: forward (dispatch) or reverse (combine).
  Status exchange(const void* send, void* recv, int64_t hidden, DType dtype, bool reverse,
                  const DispatchHandle& h);
  Result<Tensor> upload_ints(const std::vector<int32_t>& values, const Shape& shape);

  kernels::Backend& backend_;
  comm::Communicator& group_;
  int num_experts_;
  int num_local_experts_;
  comm::AllToAllAlgorithm algo_;
  std::unique_ptr<comm::HierarchicalAllToAll> hierarchical_;
};

}  // namespace sw::moe

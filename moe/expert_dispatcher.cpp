// ExpertDispatcher: layout (moe_assign over all experts + count exchange), dispatch
// (permute -> all_to_all_v -> expert-major reorder), combine (the reverse + weighted sum).
// Only the small index maps are built on the host; rows move through backend ops and comm.
#include "moe/expert_dispatcher.h"

#include <algorithm>
#include <limits>

#include "comm/cost_model.h"

namespace sw::moe {

namespace {

Status check_rows(const char* op, const char* what, const Tensor& t, int64_t rows, int64_t cols) {
  if (t.ndim() != 2 || t.dim(0) != rows || (cols >= 0 && t.dim(1) != cols))
    return invalid_argument("ExpertDispatcher::{}: {} is {}, expected [{}, {}]", op, what,
                            t.describe(), rows, cols >= 0 ? std::to_string(cols) : "H");
  return Status();
}

std::vector<int64_t> scaled(const std::vector<int64_t>& v, int64_t factor) {
  std::vector<int64_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = v[i] * factor;
  return out;
}

}  // namespace

ExpertDispatcher::ExpertDispatcher(kernels::Backend& backend, comm::Communicator& group,
                                   int num_experts, comm::AllToAllAlgorithm algo,
                                   std::unique_ptr<comm::HierarchicalAllToAll> hierarchical)
    : backend_(backend),
      group_(group),
      num_experts_(num_experts),
      num_local_experts_(num_experts / group.size()),
      algo_(algo),
      hierarchical_(std::move(hierarchical)) {}

Result<std::unique_ptr<ExpertDispatcher>> ExpertDispatcher::create(kernels::Backend& backend,
                                                                   comm::Communicator& group,
                                                                   int num_experts,
                                                                   comm::AllToAllAlgorithm algo,
                                                                   double bytes_per_pair_hint) {
  const int S = group.size();
  if (num_experts <= 0 || num_experts % S != 0)
    return invalid_argument(
        "ExpertDispatcher: num_experts={} must be a positive multiple of the group size {} "
        "(group '{}')",
        num_experts, S, group.name());
  const comm::AllToAllAlgorithm chosen = comm::choose_all_to_all(
      algo, group.topology(), bytes_per_pair_hint, comm::CostModel::from_options(group.options()));
  std::unique_ptr<comm::HierarchicalAllToAll> hier;
  if (chosen == comm::AllToAllAlgorithm::kHierarchical) {
    SW_ASSIGN_OR_RETURN(hier, comm::HierarchicalAllToAll::create(group));
  }
  return std::unique_ptr<ExpertDispatcher>(
      new ExpertDispatcher(backend, group, num_experts, chosen, std::move(hier)));
}

Result<Tensor> ExpertDispatcher::upload_ints(const std::vector<int32_t>& values,
                                             const Shape& shape) {
  Tensor host = Tensor::empty(shape, DType::kI32);
  std::copy(values.begin(), values.end(), host.data_as<int32_t>());
  Tensor dev = backend_.alloc(shape, DType::kI32);
  SW_RETURN_IF_ERROR(backend_.copy(host, dev));
  return dev;
}

Result<DispatchHandle> ExpertDispatcher::layout(const Tensor& topk_ids, const Tensor& topk_weights,
                                                int64_t capacity, kernels::DropPolicy policy,
                                                const Tensor* priority_weights) {
  const int S = group_.size(), E = num_experts_, El = num_local_experts_;
  if (topk_ids.ndim() != 2 || topk_ids.dtype() != DType::kI32)
    return invalid_argument("ExpertDispatcher::layout: topk_ids must be int32 [T, k], got {}",
                            topk_ids.describe());
  if (topk_weights.dtype() != DType::kF32 || topk_weights.shape() != topk_ids.shape())
    return invalid_argument(
        "ExpertDispatcher::layout: topk_weights must be float32 {} like topk_ids, got {}",
        shape_str(topk_ids.shape()), topk_weights.describe());
  DispatchHandle h;
  h.num_tokens = topk_ids.dim(0);
  h.top_k = static_cast<int>(topk_ids.dim(1));
  h.capacity = capacity;
  h.weights = topk_weights;
  h.dest_rows = backend_.alloc({h.num_tokens, h.top_k}, DType::kI32);
  h.send_offsets = backend_.alloc({E + 1}, DType::kI32);
  SW_RETURN_IF_ERROR(backend_.moe_assign(topk_ids,
                                         priority_weights ? *priority_weights : topk_weights, E,
                                         capacity, policy, h.dest_rows, h.send_offsets));
  Tensor off_host = Tensor::empty({E + 1}, DType::kI32);
  SW_RETURN_IF_ERROR(backend_.copy(h.send_offsets, off_host));
  SW_RETURN_IF_ERROR(backend_.synchronize());
  const int32_t* off = off_host.data_as<int32_t>();

  // Experts are rank-contiguous, so peer p's rows are [off[p * El], off[(p + 1) * El]).
  h.send_expert_counts.resize(E);
  for (int e = 0; e < E; ++e) h.send_expert_counts[e] = off[e + 1] - off[e];
  h.send_counts.resize(S);
  h.send_displs.resize(S);
  for (int p = 0; p < S; ++p) {
    h.send_displs[p] = off[p * El];
    h.send_counts[p] = off[(p + 1) * El] - off[p * El];
  }
  h.num_send_rows = off[E];

  // Count exchange: peer p gets the E_local counts of its experts.
  std::vector<int64_t> block(S, El), displs(S);
  for (int p = 0; p < S; ++p) displs[p] = int64_t{p} * El;
  h.recv_expert_counts.assign(static_cast<size_t>(S) * El, 0);
  SW_RETURN_IF_ERROR(group_.all_to_all_v(h.send_expert_counts.data(), block, displs,
                                         h.recv_expert_counts.data(), block, displs, DType::kI64));

  h.recv_counts.assign(S, 0);
  h.recv_displs.assign(S, 0);
  h.local_expert_counts.assign(El, 0);
  int64_t total = 0;
  for (int s = 0; s < S; ++s) {
    h.recv_displs[s] = total;
    for (int le = 0; le < El; ++le) {
      const int64_t c = h.recv_expert_counts[s * El + le];
      h.recv_counts[s] += c;
      h.local_expert_counts[le] += c;
    }
    total += h.recv_counts[s];
  }
  h.num_recv_rows = total;
  if (total > std::numeric_limits<int32_t>::max())
    return invalid_argument("ExpertDispatcher::layout: {} received rows overflow int32 row ids",
                            total);

  // Source-major row of (s, le, j) -> expert-major row; and the inverse.
  std::vector<int32_t> local_off(El + 1, 0);
  for (int le = 0; le < El; ++le)
    local_off[le + 1] = local_off[le] + static_cast<int32_t>(h.local_expert_counts[le]);
  std::vector<int32_t> to_em(total), to_sm(total);
  std::vector<int64_t> next_em(local_off.begin(), local_off.end() - 1);
  int64_t row = 0;
  for (int s = 0; s < S; ++s)
    for (int le = 0; le < El; ++le)
      for (int64_t j = 0; j < h.recv_expert_counts[s * El + le]; ++j, ++row) {
        const int64_t em = next_em[le]++;
        to_em[row] = static_cast<int32_t>(em);
        to_sm[em] = static_cast<int32_t>(row);
      }
  SW_ASSIGN_OR_RETURN(h.to_expert_major, upload_ints(to_em, {total, 1}));
  SW_ASSIGN_OR_RETURN(h.to_source_major, upload_ints(to_sm, {total, 1}));
  SW_ASSIGN_OR_RETURN(h.local_expert_offsets, upload_ints(local_off, {El + 1}));
  return h;
}

Status ExpertDispatcher::exchange(const void* send, void* recv, int64_t hidden, DType dtype,
                                  bool reverse, const DispatchHandle& h) {
  const auto& sc = reverse ? h.recv_counts : h.send_counts;
  const auto& sd = reverse ? h.recv_displs : h.send_displs;
  const auto& rc = reverse ? h.send_counts : h.recv_counts;
  const auto& rd = reverse ? h.send_displs : h.recv_displs;
  const std::vector<int64_t> sce = scaled(sc, hidden), sde = scaled(sd, hidden);
  const std::vector<int64_t> rce = scaled(rc, hidden), rde = scaled(rd, hidden);
  // Buffers written by backend ops must be complete before the transport reads them.
  SW_RETURN_IF_ERROR(backend_.synchronize());
  if (!hierarchical_) return group_.all_to_all_v(send, sce, sde, recv, rce, rde, dtype);
  if (h.plan_hidden == hidden)
    return hierarchical_->execute(reverse ? h.combine_plan : h.dispatch_plan, send, sde, recv, rde,
                                  dtype);
  return hierarchical_->run(send, sce, sde, recv, rce, rde, dtype);
}

Result<Tensor> ExpertDispatcher::dispatch(const Tensor& x, DispatchHandle& h) {
  SW_RETURN_IF_ERROR(check_rows("dispatch", "x", x, h.num_tokens, -1));
  const int64_t H = x.dim(1);
  Tensor send = backend_.alloc({h.num_send_rows, H}, x.dtype());
  SW_RETURN_IF_ERROR(backend_.moe_permute(x, h.dest_rows, send));
  if (hierarchical_ && h.plan_hidden != H) {
    // Both directions' plans, so combine() only executes (each plan() is collective).
    SW_ASSIGN_OR_RETURN(h.dispatch_plan,
                        hierarchical_->plan(scaled(h.send_counts, H), scaled(h.recv_counts, H)));
    SW_ASSIGN_OR_RETURN(h.combine_plan,
                        hierarchical_->plan(scaled(h.recv_counts, H), scaled(h.send_counts, H)));
    h.plan_hidden = H;
  }
  Tensor source_major = backend_.alloc({h.num_recv_rows, H}, x.dtype());
  SW_RETURN_IF_ERROR(exchange(send.data(), source_major.data(), H, x.dtype(), false, h)
                         .with_context("ExpertDispatcher::dispatch"));
  Tensor recv = backend_.alloc({h.num_recv_rows, H}, x.dtype());
  SW_RETURN_IF_ERROR(backend_.moe_permute(source_major, h.to_expert_major, recv));
  return recv;
}

Status ExpertDispatcher::combine(const Tensor& y, const DispatchHandle& h, Tensor& out) {
  SW_RETURN_IF_ERROR(check_rows("combine", "y", y, h.num_recv_rows, -1));
  const int64_t H = y.dim(1);
  SW_RETURN_IF_ERROR(check_rows("combine", "out", out, h.num_tokens, H));
  Tensor source_major = backend_.alloc({h.num_recv_rows, H}, y.dtype());
  SW_RETURN_IF_ERROR(backend_.moe_permute(y, h.to_source_major, source_major));
  Tensor back = backend_.alloc({h.num_send_rows, H}, y.dtype());
  SW_RETURN_IF_ERROR(exchange(source_major.data(), back.data(), H, y.dtype(), true, h)
                         .with_context("ExpertDispatcher::combine"));
  return backend_.moe_unpermute(back, h.dest_rows, h.weights, out);
}

Result<MoeLayerMetrics> ExpertDispatcher::metrics(const DispatchHandle& h) {
  const int E = num_experts_;
  std::vector<int64_t> buf(E + 2, 0);
  int64_t kept = 0;
  for (int e = 0; e < E; ++e) {
    buf[e] = h.send_expert_counts[e];
    kept += buf[e];
  }
  buf[E] = h.num_tokens * h.top_k;
  buf[E + 1] = kept;
  SW_RETURN_IF_ERROR(group_.all_reduce(buf.data(), buf.data(), E + 2, DType::kI64));
  MoeLayerMetrics m;
  m.tokens_per_expert.assign(buf.begin(), buf.begin() + E);
  m.num_assignments = buf[E];
  m.num_dropped = buf[E] - buf[E + 1];
  m.finalize();
  return m;
}

Status ExpertDispatcher::moe_ffn_ep(const Tensor& x, const Tensor& router_w,
                                    const Tensor& w_gate_up, const Tensor& w_down,
                                    const MoeOptions& o, Tensor& out,
                                    MoeLayerMetrics* metrics_out) {
  kernels::Backend& b = backend_;
  const int E = num_experts_, El = num_local_experts_;
  if (x.ndim() != 2)
    return invalid_argument("ExpertDispatcher::moe_ffn_ep: x must be [T, H], got {}", x.describe());
  const int64_t T = x.dim(0), H = x.dim(1);
  SW_RETURN_IF_ERROR(check_rows("moe_ffn_ep", "router_w", router_w, E, H));
  if (w_gate_up.ndim() != 3 || w_gate_up.dim(0) != El || w_gate_up.dim(2) != H ||
      w_gate_up.dim(1) % 2 != 0)
    return invalid_argument(
        "ExpertDispatcher::moe_ffn_ep: w_gate_up is {}, expected [E_local={}, 2I, H={}]",
        w_gate_up.describe(), El, H);
  const int64_t I2 = w_gate_up.dim(1);
  if (w_down.ndim() != 3 || w_down.dim(0) != El || w_down.dim(1) != H || w_down.dim(2) != I2 / 2)
    return invalid_argument(
        "ExpertDispatcher::moe_ffn_ep: w_down is {}, expected [E_local={}, H={}, I={}]",
        w_down.describe(), El, H, I2 / 2);
  SW_RETURN_IF_ERROR(check_rows("moe_ffn_ep", "out", out, T, H));

  Tensor logits = b.alloc({T, E}, x.dtype());
  SW_RETURN_IF_ERROR(b.gemm(x, router_w, logits));
  SW_ASSIGN_OR_RETURN(RoutedTopk routed, route_topk(b, logits, o));
  SW_ASSIGN_OR_RETURN(DispatchHandle h, layout(routed.ids, routed.weights, o.capacity, o.policy,
                                               &routed.priority_weights));
  SW_ASSIGN_OR_RETURN(Tensor recv, dispatch(x, h));
  const int64_t R = h.num_recv_rows;
  Tensor gate_up = b.alloc({R, I2}, x.dtype());
  SW_RETURN_IF_ERROR(b.grouped_gemm(recv, w_gate_up, h.local_expert_offsets, gate_up));
  Tensor act = b.alloc({R, I2 / 2}, x.dtype());
  SW_RETURN_IF_ERROR(b.silu_and_mul(gate_up, act));
  Tensor y = b.alloc({R, H}, x.dtype());
  SW_RETURN_IF_ERROR(b.grouped_gemm(act, w_down, h.local_expert_offsets, y));
  SW_RETURN_IF_ERROR(combine(y, h, out));
  if (metrics_out) {
    SW_ASSIGN_OR_RETURN(*metrics_out, metrics(h));
  }
  return Status();
}

}  // namespace sw::moe

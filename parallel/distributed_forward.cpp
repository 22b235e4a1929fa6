// TP/PP/EP seams over communicators. Buffers are the backend's tensors; the CPU backend's
// live in host memory, which every transport takes.
#include "parallel/distributed_forward.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "moe/expert_dispatcher.h"

namespace sw::parallel {

namespace {
constexpr int kTagHidden = 101;
constexpr int kTagResidual = 102;
}  // namespace

DistributedForward::DistributedForward(kernels::Backend& backend,
                                       const DistributedForwardOptions& o)
    : backend_(backend), o_(o) {}
DistributedForward::~DistributedForward() = default;

Result<std::unique_ptr<DistributedForward>> DistributedForward::create(
    kernels::Backend& backend, const DistributedForwardOptions& o) {
  if (!o.world || !o.tp_group || !o.stage_group)
    return invalid_argument("DistributedForward needs the world, tp and stage communicators");
  std::unique_ptr<DistributedForward> f(new DistributedForward(backend, o));
  if (o.num_experts > 0 && o.moe_mode == MoeMode::kEp) {
    SW_ASSIGN_OR_RETURN(f->dispatcher_, moe::ExpertDispatcher::create(backend, *o.stage_group,
                                                                      o.num_experts, o.all_to_all));
  }
  return f;
}

// Device kernels run asynchronously on the backend's stream; a transport must not read a
// buffer before they are done (MPI staging and NCCL use their own streams).
Status DistributedForward::sync_device() {
  return backend_.device() == Device::kCpu ? Status() : backend_.synchronize();
}

Status DistributedForward::tp_all_reduce(Tensor& x) {
  if (tp_size() == 1 || x.numel() == 0) return Status();
  SW_RETURN_IF_ERROR(sync_device());
  return o_.tp_group->all_reduce(x.data(), x.data(), x.numel(), x.dtype());
}

Status DistributedForward::moe_ffn(const Tensor& x, const Tensor& router_w, const Tensor& w_gate_up,
                                   const Tensor& w_down, const moe::MoeOptions& options,
                                   Tensor& out, moe::MoeLayerMetrics* metrics) {
  if (o_.moe_mode == MoeMode::kTp) {
    // Every expert's FFN is split over tp like a dense FFN: partial sums, then all-reduce.
    SW_RETURN_IF_ERROR(
        moe::moe_ffn(backend_, x, router_w, w_gate_up, w_down, options, out, metrics));
    return tp_all_reduce(out);
  }
  // EP: the tp ranks of a dp group hold the same tokens; each takes a contiguous share, the
  // stage's ranks exchange them with the experts' owners, and the shares are gathered back.
  const int tp = tp_size(), t = o_.tp_group->rank();
  const int64_t T = x.dim(0), H = x.dim(1);
  const int64_t share = (T + tp - 1) / tp;
  const int64_t begin = std::min<int64_t>(t * share, T), end = std::min<int64_t>(begin + share, T);
  // Capacity is per expert per source rank, from the tokens this rank routes.
  moe::MoeOptions local = options;
  local.capacity = moe::capacity_for(options, end - begin, o_.num_experts);
  local.capacity_factor.reset();
  if (tp == 1) return dispatcher_->moe_ffn_ep(x, router_w, w_gate_up, w_down, local, out, metrics);
  Tensor padded = backend_.alloc({share, H}, x.dtype());
  Tensor mine = padded.rows(0, end - begin);
  SW_RETURN_IF_ERROR(dispatcher_->moe_ffn_ep(x.rows(begin, end), router_w, w_gate_up, w_down, local,
                                             mine, metrics));
  if (share == 0) return Status();
  Tensor gathered = backend_.alloc({share * tp, H}, x.dtype());
  SW_RETURN_IF_ERROR(sync_device());
  SW_RETURN_IF_ERROR(o_.tp_group->all_gather(padded.data(), gathered.data(), share * H, x.dtype()));
  return backend_.copy(gathered.rows(0, T), out);
}

Status DistributedForward::gather_logits(const Tensor& local, Tensor& full) {
  const int tp = tp_size();
  if (tp == 1) return backend_.copy(local, full);
  // Vocab slices are ceil(V / tp) wide (the last may be narrower): pad, gather, reassemble.
  const int64_t N = full.dim(0), V = full.dim(1), width = (V + tp - 1) / tp;
  const size_t es = dtype_size(local.dtype());
  Tensor host_local = Tensor::empty(local.shape(), local.dtype());
  SW_RETURN_IF_ERROR(backend_.copy(local, host_local));
  SW_RETURN_IF_ERROR(backend_.synchronize());
  Tensor padded = Tensor::empty({N, width}, local.dtype());
  const int64_t mine = local.dim(1);
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(static_cast<char*>(padded.data()) + n * width * es,
                static_cast<const char*>(host_local.data()) + n * mine * es,
                static_cast<size_t>(mine) * es);
  Tensor gathered = Tensor::empty({tp * N, width}, local.dtype());
  if (std::string_view(o_.tp_group->transport()) == "nccl") {
    // NCCL takes device buffers only: gather there, reassemble on the host.
    Tensor dev_padded = backend_.alloc(padded.shape(), padded.dtype());
    Tensor dev_gathered = backend_.alloc(gathered.shape(), gathered.dtype());
    SW_RETURN_IF_ERROR(backend_.copy(padded, dev_padded));
    SW_RETURN_IF_ERROR(sync_device());
    SW_RETURN_IF_ERROR(
        o_.tp_group->all_gather(dev_padded.data(), dev_gathered.data(), N * width, local.dtype()));
    SW_RETURN_IF_ERROR(backend_.copy(dev_gathered, gathered));
    SW_RETURN_IF_ERROR(backend_.synchronize());
  } else {
    SW_RETURN_IF_ERROR(
        o_.tp_group->all_gather(padded.data(), gathered.data(), N * width, local.dtype()));
  }
  Tensor host_full = Tensor::empty({N, V}, local.dtype());
  for (int r = 0; r < tp; ++r) {
    const int64_t cols = std::clamp<int64_t>(V - r * width, 0, width);
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(static_cast<char*>(host_full.data()) + (n * V + r * width) * es,
                  static_cast<const char*>(gathered.data()) + ((r * N + n) * width) * es,
                  static_cast<size_t>(cols) * es);
  }
  return backend_.copy(host_full, full);
}

Status DistributedForward::recv_from_prev_stage(Tensor& hidden, Tensor& residual) {
  if (o_.prev_stage_rank < 0)
    return internal_error("recv_from_prev_stage on the first pipeline stage");
  SW_RETURN_IF_ERROR(sync_device());
  SW_RETURN_IF_ERROR(o_.world->recv(hidden.data(), hidden.numel(), hidden.dtype(),
                                    o_.prev_stage_rank, kTagHidden));
  return o_.world->recv(residual.data(), residual.numel(), residual.dtype(), o_.prev_stage_rank,
                        kTagResidual);
}

Status DistributedForward::send_to_next_stage(const Tensor& hidden, const Tensor& residual) {
  if (o_.next_stage_rank < 0)
    return internal_error("send_to_next_stage on the last pipeline stage");
  SW_RETURN_IF_ERROR(sync_device());
  SW_RETURN_IF_ERROR(o_.world->send(hidden.data(), hidden.numel(), hidden.dtype(),
                                    o_.next_stage_rank, kTagHidden));
  return o_.world->send(residual.data(), residual.numel(), residual.dtype(), o_.next_stage_rank,
                        kTagResidual);
}

}  // namespace sw::parallel

// NCCL transport. Every enqueue goes through settle() (non-blocking communicators may return
// ncclInProgress), completion is a CUDA event polled together with ncclCommGetAsyncError,
// and a deadline aborts the communicator (ncclCommAbort) so no rank hangs in a kernel.
#include "comm/nccl/nccl_comm.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <thread>
#include <vector>

namespace sw::comm {
namespace {

Result<ncclDataType_t> nccl_type(DType d) {
  switch (d) {
    case DType::kF32: return ncclFloat32;
    case DType::kF16: return ncclFloat16;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32: return ncclInt32;
    case DType::kI64: return ncclInt64;
    case DType::kU8: return ncclUint8;
  }
  return invalid_argument("NCCL: unsupported dtype");
}

Clock::time_point deadline_after(double s) {
  return Clock::now() + steady_seconds(s);  // clamped, so a huge timeout cannot wrap
}

class NcclWork final : public WorkImpl {
 public:
  NcclWork(NcclComm* comm, const char* op, cudaEvent_t event)
      : comm_(comm), op_(op), event_(event) {}
  ~NcclWork() override { cudaEventDestroy(event_); }

  Result<bool> poll() override {
    cudaError_t e = cudaEventQuery(event_);
    if (e == cudaSuccess) return true;
    if (e != cudaErrorNotReady) {
      Status s =
          unavailable("{}: CUDA error while waiting: {}", comm_->where(op_), cudaGetErrorString(e));
      comm_->fail(s);
      return s;
    }
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_->handle(), &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      Status s = unavailable("{}: NCCL reported {}: {}; communicator aborted", comm_->where(op_),
                             ncclGetErrorString(async), ncclGetLastError(comm_->handle()));
      ncclCommAbort(comm_->handle());
      comm_->fail(s);
      return s;
    }
    return false;
  }
  void wait_progress(Clock::time_point until) override {
    std::this_thread::sleep_until(std::min(until, Clock::now() + std::chrono::microseconds(50)));
  }
  Status on_deadline(double waited_s) override { return comm_->abort_on_deadline(op_, waited_s); }

 private:
  NcclComm* comm_;
  const char* op_;
  cudaEvent_t event_;
};

}  // namespace

NcclComm::NcclComm(std::unique_ptr<Communicator> host, ncclComm_t comm, int device,
                   cudaStream_t stream, bool own_stream)
    : Communicator(host->rank(), std::make_shared<const std::vector<int>>(host->world_ranks()),
                   host->world_node_table(), host->name(), host->options()),
      host_(std::move(host)),
      comm_(comm),
      device_(device),
      stream_(stream),
      own_stream_(own_stream) {
  cudaSetDevice(device_);
  if (cudaMalloc(&scratch_, sizeof(float)) != cudaSuccess) scratch_ = nullptr;
}

NcclComm::~NcclComm() {
  if (comm_ && !aborted_) {
    ncclCommFinalize(comm_);
    ncclResult_t st = ncclInProgress;
    auto until = deadline_after(options_.timeout_s);
    while (ncclCommGetAsyncError(comm_, &st) == ncclSuccess && st == ncclInProgress &&
           Clock::now() < until)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (st == ncclSuccess)
      ncclCommDestroy(comm_);
    else
      ncclCommAbort(comm_);
  }
  if (scratch_) cudaFree(scratch_);
  if (own_stream_ && stream_) cudaStreamDestroy(stream_);
}

Result<std::unique_ptr<NcclComm>> NcclComm::create(std::unique_ptr<Communicator> host, int device,
                                                   cudaStream_t stream) {
  const char* op = "nccl_init";
  if (cudaSetDevice(device) != cudaSuccess) {
    (void)cudaGetLastError();
    return unavailable("{}: cannot use CUDA device {}", host->where(op), device);
  }
  ncclUniqueId id{};
  if (host->rank() == 0) {
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess)
      return unavailable("{}: ncclGetUniqueId: {}", host->where(op), ncclGetErrorString(r));
  }
  SW_RETURN_IF_ERROR(host->broadcast(&id, sizeof(id), DType::kU8, 0)
                         .with_context("broadcasting the NCCL unique id"));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, host->size(), id, host->rank(), &config);
  if (r != ncclSuccess && r != ncclInProgress)
    return unavailable("{}: ncclCommInitRankConfig: {}", host->where(op), ncclGetErrorString(r));
  auto until = deadline_after(host->options().timeout_s);
  ncclResult_t st = ncclInProgress;
  while (true) {
    ncclCommGetAsyncError(comm, &st);
    if (st != ncclInProgress) break;
    if (Clock::now() >= until) {
      ncclCommAbort(comm);
      return deadline_exceeded(
          "{}: NCCL init did not complete within {} s (comm.timeout_s); "
          "some of the ranks {} never joined",
          host->where(op), host->options().timeout_s, fmt::join(host->world_ranks(), " "));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (st != ncclSuccess) {
    ncclCommAbort(comm);
    return unavailable("{}: NCCL init failed: {}", host->where(op), ncclGetErrorString(st));
  }
  bool own = false;
  if (stream == nullptr) {
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
      ncclCommAbort(comm);
      return unavailable("{}: cannot create a CUDA stream", host->where(op));
    }
    own = true;
  }
  return std::make_unique<NcclComm>(std::move(host), comm, device, stream, own);
}

Status NcclComm::settle(ncclResult_t r, const char* op, const char* call) {
  if (r == ncclSuccess) return Status();
  if (r != ncclInProgress) {
    Status s = unavailable("{}: {}: {} ({})", where(op), call, ncclGetErrorString(r),
                           ncclGetLastError(comm_));
    mark_broken(s);
    return s;
  }
  auto until = deadline_after(options_.timeout_s);
  ncclResult_t st = ncclInProgress;
  while (true) {
    ncclCommGetAsyncError(comm_, &st);
    if (st != ncclInProgress) break;
    if (Clock::now() >= until) return abort_on_deadline(op, options_.timeout_s);
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  if (st != ncclSuccess) {
    Status s = unavailable("{}: {}: {}", where(op), call, ncclGetErrorString(st));
    mark_broken(s);
    return s;
  }
  return Status();
}

Status NcclComm::abort_on_deadline(const char* op, double waited_s) {
  std::vector<int> peers;
  for (int p = 0; p < size_; ++p)
    if (p != rank_) peers.push_back(p);
  if (!aborted_) {
    ncclCommAbort(comm_);
    aborted_ = true;
  }
  Status s = deadline_exceeded(
      "{}: timed out after {:.1f} s (comm.timeout_s = {}); NCCL does not say which peers are "
      "missing, waiting on {}; the communicator was aborted",
      where(op), waited_s, options_.timeout_s, describe_peers(*this, peers));
  mark_broken(s);
  return s;
}

Result<Work> NcclComm::finish_enqueue(const char* op) {
  cudaEvent_t ev;
  if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess ||
      cudaEventRecord(ev, stream_) != cudaSuccess) {
    (void)cudaGetLastError();
    return unavailable("{}: cannot record a CUDA event", where(op));
  }
  return Work(std::make_unique<NcclWork>(this, op, ev), options_.timeout_s);
}

#define SW_NCCL(op, call) SW_RETURN_IF_ERROR(settle((call), op, #call))

Result<Work> NcclComm::all_reduce_async(const void* send, void* recv, int64_t count, DType dtype) {
  const char* op = "all_reduce";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
  SW_NCCL(op, ncclAllReduce(send, recv, count, t, ncclSum, comm_, stream_));
  return finish_enqueue(op);
}

Result<Work> NcclComm::all_gather_async(const void* send, void* recv, int64_t count, DType dtype) {
  const char* op = "all_gather";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
  SW_NCCL(op, ncclAllGather(send, recv, count, t, comm_, stream_));
  return finish_enqueue(op);
}

Result<Work> NcclComm::reduce_scatter_async(const void* send, void* recv, int64_t count,
                                            DType dtype) {
  const char* op = "reduce_scatter";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
  SW_NCCL(op, ncclReduceScatter(send, recv, count, t, ncclSum, comm_, stream_));
  return finish_enqueue(op);
}

Result<Work> NcclComm::all_to_all_v_async(const void* send, std::span<const int64_t> sc,
                                          std::span<const int64_t> sd, void* recv,
                                          std::span<const int64_t> rc, std::span<const int64_t> rd,
                                          DType dtype) {
  const char* op = "all_to_all_v";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_RETURN_IF_ERROR(check_counts(op, sc, sd, "send"));
  SW_RETURN_IF_ERROR(check_counts(op, rc, rd, "recv"));
  SW_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
  const size_t es = dtype_size(dtype);
  const char* s = static_cast<const char*>(send);
  char* r = static_cast<char*>(recv);
  SW_NCCL(op, ncclGroupStart());
  for (int p = 0; p < size_; ++p) {
    // Grouped, so the order of sends and receives cannot deadlock.
    ncclResult_t a = ncclSend(s + sd[p] * es, sc[p], t, p, comm_, stream_);
    ncclResult_t b = ncclRecv(r + rd[p] * es, rc[p], t, p, comm_, stream_);
    if ((a != ncclSuccess && a != ncclInProgress) || (b != ncclSuccess && b != ncclInProgress)) {
      (void)ncclGroupEnd();
      return settle(a != ncclSuccess ? a : b, op, "ncclSend/ncclRecv");
    }
    if (p != rank_) {
      stats_.messages_sent += 1;
      stats_.bytes_sent += sc[p] * es;
    }
  }
  SW_NCCL(op, ncclGroupEnd());
  return finish_enqueue(op);
}

Result<Work> NcclComm::group_send_recv_async(std::span<const PeerSend> sends,
                                             std::span<const PeerRecv> recvs, DType dtype) {
  const char* op = "group_send_recv";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
  for (const auto& x : sends) SW_RETURN_IF_ERROR(check_peer(op, x.peer));
  for (const auto& x : recvs) SW_RETURN_IF_ERROR(check_peer(op, x.peer));
  SW_NCCL(op, ncclGroupStart());
  for (const auto& x : sends) {
    ncclResult_t a = ncclSend(x.data, x.count, t, x.peer, comm_, stream_);
    if (a != ncclSuccess && a != ncclInProgress) {
      (void)ncclGroupEnd();
      return settle(a, op, "ncclSend");
    }
    stats_.messages_sent += 1;
    stats_.bytes_sent += x.count * dtype_size(dtype);
  }
  for (const auto& x : recvs) {
    ncclResult_t b = ncclRecv(x.data, x.count, t, x.peer, comm_, stream_);
    if (b != ncclSuccess && b != ncclInProgress) {
      (void)ncclGroupEnd();
      return settle(b, op, "ncclRecv");
    }
  }
  SW_NCCL(op, ncclGroupEnd());
  return finish_enqueue(op);
}

Result<Work> NcclComm::send_async(const void* data, int64_t count, DType dtype, int peer, int tag) {
  const char* op = "send";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_RETURN_IF_ERROR(check_peer(op, peer));
  if (tag < 0) return invalid_argument("{}: negative tag {}", where(op), tag);
  SW_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
  SW_NCCL(op, ncclSend(data, count, t, peer, comm_, stream_));
  stats_.messages_sent += 1;
  stats_.bytes_sent += count * dtype_size(dtype);
  return finish_enqueue(op);
}

Result<Work> NcclComm::recv_async(void* data, int64_t count, DType dtype, int peer, int tag) {
  const char* op = "recv";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_RETURN_IF_ERROR(check_peer(op, peer));
  if (tag < 0) return invalid_argument("{}: negative tag {}", where(op), tag);
  SW_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
  SW_NCCL(op, ncclRecv(data, count, t, peer, comm_, stream_));
  return finish_enqueue(op);
}

Result<Work> NcclComm::broadcast_async(void* buf, int64_t count, DType dtype, int root) {
  const char* op = "broadcast";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_RETURN_IF_ERROR(check_peer(op, root));
  SW_ASSIGN_OR_RETURN(ncclDataType_t t, nccl_type(dtype));
  SW_NCCL(op, ncclBroadcast(buf, buf, count, t, root, comm_, stream_));
  return finish_enqueue(op);
}

Result<Work> NcclComm::barrier_async() {
  const char* op = "barrier";
  SW_RETURN_IF_ERROR(check_usable(op));
  if (!scratch_) return unavailable("{}: no device scratch buffer", where(op));
  SW_NCCL(op, ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_));
  return finish_enqueue(op);
}

Result<std::unique_ptr<Communicator>> NcclComm::split(int color, int key) {
  const char* op = "split";
  SW_RETURN_IF_ERROR(check_usable(op));
  SW_ASSIGN_OR_RETURN(auto host_child, host_->split(color, key));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t child = nullptr;
  ncclResult_t r =
      ncclCommSplit(comm_, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, &config);
  if (r != ncclSuccess && r != ncclInProgress) return settle(r, op, "ncclCommSplit");
  if (color < 0 || !host_child || child == nullptr) return std::unique_ptr<Communicator>();
  // Non-blocking: the child is ready once its own async state leaves ncclInProgress.
  auto until = deadline_after(options_.timeout_s);
  ncclResult_t st = ncclInProgress;
  while (ncclCommGetAsyncError(child, &st) == ncclSuccess && st == ncclInProgress) {
    if (Clock::now() >= until) {
      ncclCommAbort(child);
      return abort_on_deadline(op, options_.timeout_s);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  if (st != ncclSuccess) {
    ncclCommAbort(child);
    return unavailable("{}: ncclCommSplit: {}", where(op), ncclGetErrorString(st));
  }
  return std::unique_ptr<Communicator>(
      std::make_unique<NcclComm>(std::move(host_child), child, device_, stream_, false));
}

}  // namespace sw::comm

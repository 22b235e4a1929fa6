// NcclComm: device-buffer transport on NCCL, one GPU per rank, ops enqueued on one CUDA
// stream. Bootstrapped over a host communicator (the unique id is broadcast on it; split
// metadata too). The NCCL communicator is non-blocking (config.blocking = 0) so every wait
// polls ncclCommGetAsyncError against the deadline and aborts the communicator on expiry.
// Children of split() share the parent's stream: destroy them first.
// Only built when SHARDWISE_COMM_HAVE_NCCL is 1.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include "comm/communicator.h"

namespace sw::comm {

class NcclComm final : public Communicator {
 public:
  // host: a host communicator of the same ranks (e.g. MpiComm world); device: CUDA device;
  // stream: the stream ops run on (nullptr: the communicator creates its own).
  static Result<std::unique_ptr<NcclComm>> create(std::unique_ptr<Communicator> host, int device,
                                                  cudaStream_t stream);
  ~NcclComm() override;
  const char* transport() const override { return "nccl"; }
  cudaStream_t stream() const { return stream_; }

  Result<Work> all_reduce_async(const void* send, void* recv, int64_t count, DType dtype) override;
  Result<Work> all_gather_async(const void* send, void* recv, int64_t count, DType dtype) override;
  Result<Work> reduce_scatter_async(const void* send, void* recv, int64_t count,
                                    DType dtype) override;
  Result<Work> all_to_all_v_async(const void* send, std::span<const int64_t> send_counts,
                                  std::span<const int64_t> send_displs, void* recv,
                                  std::span<const int64_t> recv_counts,
                                  std::span<const int64_t> recv_displs, DType dtype) override;
  Result<Work> group_send_recv_async(std::span<const PeerSend> sends,
                                     std::span<const PeerRecv> recvs, DType dtype) override;
  // NCCL has no tags: messages to one peer match in issue order; the tag is only checked.
  Result<Work> send_async(const void* data, int64_t count, DType dtype, int peer, int tag) override;
  Result<Work> recv_async(void* data, int64_t count, DType dtype, int peer, int tag) override;
  Result<Work> broadcast_async(void* buf, int64_t count, DType dtype, int root) override;
  Result<Work> barrier_async() override;
  Result<std::unique_ptr<Communicator>> split(int color, int key) override;

  // Used by the completion handle.
  Status abort_on_deadline(const char* op, double waited_s);
  ncclComm_t handle() const { return comm_; }
  void fail(const Status& s) { mark_broken(s); }

  NcclComm(std::unique_ptr<Communicator> host, ncclComm_t comm, int device, cudaStream_t stream,
           bool own_stream);

 private:
  // Waits for a non-blocking NCCL call to leave ncclInProgress (bounded by timeout_s).
  Status settle(ncclResult_t r, const char* op, const char* call);
  Result<Work> finish_enqueue(const char* op);

  std::unique_ptr<Communicator> host_;
  ncclComm_t comm_ = nullptr;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  bool own_stream_ = false;
  void* scratch_ = nullptr;  // one float for barrier()
  bool aborted_ = false;
};

}  // namespace sw::comm

// Backend selection policy.
#include "comm/backend_policy.h"

namespace sw::comm {

Result<BackendChoice> choose_backend(CommBackend requested, const BackendFacts& f) {
  std::string why_not_nccl;
  if (!f.nccl_compiled)
    why_not_nccl = "this build has no CUDA/NCCL";
  else if (f.num_gpus <= 0)
    why_not_nccl = "no GPU is visible";
  else if (f.max_ranks_per_gpu > 1)
    why_not_nccl =
        fmt::format("{} ranks share one GPU and NCCL refuses duplicate GPUs", f.max_ranks_per_gpu);
  else if (!f.device_buffers)
    why_not_nccl = "the buffers live in host memory";
  const bool stage = f.device_buffers;
  switch (requested) {
    case CommBackend::kNccl:
      if (!why_not_nccl.empty())
        return invalid_argument("cluster.comm_backend: nccl requested but {}", why_not_nccl);
      return BackendChoice{CommBackend::kNccl, false, "requested"};
    case CommBackend::kMpi: return BackendChoice{CommBackend::kMpi, stage, "requested"};
    case CommBackend::kAuto:
      if (why_not_nccl.empty())
        return BackendChoice{CommBackend::kNccl, false, "auto: one GPU per rank"};
      return BackendChoice{CommBackend::kMpi, stage, "auto: " + why_not_nccl};
  }
  return internal_error("choose_backend: unknown backend");
}

}  // namespace sw::comm

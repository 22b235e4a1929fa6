// Which transport a rank uses (comm.backend = auto|mpi|nccl): a pure function of facts about
// the build and the machine, so it is unit-tested without either. Extend: add a fact, then
// a rule in choose_backend() and a case in tests/unit/test_comm_policy.cpp.
#pragma once

#include <string>

#include "comm/options.h"

namespace sw::comm {

struct BackendFacts {
  bool nccl_compiled = false;   // built with CUDA and NCCL
  int num_gpus = 0;             // CUDA devices this rank sees
  int max_ranks_per_gpu = 1;    // ranks of the group that would share one GPU
  bool device_buffers = false;  // the data lives in GPU memory
};

struct BackendChoice {
  CommBackend backend;              // kMpi or kNccl, never kAuto
  bool stage_through_host = false;  // MPI with device buffers: copy via pinned host memory
  std::string reason;
};

// auto: NCCL when compiled, a GPU is present and every rank has its own GPU; otherwise MPI
// (staging device buffers through pinned host memory). nccl when that is impossible is an
// error that says why.
Result<BackendChoice> choose_backend(CommBackend requested, const BackendFacts& facts);

}  // namespace sw::comm

// Start-up shared by every rank of a cluster job (`mpirun -np N shardwise generate --config
// F`): rank 0 reads the cluster file and broadcasts it, every rank parses it and builds the
// same plan (checking the world size), then the stage and tp communicators are split off the
// world, the data-plane transport is agreed, and the ranks exchange the public halves of their
// CURVE keys over MPI (the channel the job already trusts) for the control channel and the KV
// transports. The worker side: a rank's runner over its
// shard, and the loop that executes the coordinator's step commands. MPI_Init/MPI_Finalize
// belong to coordinator/cluster_job.
#pragma once

#include <memory>
#include <string>

#include "comm/backend_policy.h"
#include "comm/communicator.h"
#include "comm/curve.h"
#include "comm/host_address.h"
#include "common/status.h"
#include "model/model_config.h"
#include "parallel/cluster_config.h"
#include "parallel/plan.h"
#include "worker/model_runner.h"
#include "worker/step_thread.h"

namespace sw::worker {

// The job's CURVE keys as this rank knows them: its own key pairs (secret halves never leave the
// process) and every rank's public keys, by world rank.
struct JobKeys {
  comm::CurveKeyPair control;  // coordinator: the control channel's server pair; worker: client
  comm::CurveKeyPair kv;       // workers: their KV transport's pair (empty on the coordinator)
  std::vector<std::string> control_public;  // [world rank]
  std::vector<std::string> kv_public;       // [world rank] ("" for the coordinator)
};

struct ClusterRuntime {
  parallel::ClusterConfig cluster;
  model::ModelConfig model;
  parallel::Plan plan;
  std::unique_ptr<comm::Communicator> world;
  std::unique_ptr<comm::Communicator>
      stage_group;                               // workers only: the S = tp * dp ranks of its stage
  std::unique_ptr<comm::Communicator> tp_group;  // workers only: its tp group
  comm::BackendChoice transport;  // of the tp and stage groups (cluster.comm_backend)
  int device_ordinal = 0;         // the GPU this rank uses (runtime.device: cuda)
  comm::JobHosts hosts;           // real hosts and (emulated) nodes of the job
  JobKeys keys;
  int rank() const { return world->rank(); }
  const parallel::RankPlan& rank_plan() const { return plan.rank(rank()); }
};

// `*rank_specific` (optional) is set when the error may have happened on this rank alone
// (after the config and plan, which every rank checks alike): the caller must report it
// from this rank and stop the job, since the others may wait for it.
Result<ClusterRuntime> start_cluster(const std::string& config_path, bool* rank_specific = nullptr);

// Loads a worker's shard and builds its runner; `num_kv_blocks` is the same for every rank
// of the instance (the coordinator decides it).
struct WorkerEngine {
  std::unique_ptr<kernels::Backend> backend;
  std::unique_ptr<parallel::ForwardParallelism> forward;
  std::unique_ptr<ModelRunner> runner;
  std::unique_ptr<StepThread> steps;  // the runner's steps; declared last, so stopped first
};
Result<WorkerEngine> build_worker_engine(ClusterRuntime& rt, int64_t num_kv_blocks);

// Runs a worker until the coordinator says shutdown: connects to `endpoint` (CURVE, with the
// job's keys), executes step commands for its dp group on the engine's step thread, and (last
// stage, tp rank 0) replies with tokens and logits. It returns an error when the coordinator
// is lost (silent for heartbeat_interval_s x heartbeat_miss_count) or aborts the job. On an
// error a step may still be running (stuck in a collective): the caller must end the process
// (MPI_Abort) without destroying `engine`.
Status run_worker(ClusterRuntime& rt, WorkerEngine& engine, const std::string& endpoint);

}  // namespace sw::worker

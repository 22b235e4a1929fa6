// A cluster job's process lifecycle, in one place for every subcommand that runs under
// `mpirun -np N shardwise <cmd> --config F` (or srun): MPI start, the shared start-up
// (worker/cluster_runtime), the coordinator's inputs and KV sizes broadcast to the workers, the
// workers' step loop, the coordinator's Engine with one RemoteExecutor per instance, and the
// end: workers told to exit, MPI finalised — or the job aborted when a rank may be stuck
// waiting for another. Errors are printed once, by the rank that saw them.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/engine.h"
#include "parallel/cluster_config.h"
#include "parallel/plan.h"
#include "worker/cluster_runtime.h"

namespace sw::coordinator {

struct ClusterJobOptions {
  // Runs on rank 0 after the plan is made and before the workers size their KV caches. An
  // error ends the job cleanly on every rank; a positive result caps every instance's KV
  // blocks per dp group (e.g. at what a fixed list of prompts can use); 0: no cap.
  std::function<Result<int64_t>(const worker::ClusterRuntime&)> prepare;
  bool collect_moe_metrics = false;
  // Workers ignore SIGINT and SIGTERM (a Slurm scancel or a terminal's ^C reaches every rank):
  // the coordinator drains and then tells them to exit; a coordinator that died is noticed by
  // its missing heartbeats.
  bool workers_ignore_signals = false;
};

using ClusterDriver = std::function<Status(Engine&, const worker::ClusterRuntime&)>;

// Runs this rank's part of the job and returns the process exit code. Rank 0 calls `drive`
// with the engine once every worker is up.
int run_cluster_job(const std::string& config_path, const ClusterJobOptions& options,
                    const ClusterDriver& drive);

// KV blocks per dp group of every instance (instances in rank order): runtime.num_kv_blocks
// when set (an error when a rank's memory plan cannot hold that many), else the smallest plan
// estimate over the instance's ranks; at most `cap` (> 0).
Result<std::vector<int64_t>> instance_kv_blocks(const parallel::Plan& plan,
                                                const parallel::RuntimeSection& runtime,
                                                int64_t cap);

// Scheduler limits and policy from the cluster file (max_model_len as the plan resolved it).
Result<EngineOptions> engine_options(const parallel::ClusterConfig& cluster,
                                     const parallel::Plan& plan);

}  // namespace sw::coordinator

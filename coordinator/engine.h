// Engine: the stepwise serving core that generate, serve and bench all drive. add() queues a
// request on the instance the router picks, abort() ends one in any state, and each step()
// collects the steps that finished, schedules every idle instance and submits its next step
// without waiting for it — so every instance computes at once while the caller keeps adding
// requests (continuous batching across arrivals). A lost instance's requests move to the
// others (recomputed) or fail with the reason; the engine keeps serving.
//
//   Engine engine(model, options);
//   engine.add_instance(spec, std::make_unique<LocalExecutor>(runner));
//   auto id = engine.add(request);
//   while (engine.has_unfinished()) for (auto& out : *engine.step()) ...;
#pragma once

#include <memory>
#include <vector>

#include "common/status.h"
#include "coordinator/executor.h"
#include "coordinator/request.h"
#include "coordinator/scheduler.h"

namespace sw::coordinator {

struct EngineOptions {
  SchedulerOptions scheduler;
  bool collect_moe_metrics = false;  // per-layer MoE counts in stats() (costs a sync per layer)
};

struct EngineStats {
  int64_t num_steps = 0;  // over every instance
  std::vector<int64_t> steps_per_instance;
  std::vector<moe::MoeLayerMetrics> moe_layers;  // summed over steps, when collected
  Clock::time_point started;                     // the engine was made
};

class Engine {
 public:
  Engine(model::ModelConfig model, EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Adds an instance served by `executor` (its role, dp groups and KV pool in `spec`).
  int add_instance(const InstanceSpec& spec, std::unique_ptr<Executor> executor);

  // Queues a request; the error says why it can never run (bad tokens, too long for
  // max_model_len or any KV pool, bad sampling parameters) and nothing is kept.
  Result<int64_t> add(RequestSpec spec);
  // Ends a request in any state and frees its KV blocks.
  Status abort(int64_t id);

  // One iteration: commit finished steps, schedule and submit every idle instance. When no
  // step finished, waits up to `max_wait_s` for one (0: never blocks) and commits it. Returns
  // what requests produced, in commit order. An error here is a bug, not a lost instance.
  // Call it at least once per heartbeat interval, idle or not: remote executors send their
  // workers' heartbeats (and notice lost workers) from here.
  Result<std::vector<RequestOutput>> step(double max_wait_s = 0.05);
  bool has_unfinished() const { return scheduler_.has_unfinished(); }
  bool busy() const;  // a step is in flight somewhere

  const Request* request(int64_t id) const { return scheduler_.request(id); }
  void release(int64_t id) { scheduler_.release(id); }
  const Scheduler& scheduler() const { return scheduler_; }
  const EngineStats& stats() const { return stats_; }
  // OK while every instance is healthy; otherwise the first lost instance's error.
  const Status& health() const { return health_; }

  // Waits for the steps in flight (each bounded by its executor's deadline), then ends every
  // instance. Requests still unfinished are aborted.
  Status shutdown();

 private:
  struct Slot {
    std::unique_ptr<Executor> executor;
    std::optional<ScheduledStep> in_flight;
  };
  Status collect(std::vector<RequestOutput>& outputs, bool* any);
  // Disaggregation: executors' transfer reports in, the scheduler's decisions out.
  void advance_transfers(std::vector<RequestOutput>& outputs, bool* any);
  void carry_kv_actions(std::vector<RequestOutput>& outputs);
  void lose_instance(int instance, const Status& why, std::vector<RequestOutput>& outputs);

  Scheduler scheduler_;
  EngineOptions options_;
  std::vector<Slot> slots_;
  EngineStats stats_;
  Status health_;
  bool shut_down_ = false;
};

}  // namespace sw::coordinator

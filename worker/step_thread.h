// StepThread: runs a ModelRunner's steps on a thread of its own, one at a time, so the thread
// that submits them stays free — the engine loop keeps scheduling (LocalExecutor), a worker
// keeps answering heartbeats during a long step (run_worker). The runner's backend is bound
// to that thread; nothing else may use the runner while a step is in flight.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "worker/model_runner.h"

namespace sw::worker {

class StepThread {
 public:
  explicit StepThread(ModelRunner& runner);
  ~StepThread();  // waits for the step in flight
  StepThread(const StepThread&) = delete;
  StepThread& operator=(const StepThread&) = delete;

  // Starts `meta`; an error if a step is already in flight.
  Status submit(StepMetadata meta, bool collect_moe_metrics);
  // The finished step's result (then idle again); nullopt while it runs or when idle.
  std::optional<Result<StepResult>> poll();
  // Blocks until a result is ready or `max_s` passed.
  void wait(double max_s);
  bool busy() const;

 private:
  void run();
  ModelRunner& runner_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<std::pair<StepMetadata, bool>> job_;  // submitted, not yet taken
  std::optional<Result<StepResult>> result_;          // done, not yet polled
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sw::worker

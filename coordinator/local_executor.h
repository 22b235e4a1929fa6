// LocalExecutor: an instance that is a ModelRunner in this process (`generate --model`,
// single-process serve). Steps run on the runner's StepThread, so the engine loop keeps
// accepting and scheduling while the model computes. One dp group (no parallelism inside a
// process).
#pragma once

#include "coordinator/executor.h"
#include "worker/model_runner.h"
#include "worker/step_thread.h"

namespace sw::coordinator {

class LocalExecutor final : public Executor {
 public:
  // `runner` must outlive the executor.
  explicit LocalExecutor(worker::ModelRunner& runner) : thread_(runner) {}

  std::string describe() const override { return "local instance"; }
  Status submit(const worker::StepCommand& command) override;
  Result<std::optional<StepOutput>> poll() override;
  void wait(double max_s) override { thread_.wait(max_s); }
  bool busy() const override { return thread_.busy(); }
  Status shutdown() override;

 private:
  worker::StepThread thread_;
};

}  // namespace sw::coordinator

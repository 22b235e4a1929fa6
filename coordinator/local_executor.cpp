// A local instance's steps through the runner's step thread.
#include "coordinator/local_executor.h"

namespace sw::coordinator {

Status LocalExecutor::submit(const worker::StepCommand& command) {
  if (command.groups.size() != 1)
    return invalid_argument("local instance: a step for {} dp groups, expected 1",
                            command.groups.size());
  return thread_.submit(command.groups[0], command.collect_moe_metrics);
}

Result<std::optional<StepOutput>> LocalExecutor::poll() {
  auto done = thread_.poll();
  if (!done) return std::optional<StepOutput>();
  if (!done->ok()) return done->status().with_context("local instance");
  StepOutput out;
  worker::StepResult r = std::move(*done).value();
  out.moe_metrics = std::move(r.moe_metrics);
  out.groups.push_back(std::move(r));
  return std::optional<StepOutput>(std::move(out));
}

Status LocalExecutor::shutdown() {
  if (thread_.busy()) return internal_error("local instance: shutdown with a step in flight");
  return Status();
}

}  // namespace sw::coordinator

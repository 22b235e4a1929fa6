// Executor: carries one instance's steps to wherever its model runs, without blocking the
// engine loop: submit() starts a step, poll() hands back its output once it is done. The
// Engine keeps one step in flight per instance and every instance's step in flight at once.
// Implementations: LocalExecutor (a ModelRunner in this process), RemoteExecutor (an
// instance's worker ranks over the control channel), SimulatedExecutor (a modelled step time
// and a fake model, for scheduler tests without a model). Add one: implement this interface
// and make it reachable from the code that builds engines.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "moe/expert_ffn.h"
#include "worker/step_metadata.h"
#include "worker/step_protocol.h"

namespace sw::coordinator {

struct StepOutput {
  // Per dp group, the runner's result for that group's metadata (sequences in order).
  std::vector<worker::StepResult> groups;
  // Per MoE layer over the whole instance (every stage, every dp group) when collected.
  std::vector<moe::MoeLayerMetrics> moe_metrics;
};

// A decode instance's account of one KV transfer.
struct KvTransferEvent {
  uint64_t transfer = 0;
  Status status;  // OK: every destination rank has all its parts in its cache
  int64_t bytes = 0;
  int64_t first_part_us = 0;  // wall clock (system_clock) microseconds
  int64_t done_us = 0;
};

class Executor {
 public:
  virtual ~Executor() = default;
  // For messages: "instance 1 (mixed, ranks 3-4)".
  virtual std::string describe() const = 0;
  // Starts one step (one StepMetadata per dp group). At most one step is in flight.
  virtual Status submit(const worker::StepCommand& command) = 0;
  // The in-flight step's output once it is complete; nullopt while it runs or when idle. An
  // error means the instance can run no more steps (its workers failed, vanished or timed
  // out); the message names which.
  virtual Result<std::optional<StepOutput>> poll() = 0;
  // Blocks until poll() may have news or `max_s` passed, whichever is first.
  virtual void wait(double max_s) = 0;
  virtual bool busy() const = 0;
  // Ends the instance (its workers exit). No step may be in flight.
  virtual Status shutdown() = 0;

  // Disaggregation: only executors of prefill and decode instances implement these.
  // Decode side: receive the transfer into the order's blocks (poll_kv reports it).
  virtual Status expect_kv(const worker::KvRecvOrder& order);
  // Prefill side: send a finished prefill's KV now (not within a step).
  virtual Status send_kv(const worker::KvSendOrder& order);
  // Either side: drop the transfer; parts that still arrive are discarded.
  virtual Status cancel_kv(uint64_t transfer);
  // Decode side: transfers completed or failed since the last call.
  virtual std::vector<KvTransferEvent> poll_kv() { return {}; }
  // Decode side: which ranks have not reported `transfer` yet, for error messages.
  virtual std::string kv_missing(uint64_t transfer) const {
    (void)transfer;
    return "";
  }
};

// Checks that an output answers a command: one result per dp group, a token (or -1) per
// sequence, logits rows inside the logits. The error names the instance.
Status check_step_output(const worker::StepCommand& command, const StepOutput& out,
                         const std::string& who, int64_t vocab_size);

}  // namespace sw::coordinator

// Step messages between the coordinator and workers over the control channel: a StepCommand
// (one StepMetadata per dp group of an instance) and a StepReply (what the last pipeline
// stage's tp-rank-0 of one dp group computed). Compact payloads (comm::PayloadWriter);
// decoding checks every length. Add a field: write it and read it in the same order, and
// bump comm::kControlProtocolVersion if old peers would misread it.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model_runner.h"

namespace sw::worker {

struct StepCommand {
  std::vector<StepMetadata> groups;  // index = dp group
  bool collect_moe_metrics = false;
};

struct StepReply {
  int dp_group = 0;
  int stage = 0;                 // pipeline stage of the sender (only the last stage sends tokens)
  std::vector<int32_t> sampled;  // per sequence of that group's metadata
  std::vector<int64_t> logits_row;  // per sequence, -1 when not kept
  Tensor logits;                    // host float32 [rows, V] or undefined
  std::vector<moe::MoeLayerMetrics> moe_metrics;
};

std::string encode_step_command(const StepCommand& c);
Result<StepCommand> decode_step_command(const std::string& payload);
std::string encode_step_reply(const StepReply& r);
Result<StepReply> decode_step_reply(const std::string& payload);

}  // namespace sw::worker

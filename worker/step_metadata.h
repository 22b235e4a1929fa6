// What one model step is told and what it returns, as plain data: the coordinator's scheduler
// decides every sequence's tokens and KV blocks (StepMetadata, one per dp group); the runner
// executes it and never allocates blocks (StepResult). Shipped between ranks by
// worker/step_protocol.h.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor.h"
#include "kernels/backend.h"
#include "moe/expert_ffn.h"

namespace sw::worker {

// Copy-on-write: block `src` is copied to `dst` (every layer, K and V) before the step runs.
struct BlockCopy {
  int32_t src = 0;
  int32_t dst = 0;
  bool operator==(const BlockCopy&) const = default;
};

// One sequence of a step with its KV placement decided.
struct StepSequence {
  int64_t seq_id = 0;
  std::vector<int32_t> tokens;       // new tokens, appended after the cached ones
  int64_t start_pos = 0;             // tokens already cached before this step
  std::vector<int32_t> block_table;  // covers start_pos + tokens.size() tokens
  bool sample = true;                // sample a token from the last new position's logits
  kernels::SamplingRow sampling;
  bool keep_logits = false;  // return float32 logits for every new token's position
};

struct StepMetadata {
  std::vector<StepSequence> seqs;
  std::vector<BlockCopy> copies;  // copy-on-write block copies to do first
};

struct StepResult {
  std::vector<int32_t> sampled;  // per sequence: the sampled token, or -1 when !sample
  // Host float32 [rows, V] for sequences with keep_logits, in sequence order; logits_row[i]
  // is the first row of sequence i (or -1).
  Tensor logits;
  std::vector<int64_t> logits_row;
  std::vector<moe::MoeLayerMetrics> moe_metrics;  // per MoE layer, when collect_moe_metrics
};

}  // namespace sw::worker

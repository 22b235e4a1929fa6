// Generator: the single-instance generation loop. Continuous batching — every step carries
// the decode token of each running sequence plus prefill chunks of waiting prompts within
// max_num_batched_tokens; sequences join and leave every step. When the KV cache runs out
// during decode, the newest sequence is preempted and later recomputed (vLLM's policy).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "worker/model_runner.h"

namespace sw::worker {

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;
  int max_new_tokens = 16;
  kernels::SamplingRow sampling;  // offset is set per step (= tokens generated so far)
  bool ignore_eos = false;
  bool return_logits = false;  // logits at every prompt position and decode step
};

struct GenerationResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> output_ids;
  std::string finish_reason;  // "length" | "stop" | "error"
  std::string error;          // why the request was rejected (finish_reason "error")
  double ttft_ms = 0;         // from generate() start to the first token
  double total_ms = 0;        // from generate() start to the last token
  int num_preemptions = 0;
  Tensor logits;  // float32 [prompt + generated - 1, V] when return_logits
};

struct SchedulerOptions {
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;
};

struct GenerationStats {
  int64_t num_steps = 0;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t num_preemptions = 0;
  double wall_ms = 0;
  std::vector<moe::MoeLayerMetrics> moe_layers;  // summed over steps (collect_moe_metrics)
};

class Generator {
 public:
  Generator(StepExecutor& executor, SchedulerOptions options);
  // Runs every request to completion. A request that can never run (empty prompt, token
  // outside the vocabulary, longer than the context or the KV cache) gets finish_reason
  // "error" and a message naming it; the others run as usual.
  Result<std::vector<GenerationResult>> generate(const std::vector<GenerationRequest>& requests);
  const GenerationStats& stats() const { return stats_; }

 private:
  StepExecutor& runner_;
  SchedulerOptions options_;
  GenerationStats stats_;
};

}  // namespace sw::worker

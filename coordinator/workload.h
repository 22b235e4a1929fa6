// Request files: the requests of a `shardwise bench` run — vLLM's random dataset (uniform
// lengths around a mean, an optional shared prefix) or a JSONL trace of token ids, one request
// per line — and the lines of `shardwise generate --prompts F.jsonl`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/request.h"

namespace sw::coordinator {

struct WorkloadOptions {
  std::string dataset = "random";  // random | jsonl
  std::string dataset_path;        // jsonl: one {"prompt_ids": [...], "output_len": n} per line
  int64_t num_prompts = 1000;      // jsonl: fewer lines are cycled through
  int64_t random_input_len = 1024;
  int64_t random_output_len = 128;
  double random_range_ratio = 0.0;  // lengths uniform in [len * (1 - r), len * (1 + r)]
  int64_t random_prefix_len = 0;    // the same random tokens before every prompt
  uint64_t seed = 0;
};

struct WorkloadItem {
  std::vector<int32_t> prompt_ids;
  int64_t output_len = 0;  // max_tokens of the request
};

// One line of a `generate --prompts` file: {"prompt_ids": [...], "max_new_tokens": n,
// "temperature": t, "top_k": k, "top_p": p, "seed": s}, every key but prompt_ids optional
// (defaults from `base`), no other key; ids >= 0 (the vocabulary is checked by the engine, and
// sampling values by validate_request_spec). `where` ("file:line") starts every error.
Result<RequestSpec> parse_prompt_line(const std::string& line, const std::string& where,
                                      const RequestSpec& base);

// One line of a --dataset-name jsonl file, {"prompt_ids": [...], "output_len": n}: token ids
// in [0, vocab), output_len in [1, limits::kMaxPositionEmbeddings], no other key; `where`
// ("file:line") starts every error.
Result<WorkloadItem> parse_workload_line(const std::string& line, const std::string& where,
                                         int64_t vocab);

// Prompts of token ids in [0, vocab_size); the error names the flag, file or line.
Result<std::vector<WorkloadItem>> make_workload(const WorkloadOptions& o, int64_t vocab_size);

}  // namespace sw::coordinator

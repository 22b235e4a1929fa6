// Workloads of `shardwise bench` (see workload.h).
#include "coordinator/workload.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/json_fields.h"
#include "common/limits.h"

namespace sw::coordinator {

namespace {

// Uniform integer in [len * (1 - r), len * (1 + r)], at least 1.
int64_t draw_len(std::mt19937_64& rng, int64_t len, double r) {
  const int64_t lo = std::max<int64_t>(1, static_cast<int64_t>(std::floor(len * (1.0 - r))));
  const int64_t hi = std::max<int64_t>(lo, static_cast<int64_t>(std::ceil(len * (1.0 + r))));
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

Result<std::vector<WorkloadItem>> random_workload(const WorkloadOptions& o, int64_t vocab) {
  if (o.random_input_len < 1 || o.random_output_len < 1 || o.random_prefix_len < 0)
    return invalid_argument(
        "--random-input-len ({}) and --random-output-len ({}) must be >= 1, "
        "--random-prefix-len ({}) >= 0",
        o.random_input_len, o.random_output_len, o.random_prefix_len);
  if (!(o.random_range_ratio >= 0 && o.random_range_ratio < 1))
    return invalid_argument("--random-range-ratio must be in [0, 1), got {}", o.random_range_ratio);
  const int64_t longest =
      o.random_prefix_len +
      static_cast<int64_t>(std::ceil(o.random_input_len * (1.0 + o.random_range_ratio)));
  if (longest > limits::kMaxPositionEmbeddings)
    return invalid_argument(
        "--random-input-len and --random-prefix-len: prompts of up to {} "
        "tokens exceed {}",
        longest, limits::kMaxPositionEmbeddings);
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> prefix(static_cast<size_t>(o.random_prefix_len));
  for (auto& t : prefix) t = token(rng);
  std::vector<WorkloadItem> items(static_cast<size_t>(o.num_prompts));
  for (auto& item : items) {
    const int64_t in = draw_len(rng, o.random_input_len, o.random_range_ratio);
    item.output_len = draw_len(rng, o.random_output_len, o.random_range_ratio);
    item.prompt_ids = prefix;
    for (int64_t i = 0; i < in; ++i) item.prompt_ids.push_back(token(rng));
  }
  return items;
}

Result<std::vector<WorkloadItem>> jsonl_workload(const WorkloadOptions& o, int64_t vocab) {
  if (o.dataset_path.empty())
    return invalid_argument("--dataset-name jsonl needs --dataset-path FILE.jsonl");
  std::ifstream in(o.dataset_path);
  if (!in) return not_found("--dataset-path: cannot open '{}'", o.dataset_path);
  std::vector<WorkloadItem> lines;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    SW_ASSIGN_OR_RETURN(
        WorkloadItem w,
        parse_workload_line(line, fmt::format("{}:{}", o.dataset_path, lineno), vocab));
    lines.push_back(std::move(w));
  }
  if (lines.empty())
    return invalid_argument("--dataset-path: '{}' holds no requests", o.dataset_path);
  if (static_cast<int64_t>(lines.size()) < o.num_prompts)
    spdlog::info("bench: {} has {} request(s); cycling through them for --num-prompts {}",
                 o.dataset_path, lines.size(), o.num_prompts);
  std::vector<WorkloadItem> items;
  items.reserve(static_cast<size_t>(o.num_prompts));
  for (int64_t i = 0; i < o.num_prompts; ++i)
    items.push_back(lines[static_cast<size_t>(i) % lines.size()]);
  return items;
}

}  // namespace

Result<RequestSpec> parse_prompt_line(const std::string& line, const std::string& where,
                                      const RequestSpec& base) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return invalid_argument("{}: expected one JSON object per line", where);
  JsonFields f(j, where);
  SW_RETURN_IF_ERROR(
      f.only_keys({"prompt_ids", "max_new_tokens", "temperature", "top_k", "top_p", "seed"}));
  RequestSpec r = base;
  SW_ASSIGN_OR_RETURN(std::vector<int> ids, f.required<std::vector<int>>("prompt_ids"));
  if (ids.empty()) return invalid_argument("{}: key 'prompt_ids': empty prompt", where);
  for (int id : ids)
    if (id < 0) return invalid_argument("{}: key 'prompt_ids': negative token id {}", where, id);
  r.prompt_ids.assign(ids.begin(), ids.end());
  SW_ASSIGN_OR_RETURN(r.max_new_tokens, f.optional<int64_t>("max_new_tokens", r.max_new_tokens));
  SW_ASSIGN_OR_RETURN(r.sampling.temperature,
                      f.optional<float>("temperature", r.sampling.temperature));
  SW_ASSIGN_OR_RETURN(r.sampling.top_k, f.optional<int32_t>("top_k", r.sampling.top_k));
  SW_ASSIGN_OR_RETURN(r.sampling.top_p, f.optional<float>("top_p", r.sampling.top_p));
  SW_ASSIGN_OR_RETURN(r.sampling.seed, f.optional<uint64_t>("seed", r.sampling.seed));
  return r;  // sampling values are checked per request by the engine, which rejects it alone
}

Result<WorkloadItem> parse_workload_line(const std::string& line, const std::string& where,
                                         int64_t vocab) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return invalid_argument("{}: expected one JSON object per line", where);
  JsonFields f(j, where);
  SW_RETURN_IF_ERROR(f.only_keys({"prompt_ids", "output_len"}));
  SW_ASSIGN_OR_RETURN(std::vector<int> ids, f.required<std::vector<int>>("prompt_ids"));
  if (ids.empty()) return invalid_argument("{}: key 'prompt_ids': empty prompt", where);
  WorkloadItem w;
  for (int id : ids) {
    if (id < 0 || id >= vocab)
      return invalid_argument("{}: key 'prompt_ids': token id {} is outside the vocabulary [0, {})",
                              where, id, vocab);
    w.prompt_ids.push_back(id);
  }
  SW_ASSIGN_OR_RETURN(w.output_len,
                      f.required_in<int64_t>("output_len", 1, limits::kMaxPositionEmbeddings));
  return w;
}

Result<std::vector<WorkloadItem>> make_workload(const WorkloadOptions& o, int64_t vocab_size) {
  if (vocab_size < 1) return invalid_argument("bench: the model has no vocabulary");
  if (o.num_prompts < 1 || o.num_prompts > 100'000'000)
    return invalid_argument("--num-prompts must be in [1, 100000000], got {}", o.num_prompts);
  if (o.dataset == "random") return random_workload(o, vocab_size);
  if (o.dataset == "jsonl") return jsonl_workload(o, vocab_size);
  return invalid_argument("--dataset-name '{}': expected random or jsonl", o.dataset);
}

}  // namespace sw::coordinator

// libFuzzer harness: the prompt files' lines — `generate --prompts F.jsonl` and
// `bench --dataset-name jsonl` (coordinator/workload.cpp) — and the `--prompt-ids 1,2,3` list,
// on arbitrary text. The first byte picks the vocabulary of the bench line (1..256). Accepted
// input must hold what the callers rely on: a non-empty prompt of ids in range, lengths >= 1, and
// for a generate line either a spec the engine accepts or an error from its validation.
#include <algorithm>
#include <cstdint>
#include <string>

#include "cli/prompts.h"
#include "common/limits.h"
#include "coordinator/request.h"
#include "coordinator/workload.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int64_t vocab = int64_t{data[0]} + 1;
  const std::string line(reinterpret_cast<const char*>(data + 1), size - 1);

  const sw::coordinator::RequestSpec base;
  auto spec = sw::coordinator::parse_prompt_line(line, "fuzz.jsonl:1", base);
  if (spec.ok()) {
    FUZZ_CHECK(!spec->prompt_ids.empty());
    for (int32_t id : spec->prompt_ids) FUZZ_CHECK(id >= 0);
    auto valid = sw::coordinator::validate_request_spec(*spec);
    if (valid.ok()) {
      FUZZ_CHECK(spec->max_new_tokens >= 1);
      FUZZ_CHECK(spec->sampling.top_p > 0 && spec->sampling.top_p <= 1);
      FUZZ_CHECK(spec->sampling.temperature >= 0 && spec->sampling.top_k >= 0);
    }
  } else {
    FUZZ_CHECK(spec.status().message().rfind("fuzz.jsonl:1", 0) == 0);
  }

  auto item = sw::coordinator::parse_workload_line(line, "trace.jsonl:7", vocab);
  if (item.ok()) {
    FUZZ_CHECK(!item->prompt_ids.empty());
    for (int32_t id : item->prompt_ids) FUZZ_CHECK(id >= 0 && id < vocab);
    FUZZ_CHECK(item->output_len >= 1 && item->output_len <= sw::limits::kMaxPositionEmbeddings);
  } else {
    FUZZ_CHECK(item.status().message().rfind("trace.jsonl:7", 0) == 0);
  }

  auto ids = sw::cli::parse_token_list(line, "--prompt-ids");
  if (ids.ok()) {
    FUZZ_CHECK(!ids->empty());
    for (int32_t id : *ids) FUZZ_CHECK(id >= 0);
    // One id per comma-separated field: no field dropped.
    FUZZ_CHECK(ids->size() == static_cast<size_t>(std::count(line.begin(), line.end(), ',')) + 1);
  }
  return 0;
}

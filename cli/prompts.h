// Prompt files of `shardwise generate --prompts F.jsonl`: one JSON object per line,
//   {"prompt_ids": [1, 2, 3], "max_new_tokens": 8, "temperature": 0.7, "top_k": 50,
//    "top_p": 0.9, "seed": 1}
// with every key but prompt_ids optional (defaults from the command line). Unknown keys and
// values out of range are errors naming the file, line and key.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/request.h"
#include "coordinator/workload.h"

namespace sw::cli {

// Every non-blank line of `path`.
Result<std::vector<coordinator::RequestSpec>> read_prompts_file(
    const std::string& path, const coordinator::RequestSpec& base);
// "1,2,3" (the --prompt-ids flag).
Result<std::vector<int32_t>> parse_token_list(const std::string& text, const std::string& what);

}  // namespace sw::cli

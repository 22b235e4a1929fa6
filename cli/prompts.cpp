// Prompt JSONL files (lines parsed by coordinator/workload) and --prompt-ids lists.
#include "cli/prompts.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace sw::cli {

Result<std::vector<coordinator::RequestSpec>> read_prompts_file(
    const std::string& path, const coordinator::RequestSpec& base) {
  std::ifstream in(path);
  if (!in) return not_found("--prompts: cannot open '{}'", path);
  std::vector<coordinator::RequestSpec> out;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    SW_ASSIGN_OR_RETURN(
        auto r, coordinator::parse_prompt_line(line, fmt::format("{}:{}", path, lineno), base));
    out.push_back(std::move(r));
  }
  if (out.empty()) return invalid_argument("--prompts: '{}' holds no prompts", path);
  return out;
}

Result<std::vector<int32_t>> parse_token_list(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  // getline drops an empty last field: "1,2," would pass as "1,2".
  const size_t last = text.find_last_not_of(" \t");
  if (last != std::string::npos && text[last] == ',')
    return invalid_argument("{}: empty token id in '{}'", what, text);
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a == std::string::npos) return invalid_argument("{}: empty token id in '{}'", what, text);
    item = item.substr(a, b - a + 1);
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || errno != 0 || v < 0 || v > INT32_MAX)
      return invalid_argument("{}: '{}' is not a token id (0 to {})", what, item, INT32_MAX);
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return invalid_argument("{}: no token ids", what);
  return ids;
}

}  // namespace sw::cli

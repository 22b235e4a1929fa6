// Prompt JSONL files (lines parsed by coordinator/workload) and --prompt-ids lists.
#include "cli/prompts.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>

#include "common/text.h"

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
  const std::vector<std::string> fields = split_fields(text, ',');
  if (fields.size() == 1 && fields[0].empty()) return invalid_argument("{}: no token ids", what);
  for (const std::string& item : fields) {
    if (item.empty()) return invalid_argument("{}: empty token id in '{}'", what, text);
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || errno != 0 || v < 0 || v > INT32_MAX)
      return invalid_argument("{}: '{}' is not a token id (0 to {})", what, item, INT32_MAX);
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

}  // namespace sw::cli

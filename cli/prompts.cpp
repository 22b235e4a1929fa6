// Prompt JSONL lines and --prompt-ids lists into request specs.
#include "cli/prompts.h"

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/json_fields.h"

namespace sw::cli {

Result<coordinator::RequestSpec> parse_prompt_line(const std::string& line,
                                                   const std::string& where,
                                                   const coordinator::RequestSpec& base) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return invalid_argument("{}: expected one JSON object per line", where);
  static const char* kKeys[] = {"prompt_ids", "max_new_tokens", "temperature",
                                "top_k",      "top_p",          "seed"};
  for (const auto& item : j.items()) {
    bool known = false;
    for (const char* k : kKeys) known = known || item.key() == k;
    if (!known)
      return invalid_argument(
          "{}: unknown key '{}' (expected prompt_ids, max_new_tokens, temperature, top_k, "
          "top_p, seed)",
          where, item.key());
  }
  JsonFields f(j, where);
  coordinator::RequestSpec r = base;
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

Result<std::vector<coordinator::RequestSpec>> read_prompts_file(
    const std::string& path, const coordinator::RequestSpec& base) {
  std::ifstream in(path);
  if (!in) return not_found("--prompts: cannot open '{}'", path);
  std::vector<coordinator::RequestSpec> out;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    SW_ASSIGN_OR_RETURN(auto r, parse_prompt_line(line, fmt::format("{}:{}", path, lineno), base));
    out.push_back(std::move(r));
  }
  if (out.empty()) return invalid_argument("--prompts: '{}' holds no prompts", path);
  return out;
}

Result<std::vector<int32_t>> parse_token_list(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
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

// Oniguruma behind tokenizer::Regex (see regex.h). Each thread searches with its own
// OnigRegion; the compiled regex_t is shared read-only.
#include "tokenizer/regex.h"

#include <oniguruma.h>

#include <mutex>

#include "tokenizer/unicode.h"

namespace sw::tokenizer {
namespace {

void init_onig() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

// One OnigRegion per thread, freed when the thread ends.
struct ThreadRegion {
  OnigRegion* region = onig_region_new();
  ~ThreadRegion() { onig_region_free(region, 1); }
};

OnigRegion* thread_region() {
  thread_local ThreadRegion r;
  return r.region;
}

}  // namespace

Regex::~Regex() { onig_free(static_cast<regex_t*>(reg_)); }

Result<std::shared_ptr<const Regex>> Regex::compile(std::string_view pattern) {
  init_onig();
  if (!unicode::is_valid_utf8(pattern)) {
    return invalid_argument("regex pattern is not valid UTF-8");
  }
  regex_t* reg = nullptr;
  OnigErrorInfo einfo;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int r = onig_new(&reg, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                         ONIG_SYNTAX_ONIGURUMA, &einfo);
  if (r != ONIG_NORMAL) {
    OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(msg, r, &einfo);
    return invalid_argument("invalid regex '{}': {}", pattern, reinterpret_cast<char*>(msg));
  }
  return std::shared_ptr<const Regex>(new Regex(reg));
}

std::string Regex::escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '\\':
      case '.':
      case '+':
      case '*':
      case '?':
      case '(':
      case ')':
      case '|':
      case '[':
      case ']':
      case '{':
      case '}':
      case '^':
      case '$':
      case '#':
      case '&':
      case '-':
      case '~': out.push_back('\\'); break;
      default: break;
    }
    out.push_back(c);
  }
  return out;
}

void Regex::find_all(std::string_view text, std::vector<Span>& out) const {
  auto* reg = static_cast<regex_t*>(reg_);
  OnigRegion* region = thread_region();
  const auto* begin = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = begin + text.size();
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    const int r = onig_search(reg, begin, end, begin + last_end, end, region, ONIG_OPTION_NONE);
    if (r < 0) return;  // ONIG_MISMATCH (or a search error: the onig crate stops too)
    const auto s = static_cast<size_t>(region->beg[0]);
    const auto e = static_cast<size_t>(region->end[0]);
    if (s == e && have_last && last_match_end == e) {
      last_end += last_end < text.size()
                      ? unicode::utf8_len(static_cast<unsigned char>(text[last_end]))
                      : 1;
      continue;
    }
    last_end = e;
    have_last = true;
    last_match_end = e;
    out.emplace_back(s, e);
  }
}

void Regex::find_matches(std::string_view text, std::vector<std::pair<Span, bool>>& out) const {
  if (text.empty()) {
    out.push_back({{0, 0}, false});
    return;
  }
  thread_local std::vector<Span> matches;
  matches.clear();
  find_all(text, matches);
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) out.push_back({{prev, s}, false});
    out.push_back({{s, e}, true});
    prev = e;
  }
  if (prev != text.size()) out.push_back({{prev, text.size()}, false});
}

}  // namespace sw::tokenizer

// Regex: an Oniguruma pattern compiled as `tokenizers` compiles it (utils/onig.rs through the
// onig crate: UTF-8, ONIG_OPTION_NONE, the default Oniguruma syntax) and searched the way the
// onig crate's find_iter does. Immutable after compile; searches are thread-safe.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace sw::tokenizer {

// A byte range [first, second) of a searched text.
using Span = std::pair<size_t, size_t>;

class Regex {
 public:
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // `pattern`: UTF-8; an invalid pattern is an invalid_argument naming it.
  static Result<std::shared_ptr<const Regex>> compile(std::string_view pattern);
  // Rust's regex::escape: `text` as a pattern that matches it literally.
  static std::string escape(std::string_view text);

  // Appends every match of `text` (well-formed UTF-8) to `out`, as onig's find_iter: left to
  // right, no empty match right after the previous match.
  void find_all(std::string_view text, std::vector<Span>& out) const;
  // tokenizers' Pattern::find_matches: the whole text cut into (span, is_match) pieces.
  void find_matches(std::string_view text, std::vector<std::pair<Span, bool>>& out) const;

 private:
  explicit Regex(void* reg) : reg_(reg) {}
  void* reg_;  // regex_t*
};

}  // namespace sw::tokenizer

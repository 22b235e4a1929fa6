// UTF-8 and Unicode helpers for tokenizer/: lossy UTF-8 repair (CPython's errors="replace"),
// code point iteration, Rust's char predicates and utf8proc normalization. Add a predicate here
// when a component needs one that Rust's `char` has.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sw::tokenizer::unicode {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// `bytes` with each maximal ill-formed subpart replaced by U+FFFD (Unicode's "substitution of
// maximal subparts", as CPython's bytes.decode("utf-8", "replace") and Rust's
// String::from_utf8_lossy do).
std::string repair_utf8(std::string_view bytes);
// Appends the repaired `bytes` to `out`.
void append_repaired_utf8(std::string_view bytes, std::string& out);
// True when `bytes` is well-formed UTF-8.
bool is_valid_utf8(std::string_view bytes);

// Length in bytes of the UTF-8 sequence that starts with lead byte `b` (1 for a stray byte).
inline size_t utf8_len(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}
// Decodes the code point at s[i] (s well-formed) and advances i past it.
char32_t next_cp(std::string_view s, size_t& i);
void append_utf8(char32_t cp, std::string& out);
size_t count_chars(std::string_view s);

// Rust's char::is_whitespace (the White_Space property).
bool is_whitespace(char32_t c);
// Rust's char::is_numeric (general categories Nd, Nl, No).
bool is_numeric(char32_t c);
// tokenizers' is_punc: ASCII punctuation or a Unicode P* category as of Unicode 9.0.
bool is_punctuation(char32_t c);
// Rust regex's \w (alphabetic, marks, decimal digits, connector punctuation, joiners).
bool is_word_char(char32_t c);
// unicode_normalization's is_combining_mark (Mn, Mc, Me).
bool is_combining_mark(char32_t c);

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };
// `s` (well-formed UTF-8) in normal form `form`, via utf8proc.
std::string normalize(std::string_view s, NormalForm form);
// Rust's str chars().flat_map(char::to_lowercase).
std::string to_lower(std::string_view s);

}  // namespace sw::tokenizer::unicode

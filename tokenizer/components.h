// The components of a tokenizer.json pipeline, one small class per HF `tokenizers` "type":
// normalizers, pre-tokenizers, post-processors and decoders (the BPE model is in bpe.h). Add a
// type: a class in the matching .cpp and a branch in its make_* factory.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "tokenizer/regex.h"

namespace sw::tokenizer {

// A piece of (normalized) text on its way to the model.
struct Piece {
  std::string text;
  // It starts at offset 0 of the original input (Metaspace's prepend_scheme "first").
  bool at_start = false;
};

// SplitDelimiterBehavior.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// NormalizedString::split: cuts `in` by `matches` (Pattern::find_matches output) as
// `behavior` says; appends the non-empty parts to `out`.
void split_piece(const Piece& in, const std::vector<std::pair<Span, bool>>& matches,
                 SplitBehavior behavior, std::vector<Piece>& out);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces every piece by its splits (empty splits are dropped, as PreTokenizedString does).
  virtual void pre_tokenize(std::vector<Piece>& pieces) const;

 protected:
  // One piece's splits, appended to `out` (empty ones may be appended; callers drop them).
  virtual void split(const Piece& in, std::vector<Piece>& out) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // ids of one sequence with the special tokens added (only called with add_special_tokens).
  virtual void process(std::vector<int32_t>& ids) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Decoder::decode_chain: tokens in, tokens out (the caller joins them).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Factories from tokenizer.json's objects; a JSON null gives nullptr. Errors name the type.
// They may throw nlohmann::json::exception on a malformed field (from_json turns it into a
// Status).
Result<std::unique_ptr<Normalizer>> make_normalizer(const nlohmann::json& j);
Result<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const nlohmann::json& j);
Result<std::unique_ptr<PostProcessor>> make_post_processor(const nlohmann::json& j);
Result<std::unique_ptr<Decoder>> make_decoder(const nlohmann::json& j);

// A Replace/Split "pattern" object ({"String": s} matched literally, or {"Regex": r}).
Result<std::shared_ptr<const Regex>> compile_pattern(const nlohmann::json& pattern,
                                                     const char* where);

// GPT-2's byte ↔ printable-char table (pre_tokenizers/byte_level.rs bytes_char).
const std::string& byte_to_char_utf8(uint8_t b);  // the char of byte b, UTF-8 encoded
// The byte a char stands for, or -1 if `cp` is not one of the 256 chars.
int char_to_byte(char32_t cp);

}  // namespace sw::tokenizer

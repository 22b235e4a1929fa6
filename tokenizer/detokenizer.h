// Incremental detokenization for streaming, as vLLM does it: per request, two offsets into the
// ids produced so far (prefix, read); each new token decodes the window [prefix, end) and
// emits only the text past the decode of [prefix, read) once it does not end in an incomplete
// UTF-8 sequence (U+FFFD). So a stream never splits a character and the concatenation of
// everything emitted equals decode(all ids).
//
// StopStringMatcher holds back the tail that could still be the start of a stop string, finds
// a stop string across token boundaries, and cuts it (OpenAI: the stop string is not returned).
//
//   IncrementalDetokenizer d(tok, prompt_ids, /*skip_special_tokens=*/true);
//   for (int32_t t : new_ids) text += d.push(t);
//   text += d.flush();
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace sw::tokenizer {

class IncrementalDetokenizer {
 public:
  // `prompt_ids`: the context the first output token is decoded after (a few trailing tokens
  // suffice; a Metaspace/SentencePiece decoder strips a leading space only at the start).
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids,
                         bool skip_special_tokens);
  // The text that token `id` makes final ("" while it ends mid-character).
  std::string push(int32_t id);
  // At the end of the request: whatever is still held back (possibly with U+FFFD).
  std::string flush();
  // Every output id pushed so far.
  const std::vector<int32_t>& output_ids() const;

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;  // context + outputs
  size_t num_context_ = 0;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
  std::vector<int32_t> outputs_;
};

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stop);
  // Appends `text`; returns what may be sent now. Once a stop string is found, stopped() is
  // true, the text before it is returned and the rest (and everything later) is dropped.
  std::string push(std::string_view text);
  // At the end: what was held back (when no stop string matched).
  std::string flush();
  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }  // the stop string found

 private:
  std::vector<std::string> stop_;
  size_t max_len_ = 0;
  std::string pending_;
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace sw::tokenizer

// Tokenizer: a Hugging Face tokenizer.json (+ the model folder's tokenizer_config.json,
// generation_config.json and special_tokens_map.json) loaded into the same pipeline the
// `tokenizers` library runs — added tokens → normalizer → pre-tokenizer → model (BPE) →
// post-processor, and decoders back — and byte-for-byte equal to it. Each component is one
// small class chosen by its "type" (tokenizer/components.h); add a type there.
//
// Thread-safe: encode/decode are const and may run on many front-end threads at once. The
// engine thread never tokenizes.
//
//   SW_ASSIGN_OR_RETURN(auto tok, Tokenizer::from_folder("models/llama"));
//   auto ids = tok->encode("Hello", /*add_special_tokens=*/true);
//   std::string text = tok->decode(ids, /*skip_special_tokens=*/true);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sw::tokenizer {

// What the model folder says around tokenizer.json (tokenizer_config.json,
// special_tokens_map.json, generation_config.json).
struct TokenizerInfo {
  std::string bos_token;  // "" when none
  std::string eos_token;
  std::string pad_token;
  std::string unk_token;
  // generation_config.json's eos_token_id (int or list), else the eos token's id.
  std::vector<int32_t> eos_token_ids;
  // tokenizer_config.json's chat_template: a string, or the named list's "default" (the names
  // and texts of a list are all kept in chat_templates).
  std::string chat_template;
  std::vector<std::pair<std::string, std::string>> chat_templates;
  int64_t model_max_length = 0;  // 0 when absent or the "infinite" sentinel
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // tokenizer.json text; `source` names it in errors.
  static Result<std::unique_ptr<Tokenizer>> from_json(std::string_view json,
                                                      const std::string& source = "tokenizer.json");
  static Result<std::unique_ptr<Tokenizer>> from_file(const std::string& path);
  // A model folder: tokenizer.json required, the other three files optional.
  static Result<std::unique_ptr<Tokenizer>> from_folder(const std::string& dir);

  // Token ids of `text` (any bytes: invalid UTF-8 is handled as `tokenizers` does after
  // Python's lossy decode, i.e. each bad byte becomes U+FFFD). add_special_tokens runs the
  // post-processor (e.g. a BOS for Llama), as HF's encode(text, add_special_tokens=...).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  // HF's decode(ids, skip_special_tokens=...): ids out of range are skipped.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;

  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  // Largest id + 1 over the model vocabulary and the added tokens.
  virtual int64_t vocab_size() const = 0;
  virtual bool is_special(int32_t id) const = 0;  // an added token with special: true

  virtual const TokenizerInfo& info() const = 0;
  virtual TokenizerInfo& mutable_info() = 0;  // from_folder fills it
};

}  // namespace sw::tokenizer

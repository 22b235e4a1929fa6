// Fuzzes tokenizer/: the first byte picks a mode — arbitrary bytes encoded, decoded back and
// streamed with a small byte-level and a SentencePiece tokenizer (0, 1), arbitrary ids decoded
// and streamed, with stop strings (2), arbitrary bytes as tokenizer.json (3: a Status, never a
// crash). Add an invariant as a FUZZ_CHECK in the mode it concerns.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

using nlohmann::json;
using sw::tokenizer::Tokenizer;

// GPT-2's byte -> char table, so that the byte-level vocab below covers every byte.
std::string byte_char(int b) {
  const bool direct = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  int cp = b;
  if (!direct) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  sw::tokenizer::unicode::append_utf8(static_cast<char32_t>(cp), s);
  return s;
}

json special(int id, const char* content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

const Tokenizer& byte_level() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
    json merges = json::array();
    int id = 256;
    for (const char* m : {"Ġ t", "h e", "Ġt he", "i n", "e r", "Ġ a", "o n", "Ġ 1", "1 2"}) {
      const std::string s = m;
      const size_t sp = s.find(' ');
      vocab[s.substr(0, sp) + s.substr(sp + 1)] = id++;
      merges.push_back(s);
    }
    const std::string llama3 =
        R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    json j = {
        {"added_tokens", {special(id, "<|end|>"), special(id + 1, "<|start|>")}},
        {"normalizer", {{"type", "NFC"}}},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", llama3}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
        {"post_processor",
         {{"type", "TemplateProcessing"},
          {"single", "<|start|> $A"},
          {"special_tokens",
           {{"<|start|>", {{"id", "<|start|>"}, {"ids", {id + 1}}, {"tokens", {"<|start|>"}}}}}}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model",
         {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"ignore_merges", true}}}};
    auto r = Tokenizer::from_json(j.dump());
    FUZZ_CHECK(r.ok());
    return std::move(r).value();
  }();
  return *tok;
}

const Tokenizer& sentencepiece() {
  static const std::unique_ptr<Tokenizer> tok = [] {
    json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
    for (int b = 0; b < 256; ++b) {
      char code[8];
      std::snprintf(code, sizeof code, "<0x%02X>", b);
      vocab[code] = 3 + b;
    }
    int id = 259;
    for (const char* t : {"▁", "a", "b", "c", "e", "h", "t", "▁t", "he", "▁the", "ab", "é"}) {
      vocab[t] = id++;
    }
    json j = {{"added_tokens", {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")}},
              {"normalizer",
               {{"type", "Sequence"},
                {"normalizers",
                 {{{"type", "Prepend"}, {"prepend", "▁"}},
                  {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
              {"pre_tokenizer", nullptr},
              {"post_processor",
               {{"type", "TemplateProcessing"},
                {"single", "<s> $A"},
                {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
              {"decoder",
               {{"type", "Sequence"},
                {"decoders",
                 {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                  {{"type", "ByteFallback"}},
                  {{"type", "Fuse"}},
                  {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
              {"model",
               {{"type", "BPE"},
                {"unk_token", "<unk>"},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"vocab", vocab},
                {"merges", {"▁ t", "h e", "▁t he", "a b"}}}}};
    auto r = Tokenizer::from_json(j.dump());
    FUZZ_CHECK(r.ok());
    return std::move(r).value();
  }();
  return *tok;
}

std::string stream(const Tokenizer& tok, const std::vector<int32_t>& prompt,
                   const std::vector<int32_t>& ids, bool skip) {
  sw::tokenizer::IncrementalDetokenizer d(tok, prompt, skip);
  std::string out;
  for (int32_t id : ids) out += d.push(id);
  return out + d.flush();
}

bool has_replacement(const std::string& s) { return s.find("\xEF\xBF\xBD") != std::string::npos; }

void text_mode(const Tokenizer& tok, bool byte_level_vocab, const std::string& text) {
  const auto ids = tok.encode(text, true);
  const auto plain = tok.encode(text, false);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size());
  FUZZ_CHECK(ids.size() == plain.size() + 1);
  const std::string decoded = tok.decode(plain, false);
  if (byte_level_vocab) {
    // Byte-level BPE without a prefix space is lossless up to the UTF-8 repair (and NFC).
    const std::string repaired = sw::tokenizer::unicode::repair_utf8(text);
    bool ascii = true;
    for (unsigned char c : repaired) ascii = ascii && c < 0x80;
    if (ascii) FUZZ_CHECK(decoded == repaired);
    FUZZ_CHECK(stream(tok, {}, ids, true) == tok.decode(ids, true));
    FUZZ_CHECK(stream(tok, {}, ids, false) == tok.decode(ids, false));
  } else if (!has_replacement(tok.decode(ids, false))) {
    // ByteFallback decodes a bad byte run as one U+FFFD per byte, which a stream cannot know
    // in advance; elsewhere the stream equals the decode.
    FUZZ_CHECK(stream(tok, {}, ids, false) == tok.decode(ids, false));
  }
}

void ids_mode(const uint8_t* data, size_t size) {
  const Tokenizer& tok = (size > 0 && (data[0] & 1)) ? sentencepiece() : byte_level();
  const bool bl = &tok == &byte_level();
  std::vector<int32_t> ids;
  // At most 512 ids: a stream of bad bytes re-decodes a growing window (vLLM's method).
  for (size_t i = 1; i + 1 < size && ids.size() < 512; i += 2) {
    ids.push_back(static_cast<int32_t>((data[i] | (data[i + 1] << 8)) % (tok.vocab_size() + 8)) -
                  4);  // a few out of range too
  }
  const std::string full = tok.decode(ids, true);
  (void)tok.decode(ids, false);
  std::vector<int32_t> in_range;
  for (int32_t id : ids) {
    if (id >= 0 && id < tok.vocab_size()) in_range.push_back(id);
  }
  FUZZ_CHECK(tok.decode(in_range, true) == full);
  const std::string streamed = stream(tok, {}, in_range, true);
  if (bl || !has_replacement(full)) FUZZ_CHECK(streamed == full);
  (void)stream(tok, {1, 2, 3}, in_range, false);
  // Stop strings over the streamed text, cut into the chunks the detokenizer made.
  sw::tokenizer::StopStringMatcher m({"the", "\n\n", "é!", ""});
  std::string sent;
  sw::tokenizer::IncrementalDetokenizer d(tok, {}, true);
  for (int32_t id : in_range) sent += m.push(d.push(id));
  sent += m.push(d.flush());
  sent += m.flush();
  if (!bl && has_replacement(full)) return;  // the stream may differ from the decode there
  if (m.stopped()) {
    const size_t p = full.find(m.matched());
    FUZZ_CHECK(p != std::string::npos);
    FUZZ_CHECK(sent.size() <= p && full.compare(0, sent.size(), sent) == 0);
  } else {
    FUZZ_CHECK(sent == full);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0] & 3;
  const std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (mode) {
    case 0: text_mode(byte_level(), true, rest); break;
    case 1: text_mode(sentencepiece(), false, rest); break;
    case 2: ids_mode(data + 1, size - 1); break;
    default: {
      auto r = Tokenizer::from_json(rest, "fuzz.json");
      if (r.ok()) {
        const auto ids = (*r)->encode("Hello wörld <s> 12345\xFF", true);
        (void)(*r)->decode(ids, true);
        (void)(*r)->decode(ids, false);
      } else {
        FUZZ_CHECK(!r.status().message().empty());
      }
      break;
    }
  }
  return 0;
}

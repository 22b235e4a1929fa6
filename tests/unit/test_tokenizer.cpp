// Unit tests of tokenizer/: each component on small hand-made tokenizer.json objects (expected
// ids worked out with HF `tokenizers` 0.23 on the same JSON), UTF-8 repair, from_folder, the
// incremental detokenizer and the stop-string matcher. Add a case next to its component's.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tokenizer/components.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace sw::tokenizer {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

// A GPT-2-style byte-level BPE: ids 0..255 are the bytes, then the merges' results:
// he 256, ll 257, hell 258, hello 259, Ġw 260, or 261, Ġwor 262, ld 263, Ġworld 264, and the
// special token <|end|> 265.
json byte_level_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_to_char_utf8(static_cast<uint8_t>(b))] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"},   {"he", "ll"}, {"hell", "o"}, {"Ġ", "w"},
      {"o", "r"}, {"Ġw", "or"}, {"l", "d"},   {"Ġwor", "ld"}};
  json mj = json::array();
  int id = 256;
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    mj.push_back({a, b});  // the [a, b] form
  }
  return {
      {"added_tokens",
       {{{"id", 265},
         {"content", "<|end|>"},
         {"single_word", false},
         {"lstrip", false},
         {"rstrip", false},
         {"normalized", false},
         {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}, {"trim_offsets", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", mj}}}};
}

// A SentencePiece-converted BPE (Llama 2 style): <unk> 0, <s> 1, </s> 2, <0x00>..<0xFF> 3..258,
// ▁ 259, h 260, e 261, l 262, o 263, w 264, r 265, d 266, ▁h 267, ll 268, ▁he 269, llo 270,
// ▁hello 271, ▁w 272, or 273, ▁wor 274, ▁world 275, ld 276; byte_fallback, fuse_unk.
// `metaspace`: Mistral's Metaspace(prepend_scheme first) pre-tokenizer instead of the
// Prepend + Replace normalizers.
json sentencepiece_json(bool metaspace) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char code[8];
    std::snprintf(code, sizeof code, "<0x%02X>", b);
    vocab[code] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "ll", "▁he", "llo", "▁hello",
                        "▁w", "or", "▁wor", "▁world", "ld"}) {
    vocab[t] = id++;
  }
  const json merges = {"l d",     "▁ h", "l l", "▁h e",  "ll o",
                       "▁he llo", "▁ w", "o r", "▁w or", "▁wor ld"};
  json added = json::array();
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", i},
                     {"content", i == 0   ? "<unk>"
                                 : i == 1 ? "<s>"
                                          : "</s>"},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  json j = {{"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer", nullptr},
            {"post_processor",
             {{"type", "TemplateProcessing"},
              {"single",
               {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
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
              {"merges", merges}}}};
  if (metaspace) {
    j["pre_tokenizer"] = {
        {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
  } else {
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Prepend"}, {"prepend", "▁"}},
                         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
  }
  return j;
}

std::unique_ptr<Tokenizer> load(const json& j) {
  auto r = Tokenizer::from_json(j.dump());
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : nullptr;
}

// The pieces a pre-tokenizer makes of `text`.
std::vector<std::string> pre_tokenize(const json& j, const std::string& text) {
  auto p = make_pre_tokenizer(j);
  EXPECT_TRUE(p.ok()) << p.status().to_string();
  std::vector<Piece> pieces = {{text, true}};
  (*p)->pre_tokenize(pieces);
  std::vector<std::string> out;
  for (const auto& piece : pieces) out.push_back(piece.text);
  return out;
}

std::string normalize(const json& j, std::string text) {
  auto n = make_normalizer(j);
  EXPECT_TRUE(n.ok()) << n.status().to_string();
  (*n)->normalize(text);
  return text;
}

std::vector<std::string> decode_chain(const json& j, std::vector<std::string> tokens) {
  auto d = make_decoder(j);
  EXPECT_TRUE(d.ok()) << d.status().to_string();
  (*d)->decode_chain(tokens);
  return tokens;
}

// ---- UTF-8 ----

TEST(TokenizerUnicode, RepairReplacesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(unicode::repair_utf8("abc"), "abc");
  EXPECT_EQ(unicode::repair_utf8("\xFF"), r);
  EXPECT_EQ(unicode::repair_utf8("a\xE2\x82"), "a" + r);       // truncated: one
  EXPECT_EQ(unicode::repair_utf8("\xE2\x82x"), r + "x");       // one for the prefix
  EXPECT_EQ(unicode::repair_utf8("\xED\xA0\x80"), r + r + r);  // surrogate: each byte
  EXPECT_EQ(unicode::repair_utf8("\xC0\xAF"), r + r);          // overlong lead
  EXPECT_EQ(unicode::repair_utf8("\xF4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(unicode::repair_utf8("\xF0\x9F\x98"), r);
  EXPECT_EQ(unicode::repair_utf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

// ---- BPE, byte-level ----

TEST(TokenizerBpe, ByteLevelMergesAndSpecialTokens) {
  auto tok = load(byte_level_json());
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("hello world", true), (Ids{259, 264}));
  EXPECT_EQ(tok->encode("hello<|end|> world", true), (Ids{259, 265, 264}));
  EXPECT_EQ(tok->encode("a   b\n", true), (Ids{97, 32, 32, 32, 98, 10}));  // \s+(?!\S)
  EXPECT_EQ(tok->encode("", true), Ids{});
  EXPECT_EQ(tok->decode(Ids{259, 265, 264}, false), "hello<|end|> world");
  EXPECT_EQ(tok->decode(Ids{259, 265, 264}, true), "hello world");
  EXPECT_EQ(tok->decode(Ids{259, 9999, -1}, true), "hello");  // out of range: skipped
  EXPECT_TRUE(tok->is_special(265));
  EXPECT_FALSE(tok->is_special(259));
  EXPECT_EQ(tok->token_to_id("<|end|>"), 265);
  EXPECT_EQ(tok->id_to_token(264), "Ġworld");
  EXPECT_EQ(tok->vocab_size(), 266);
}

TEST(TokenizerBpe, InvalidUtf8BecomesReplacementChar) {
  auto tok = load(byte_level_json());
  ASSERT_TRUE(tok);
  // U+FFFD is EF BF BD: three byte tokens.
  EXPECT_EQ(tok->encode("\xFF", false), (Ids{0xEF, 0xBF, 0xBD}));
  EXPECT_EQ(tok->decode(Ids{0xE2, 0x82}, false), "\xEF\xBF\xBD");
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWords) {
  json j = byte_level_json();
  j["model"]["vocab"]["Ġwo"] = 266;  // reachable only as a whole word
  j["model"]["ignore_merges"] = true;
  auto tok = load(j);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode(" wo", false), (Ids{266}));
  EXPECT_EQ(tok->encode(" world", false), (Ids{264}));
}

TEST(TokenizerBpe, LegacyAndPairMergeFormsAgree) {
  json j = byte_level_json();
  json legacy = json::array();
  for (const auto& m : j["model"]["merges"]) {
    legacy.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
  }
  j["model"]["merges"] = legacy;
  auto tok = load(j);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("hello world", false), (Ids{259, 264}));
}

TEST(TokenizerBpe, EncodeIsThreadSafe) {
  auto tok = load(byte_level_json());
  ASSERT_TRUE(tok);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (tok->encode("hello world hello<|end|> world", false) !=
            (Ids{259, 264, 32, 259, 265, 264})) {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

// ---- BPE, SentencePiece-converted ----

TEST(TokenizerBpe, SentencePieceByteFallbackAndTemplate) {
  auto tok = load(sentencepiece_json(false));
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("hello world", true), (Ids{1, 271, 275}));
  EXPECT_EQ(tok->encode("hello world", false), (Ids{271, 275}));
  EXPECT_EQ(tok->encode("hello 中", true), (Ids{1, 271, 259, 231, 187, 176}));
  // Prepend applies to every segment between special tokens.
  EXPECT_EQ(tok->encode("<s>hello</s> world", true), (Ids{1, 1, 271, 2, 259, 275}));
  EXPECT_EQ(tok->encode("ab", true), (Ids{1, 259, 100, 101}));
  EXPECT_EQ(tok->decode(Ids{1, 271, 259, 231, 187, 176}, true), "hello 中");
  EXPECT_EQ(tok->decode(Ids{1, 1, 271, 2, 259, 275}, false), "<s><s> hello</s>  world");
  EXPECT_EQ(tok->decode(Ids{1, 1, 271, 2, 259, 275}, true), "hello  world");
  EXPECT_EQ(tok->decode(Ids{231, 187}, false), "\xEF\xBF\xBD\xEF\xBF\xBD");  // one per byte
}

TEST(TokenizerBpe, UnknownCharsFuseIntoOneUnk) {
  json j = sentencepiece_json(false);
  j["model"]["byte_fallback"] = false;
  auto tok = load(j);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("hello ab", false), (Ids{271, 259, 0}));
}

TEST(TokenizerBpe, MetaspacePrependsOnlyAtTheStart) {
  auto tok = load(sentencepiece_json(true));
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("hello world", true), (Ids{1, 271, 275}));
  EXPECT_EQ(tok->encode("<s>hello</s> world", true), (Ids{1, 1, 260, 261, 270, 2, 275}));
  EXPECT_EQ(tok->encode("  hello", true), (Ids{1, 259, 271}));
}

// ---- added tokens ----

TEST(TokenizerAddedTokens, LstripRstripSingleWord) {
  json j = byte_level_json();
  j["added_tokens"].push_back({{"id", 266},
                               {"content", "<m>"},
                               {"single_word", false},
                               {"lstrip", true},
                               {"rstrip", true},
                               {"normalized", false},
                               {"special", true}});
  j["added_tokens"].push_back({{"id", 267},
                               {"content", "wo"},
                               {"single_word", true},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true},
                               {"special", false}});
  auto tok = load(j);
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->encode("hello  <m>  hello", false), (Ids{259, 266, 259}));
  EXPECT_EQ(tok->encode("a wo b", false), (Ids{97, 32, 267, 32, 98}));
  EXPECT_EQ(tok->encode("world", false), (Ids{119, 261, 263}));  // "wo" inside a word: no
  EXPECT_EQ(tok->decode(Ids{259, 266, 267}, true), "hellowo");
}

TEST(TokenizerAddedTokens, NormalizedTokensMatchTheNormalizedText) {
  json j = byte_level_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  j["added_tokens"].push_back({{"id", 266},
                               {"content", "[DAY]"},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true},
                               {"special", false}});
  auto tok = load(j);
  ASSERT_TRUE(tok);
  // "[DAY]" normalizes to "[day]", which is what is matched (and what decodes).
  EXPECT_EQ(tok->encode("[day]", false), (Ids{266}));
  EXPECT_EQ(tok->encode("[DAY]", false), (Ids{266}));
  EXPECT_EQ(tok->decode(Ids{266}, false), "[day]");
}

// ---- pre-tokenizers ----

TEST(TokenizerPreTokenizers, SplitBehaviors) {
  auto split = [](const char* behavior) {
    return pre_tokenize({{"type", "Split"},
                         {"pattern", {{"String", "-"}}},
                         {"behavior", behavior},
                         {"invert", false}},
                        "The-final--countdown");
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Removed"), (V{"The", "final", "countdown"}));
  EXPECT_EQ(split("Isolated"), (V{"The", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithPrevious"), (V{"The-", "final-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithNext"), (V{"The", "-final", "-", "-countdown"}));
  EXPECT_EQ(split("Contiguous"), (V{"The", "-", "final", "--", "countdown"}));
  EXPECT_EQ(pre_tokenize({{"type", "Split"},
                          {"pattern", {{"Regex", "\\s+"}}},
                          {"behavior", "Removed"},
                          {"invert", true}},
                         "How are  you"),
            (V{" ", "  "}));
}

TEST(TokenizerPreTokenizers, OnigurumaRegexSyntax) {
  using V = std::vector<std::string>;
  // Llama 3's pattern: (?i:...) contractions, \p{N}{1,3}, \s+(?!\S).
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  EXPECT_EQ(pre_tokenize({{"type", "Split"},
                          {"pattern", {{"Regex", llama3}}},
                          {"behavior", "Isolated"},
                          {"invert", false}},
                         "I'LL pay 12345   now!\n"),
            (V{"I", "'LL", " pay", " ", "123", "45", "  ", " now", "!\n"}));
}

TEST(TokenizerPreTokenizers, ByteLevelMetaspaceDigitsPunctuationWhitespace) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pre_tokenize({{"type", "ByteLevel"}, {"add_prefix_space", true}}, "hi  there"),
            (V{"Ġhi", "Ġ", "Ġthere"}));
  EXPECT_EQ(pre_tokenize({{"type", "Metaspace"},
                          {"replacement", "▁"},
                          {"prepend_scheme", "always"},
                          {"split", true}},
                         "Hey friend"),
            (V{"▁Hey", "▁friend"}));
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", true}}, "a123"),
            (V{"a", "1", "2", "3"}));
  EXPECT_EQ(pre_tokenize({{"type", "Digits"}, {"individual_digits", false}}, "a123b"),
            (V{"a", "123", "b"}));
  EXPECT_EQ(pre_tokenize({{"type", "Punctuation"}, {"behavior", "Isolated"}}, "Hey,you!"),
            (V{"Hey", ",", "you", "!"}));
  EXPECT_EQ(pre_tokenize({{"type", "Whitespace"}}, "Hey man!! ok"), (V{"Hey", "man", "!!", "ok"}));
  EXPECT_EQ(pre_tokenize({{"type", "WhitespaceSplit"}}, "Hey man!!\tok"),
            (V{"Hey", "man!!", "ok"}));
  EXPECT_EQ(
      pre_tokenize(
          {{"type", "Sequence"},
           {"pretokenizers",
            {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}, {"individual_digits", true}}}}},
          "ab12 c"),
      (V{"ab", "1", "2", "c"}));
}

// ---- normalizers ----

TEST(TokenizerNormalizers, UnicodeFormsLowercaseStripReplace) {
  EXPECT_EQ(normalize({{"type", "NFKC"}}, "ﬁ½"), "fi1⁄2");
  EXPECT_EQ(normalize({{"type", "NFD"}}, "é"), "e\xCC\x81");
  EXPECT_EQ(normalize({{"type", "NFC"}}, "e\xCC\x81"), "é");
  EXPECT_EQ(normalize({{"type", "Lowercase"}}, "HeLLo İ"), "hello i\xCC\x87");
  EXPECT_EQ(normalize({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, "  a  "),
            "a  ");
  EXPECT_EQ(normalize({{"type", "Sequence"},
                       {"normalizers", {{{"type", "NFD"}}, {{"type", "StripAccents"}}}}},
                      "éà"),
            "ea");
  EXPECT_EQ(normalize({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}},
                      "a   b  c"),
            "a b c");
  EXPECT_EQ(normalize({{"type", "Prepend"}, {"prepend", "▁"}}, ""), "");
}

// ---- decoders and post-processors ----

TEST(TokenizerDecoders, Components) {
  using V = std::vector<std::string>;
  EXPECT_EQ(decode_chain({{"type", "ByteFallback"}},
                         {"a", "<0xE4>", "<0xB8>", "<0xAD>", "b", "<0xE4>", "<0x41>"}),
            (V{"a", "中", "b", "\xEF\xBF\xBD", "\xEF\xBF\xBD"}));  // a bad run: one per byte
  EXPECT_EQ(
      decode_chain({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}, {"  a  "}),
      (V{" a "}));
  EXPECT_EQ(
      decode_chain({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}},
                   {"▁Hey", "▁friend"}),
      (V{"Hey", " friend"}));
  EXPECT_EQ(decode_chain({{"type", "Fuse"}}, {"a", "b"}), (V{"ab"}));
}

TEST(TokenizerPostProcessors, TemplateRobertaBertSequence) {
  auto run = [](const json& j, Ids ids) {
    auto p = make_post_processor(j);
    EXPECT_TRUE(p.ok()) << p.status().to_string();
    (*p)->process(ids);
    return ids;
  };
  EXPECT_EQ(run({{"type", "RobertaProcessing"}, {"cls", {"<s>", 0}}, {"sep", {"</s>", 2}}}, {5, 6}),
            (Ids{0, 5, 6, 2}));
  EXPECT_EQ(
      run({{"type", "BertProcessing"}, {"cls", {"[CLS]", 101}}, {"sep", {"[SEP]", 102}}}, {5}),
      (Ids{101, 5, 102}));
  const json tmpl = {{"type", "TemplateProcessing"},
                     {"single", "<bos>:0 $A:0 <eos>:0"},
                     {"special_tokens",
                      {{"<bos>", {{"id", "<bos>"}, {"ids", {7}}, {"tokens", {"<bos>"}}}},
                       {"<eos>", {{"id", "<eos>"}, {"ids", {8, 9}}, {"tokens", {"<e", "os>"}}}}}}};
  EXPECT_EQ(run(tmpl, {5}), (Ids{7, 5, 8, 9}));
  EXPECT_EQ(run({{"type", "Sequence"},
                 {"processors", {{{"type", "ByteLevel"}, {"trim_offsets", false}}, tmpl}}},
                {5}),
            (Ids{7, 5, 8, 9}));
}

// ---- loading ----

TEST(TokenizerLoad, ErrorsAreStatuses) {
  EXPECT_FALSE(Tokenizer::from_json("{").ok());
  EXPECT_FALSE(Tokenizer::from_json("[]").ok());
  EXPECT_FALSE(Tokenizer::from_json(R"({"model": {"type": "BPE"}})").ok());
  auto bad_merge = byte_level_json();
  bad_merge["model"]["merges"].push_back({"x", "nope"});
  auto r = Tokenizer::from_json(bad_merge.dump(), "t.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nope"), std::string::npos) << r.status().to_string();
  EXPECT_NE(r.status().message().find("t.json"), std::string::npos) << r.status().to_string();
  auto bad_regex = byte_level_json();
  bad_regex["pre_tokenizer"] = {{"type", "Split"},
                                {"pattern", {{"Regex", "(unclosed"}}},
                                {"behavior", "Isolated"},
                                {"invert", false}};
  EXPECT_FALSE(Tokenizer::from_json(bad_regex.dump()).ok());
  auto unigram = byte_level_json();
  unigram["model"]["type"] = "Unigram";
  EXPECT_FALSE(Tokenizer::from_json(unigram.dump()).ok());
}

class TokenizerFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sw_tok_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    write("tokenizer.json", byte_level_json().dump());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(TokenizerFolder, ReadsSideFiles) {
  write("tokenizer_config.json",
        R"({"bos_token": {"content": "hello", "lstrip": false}, "eos_token": "<|end|>",
            "chat_template": [{"name": "default", "template": "T"}, {"name": "tool_use", "template": "U"}],
            "model_max_length": 1000000000000000019884624838656})");
  write("special_tokens_map.json", R"({"pad_token": "<|end|>"})");
  write("generation_config.json", R"({"eos_token_id": [265, 259]})");
  auto r = Tokenizer::from_folder(dir_.string());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const TokenizerInfo& info = (*r)->info();
  EXPECT_EQ(info.bos_token, "hello");
  EXPECT_EQ(info.eos_token, "<|end|>");
  EXPECT_EQ(info.pad_token, "<|end|>");
  EXPECT_EQ(info.eos_token_ids, (Ids{265, 259}));
  EXPECT_EQ(info.chat_template, "T");
  ASSERT_EQ(info.chat_templates.size(), 2u);
  EXPECT_EQ(info.chat_templates[1].first, "tool_use");
  EXPECT_EQ(info.model_max_length, 0);
}

TEST_F(TokenizerFolder, EosFromTheTokenAndErrorsNameFileAndKey) {
  write("tokenizer_config.json", R"({"eos_token": "<|end|>", "model_max_length": 4096})");
  auto r = Tokenizer::from_folder(dir_.string());
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)->info().eos_token_ids, (Ids{265}));
  EXPECT_EQ((*r)->info().model_max_length, 4096);

  write("generation_config.json", R"({"eos_token_id": "x"})");
  r = Tokenizer::from_folder(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("generation_config.json"), std::string::npos);
  EXPECT_NE(r.status().message().find("eos_token_id"), std::string::npos);

  std::filesystem::remove(dir_ / "generation_config.json");
  write("tokenizer_config.json", R"({"bos_token": 5})");
  r = Tokenizer::from_folder(dir_.string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tokenizer_config.json"), std::string::npos);
  EXPECT_NE(r.status().message().find("bos_token"), std::string::npos);

  EXPECT_FALSE(Tokenizer::from_folder((dir_ / "missing").string()).ok());
}

// ---- streaming ----

std::string stream_all(const Tokenizer& tok, const Ids& prompt, const Ids& out, bool skip,
                       std::vector<std::string>* chunks = nullptr) {
  IncrementalDetokenizer d(tok, prompt, skip);
  std::string text;
  for (int32_t id : out) {
    std::string c = d.push(id);
    if (chunks) chunks->push_back(c);
    text += c;
  }
  return text + d.flush();
}

TEST(TokenizerDetokenizer, NeverSplitsACharacter) {
  auto tok = load(byte_level_json());
  ASSERT_TRUE(tok);
  // "é!" as bytes C3 A9 21 and "中" E4 B8 AD.
  const Ids out = {259, 0xC3, 0xA9, 0x21, 0xE4, 0xB8, 0xAD, 265, 264};
  std::vector<std::string> chunks;
  EXPECT_EQ(stream_all(*tok, {}, out, true, &chunks), tok->decode(out, true));
  EXPECT_EQ(chunks, (std::vector<std::string>{"hello", "", "é", "!", "", "", "中", "", " world"}));
  EXPECT_EQ(stream_all(*tok, {259, 264}, out, false), tok->decode(out, false));
  // An unfinished character comes out of flush() as U+FFFD, as decode has it.
  EXPECT_EQ(stream_all(*tok, {}, {259, 0xE4, 0xB8}, true), "hello\xEF\xBF\xBD");
}

TEST(TokenizerDetokenizer, SentencePieceKeepsTheSpaceAfterAPrompt) {
  auto tok = load(sentencepiece_json(false));
  ASSERT_TRUE(tok);
  const Ids out = {271, 275, 259, 231, 187, 176, 2};
  // No prompt: exactly decode(outputs), whose leading space the Strip decoder removes.
  EXPECT_EQ(stream_all(*tok, {}, out, true), tok->decode(out, true));
  EXPECT_EQ(stream_all(*tok, {}, out, true), "hello world 中");
  // After a prompt: the text the outputs add to the prompt's, leading space kept.
  EXPECT_EQ(stream_all(*tok, {1, 271}, out, true), " hello world 中");
  EXPECT_EQ(stream_all(*tok, {1, 271}, out, false), " hello world 中</s>");
}

TEST(TokenizerStopStrings, HoldsBackAndCuts) {
  StopStringMatcher m({"STOP", "\n\n"});
  EXPECT_EQ(m.push("hello S"), "hello ");
  EXPECT_EQ(m.push("T"), "");
  EXPECT_EQ(m.push("x"), "STx");
  EXPECT_EQ(m.push("a\n"), "a");
  EXPECT_EQ(m.push("\nrest"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "\n\n");
  EXPECT_EQ(m.push("more"), "");
  EXPECT_EQ(m.flush(), "");

  StopStringMatcher n({"STOP"});
  EXPECT_EQ(n.push("xxST"), "xx");
  EXPECT_EQ(n.push("OPyy"), "");
  EXPECT_TRUE(n.stopped());
  StopStringMatcher f({"STOP"});
  EXPECT_EQ(f.push("abST"), "ab");
  EXPECT_FALSE(f.stopped());
  EXPECT_EQ(f.flush(), "ST");
  StopStringMatcher none({});
  EXPECT_EQ(none.push("anything"), "anything");
}

}  // namespace
}  // namespace sw::tokenizer

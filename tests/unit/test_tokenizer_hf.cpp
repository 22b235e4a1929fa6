// Differential test of tokenizer/ against Hugging Face `tokenizers`: every case of the fixtures
// that tests/tokenizer/make_fixtures.sh writes (folder in $SHARDWISE_TOKENIZER_FIXTURES) is
// encoded, decoded and streamed by ours and compared with HF's. Add a vocab: in the fixtures.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace sw::tokenizer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kShowMismatches = 5;

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// The input as a readable, escaped string for mismatch reports.
std::string show(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (out.size() > 300) out = out.substr(0, 300) + "...";
  return out + "\"";
}

std::string show(const std::vector<int32_t>& ids) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < ids.size(); ++i) os << (i ? "," : "") << ids[i];
  os << "]";
  std::string s = os.str();
  return s.size() > 400 ? s.substr(0, 400) + "...]" : s;
}

std::vector<json> read_jsonl(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

// Per check: how many cases matched, and the first mismatches.
struct Tally {
  explicit Tally(std::string n) : name(std::move(n)) {}
  std::string name;
  int total = 0, matched = 0;
  std::vector<std::string> examples;
  void add(bool ok, const std::function<std::string()>& describe) {
    ++total;
    if (ok) {
      ++matched;
    } else if (static_cast<int>(examples.size()) < kShowMismatches) {
      examples.push_back(describe());
    }
  }
};

std::string stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip) {
  IncrementalDetokenizer d(tok, {}, skip);
  std::string text;
  for (int32_t id : ids) text += d.push(id);
  return text + d.flush();
}

TEST(TokenizerHf, EveryFixtureCase) {
  const char* env = std::getenv("SHARDWISE_TOKENIZER_FIXTURES");
  const char* ci = std::getenv("CI");
  const bool in_ci = ci != nullptr && std::string(ci) == "true";
  const std::string dir = env ? env : "";
  if (dir.empty() || !fs::exists(fs::path(dir) / "vocabs.json")) {
    const std::string msg = "no tokenizer fixtures (SHARDWISE_TOKENIZER_FIXTURES='" + dir +
                            "'): run tests/tokenizer/make_fixtures.sh BUILD_DIR";
    if (in_ci) FAIL() << msg;
    GTEST_SKIP() << msg;
  }
  json vocabs;
  std::ifstream(fs::path(dir) / "vocabs.json") >> vocabs;
  ASSERT_FALSE(vocabs.empty()) << dir << "/vocabs.json lists no vocab";
  for (const auto& v : vocabs) {
    const std::string name = v.is_string() ? v.get<std::string>() : v.at("name").get<std::string>();
    SCOPED_TRACE(name);
    const fs::path vdir = fs::path(dir) / name;
    auto loaded = Tokenizer::from_file((vdir / "tokenizer.json").string());
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    const Tokenizer& tok = **loaded;
    Tally enc("encode"), enc_ns("encode (no special)"), dec("decode"), dec_skip("decode (skip)"),
        ddec("decode_cases"), exp("llama.cpp expected"), strm("stream == decode (skip)");
    for (const json& c : read_jsonl(vdir / "cases.jsonl")) {
      const std::string text = from_hex(c.at("text_hex").get<std::string>());
      const auto hf = c.at("ids").get<std::vector<int32_t>>();
      const auto ours = tok.encode(text, true);
      enc.add(ours == hf, [&] {
        return "text " + show(text) + "\n  HF:   " + show(hf) + "\n  ours: " + show(ours);
      });
      const auto hf_ns = c.at("ids_no_special").get<std::vector<int32_t>>();
      const auto ours_ns = tok.encode(text, false);
      enc_ns.add(ours_ns == hf_ns, [&] {
        return "text " + show(text) + "\n  HF:   " + show(hf_ns) + "\n  ours: " + show(ours_ns);
      });
      for (auto [tally, key, skip] :
           {std::tuple{&dec, "decode", false}, std::tuple{&dec_skip, "decode_skip", true}}) {
        const std::string want = c.at(key).get<std::string>();
        const std::string got = tok.decode(hf, skip);
        tally->add(got == want, [&] {
          return "ids " + show(hf) + "\n  HF:   " + show(want) + "\n  ours: " + show(got);
        });
      }
      const std::string full = tok.decode(hf, true);
      const std::string streamed = stream(tok, hf, true);
      strm.add(streamed == full, [&] {
        return "ids " + show(hf) + "\n  decode: " + show(full) + "\n  stream: " + show(streamed);
      });
    }
    if (fs::exists(vdir / "decode_cases.jsonl")) {
      for (const json& c : read_jsonl(vdir / "decode_cases.jsonl")) {
        const auto ids = c.at("ids").get<std::vector<int32_t>>();
        for (auto [key, skip] : {std::pair{"decode", false}, std::pair{"decode_skip", true}}) {
          const std::string want = c.at(key).get<std::string>();
          const std::string got = tok.decode(ids, skip);
          ddec.add(got == want, [&] {
            return std::string(key) + " ids " + show(ids) + "\n  HF:   " + show(want) +
                   "\n  ours: " + show(got);
          });
        }
      }
    }
    if (fs::exists(vdir / "expected.jsonl")) {
      for (const json& c : read_jsonl(vdir / "expected.jsonl")) {
        const std::string text = from_hex(c.at("text_hex").get<std::string>());
        const auto want = c.at("ids").get<std::vector<int32_t>>();
        const auto got = tok.encode(text, false);
        exp.add(got == want, [&] {
          return "text " + show(text) + "\n  llama.cpp: " + show(want) + "\n  ours: " + show(got);
        });
      }
    }
    std::string summary = name + ":";
    for (const Tally* t : {&enc, &enc_ns, &dec, &dec_skip, &ddec, &exp, &strm}) {
      if (t->total == 0) continue;
      summary +=
          " " + t->name + " " + std::to_string(t->matched) + "/" + std::to_string(t->total) + ";";
      for (const auto& e : t->examples) {
        ADD_FAILURE() << name << " " << t->name << " mismatch: " << e;
      }
    }
    std::printf("%s\n", summary.c_str());
    EXPECT_EQ(enc.matched, enc.total);
    EXPECT_EQ(enc_ns.matched, enc_ns.total);
    EXPECT_EQ(dec.matched, dec.total);
    EXPECT_EQ(dec_skip.matched, dec_skip.total);
    EXPECT_EQ(ddec.matched, ddec.total);
    EXPECT_EQ(exp.matched, exp.total);
    EXPECT_EQ(strm.matched, strm.total);
  }
}

}  // namespace
}  // namespace sw::tokenizer

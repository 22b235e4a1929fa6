// Decoders (decoders/*.rs and the decoder halves of ByteLevel/Metaspace/Replace): ByteLevel,
// Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, Sequence. Add one: a Decoder
// subclass and a branch in make_decoder.
#include "tokenizer/components.h"
#include "tokenizer/unicode.h"

namespace sw::tokenizer {
namespace {

class ByteLevelDec final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      const size_t mark = bytes.size();
      size_t i = 0;
      bool all = true;
      while (i < t.size()) {
        const int b = char_to_byte(unicode::next_cp(t, i));
        if (b < 0) {
          all = false;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
      if (!all) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, unicode::repair_utf8(bytes));
  }
};

class MetaspaceDec final : public Decoder {
 public:
  MetaspaceDec(char32_t rep, bool strip_first) : rep_(rep), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string& t = tokens[k];
      std::string out;
      out.reserve(t.size());
      size_t i = 0;
      while (i < t.size()) {
        const size_t b = i;
        if (unicode::next_cp(t, i) == rep_) {
          if (!(k == 0 && strip_first_)) out.push_back(' ');
        } else {
          out.append(t, b, i - b);
        }
      }
      tokens[k] = std::move(out);
    }
  }

 private:
  char32_t rep_;
  bool strip_first_;
};

class ReplaceDec final : public Decoder {
 public:
  ReplaceDec(std::shared_ptr<const Regex> re, std::string content)
      : re_(std::move(re)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    thread_local std::vector<std::pair<Span, bool>> m;
    for (std::string& t : tokens) {
      m.clear();
      re_->find_matches(t, m);
      std::string out;
      for (const auto& [span, is_match] : m) {
        if (is_match) {
          out += content_;
        } else {
          out.append(t, span.first, span.second - span.first);
        }
      }
      t = std::move(out);
    }
  }

 private:
  std::shared_ptr<const Regex> re_;
  std::string content_;
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class ByteFallbackDec final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (unicode::is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending.size(); ++k) out.emplace_back(unicode::kReplacementChar);
      }
      pending.clear();
    };
    for (std::string& t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex_digit(t[3]) >= 0 &&
          hex_digit(t[4]) >= 0) {
        pending.push_back(static_cast<char>(hex_digit(t[3]) * 16 + hex_digit(t[4])));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDec final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDec final : public Decoder {
 public:
  StripDec(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<size_t> starts;  // byte offset of each char
      std::vector<char32_t> cps;
      size_t i = 0;
      while (i < t.size()) {
        starts.push_back(i);
        cps.push_back(unicode::next_cp(t, i));
      }
      size_t start_cut = 0;
      for (size_t k = 0; k < cps.size() && k < start_; ++k) {
        if (cps[k] != content_) break;
        start_cut = k + 1;
      }
      size_t stop_cut = cps.size();
      for (size_t k = 0; k < stop_ && k < cps.size(); ++k) {
        const size_t index = cps.size() - k - 1;
        if (cps[index] != content_) break;
        stop_cut = index;
      }
      if (stop_cut <= start_cut) {
        t.clear();
        continue;
      }
      const size_t b = start_cut < starts.size() ? starts[start_cut] : t.size();
      const size_t e = stop_cut < starts.size() ? starts[stop_cut] : t.size();
      t = t.substr(b, e - b);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class BpeDec final : public Decoder {
 public:
  explicit BpeDec(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    if (suffix_.empty()) return;
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string with = k + 1 == tokens.size() ? "" : " ";
      std::string out;
      const std::string& t = tokens[k];
      size_t pos = 0;
      for (size_t f; (f = t.find(suffix_, pos)) != std::string::npos; pos = f + suffix_.size()) {
        out.append(t, pos, f - pos);
        out += with;
      }
      out.append(t, pos);
      tokens[k] = std::move(out);
    }
  }

 private:
  std::string suffix_;
};

class SequenceDec final : public Decoder {
 public:
  explicit SequenceDec(std::vector<std::unique_ptr<Decoder>> items) : items_(std::move(items)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : items_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> items_;
};

Result<char32_t> one_char(const nlohmann::json& j, const char* where) {
  const std::string s = j.get<std::string>();
  if (s.empty() || !unicode::is_valid_utf8(s) || unicode::count_chars(s) != 1) {
    return invalid_argument("{}: must be one character", where);
  }
  size_t i = 0;
  return unicode::next_cp(s, i);
}

}  // namespace

Result<std::unique_ptr<Decoder>> make_decoder(const nlohmann::json& j) {
  using Ptr = std::unique_ptr<Decoder>;
  if (j.is_null()) return Ptr();
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<Ptr> items;
    for (const auto& item : j.at("decoders")) {
      SW_ASSIGN_OR_RETURN(auto d, make_decoder(item));
      if (!d) return invalid_argument("decoder Sequence: null item");
      items.push_back(std::move(d));
    }
    return Ptr(new SequenceDec(std::move(items)));
  }
  if (type == "ByteLevel") return Ptr(new ByteLevelDec());
  if (type == "ByteFallback") return Ptr(new ByteFallbackDec());
  if (type == "Fuse") return Ptr(new FuseDec());
  if (type == "Metaspace") {
    SW_ASSIGN_OR_RETURN(char32_t rep,
                        one_char(j.at("replacement"), "decoder Metaspace replacement"));
    bool strip_first = true;  // prepend_scheme != never
    if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
      strip_first = it->get<std::string>() != "never";
    }
    if (auto it = j.find("add_prefix_space");
        it != j.end() && it->is_boolean() && !it->get<bool>()) {
      strip_first = false;
    }
    return Ptr(new MetaspaceDec(rep, strip_first));
  }
  if (type == "Replace") {
    SW_ASSIGN_OR_RETURN(auto re, compile_pattern(j.at("pattern"), "decoder Replace"));
    return Ptr(new ReplaceDec(std::move(re), j.at("content").get<std::string>()));
  }
  if (type == "Strip") {
    SW_ASSIGN_OR_RETURN(char32_t c, one_char(j.at("content"), "decoder Strip content"));
    return Ptr(new StripDec(c, j.at("start").get<size_t>(), j.at("stop").get<size_t>()));
  }
  if (type == "BPEDecoder") {
    std::string suffix = "</w>";
    if (auto it = j.find("suffix"); it != j.end() && it->is_string())
      suffix = it->get<std::string>();
    return Ptr(new BpeDec(std::move(suffix)));
  }
  return unimplemented("decoder type '{}' is not supported", type);
}

}  // namespace sw::tokenizer

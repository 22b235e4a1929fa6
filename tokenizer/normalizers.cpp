// Normalizers (normalizers/*.rs): NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents,
// Replace, Prepend, ByteLevel, Sequence. Add one: a Normalizer subclass and a branch in
// make_normalizer.
#include "tokenizer/components.h"
#include "tokenizer/unicode.h"

namespace sw::tokenizer {
namespace {

class UnicodeNorm final : public Normalizer {
 public:
  explicit UnicodeNorm(unicode::NormalForm form) : form_(form) {}
  void normalize(std::string& text) const override { text = unicode::normalize(text, form_); }

 private:
  unicode::NormalForm form_;
};

class LowercaseNorm final : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = unicode::to_lower(text); }
};

class StripNorm final : public Normalizer {
 public:
  StripNorm(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    size_t b = 0, e = text.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!unicode::is_whitespace(unicode::next_cp(text, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t s = e - 1;
        while (s > b && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
        size_t i = s;
        if (!unicode::is_whitespace(unicode::next_cp(text, i))) break;
        e = s;
      }
    }
    text = text.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class StripAccentsNorm final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
      const size_t b = i;
      if (!unicode::is_combining_mark(unicode::next_cp(text, i))) out.append(text, b, i - b);
    }
    text = std::move(out);
  }
};

class ReplaceNorm final : public Normalizer {
 public:
  ReplaceNorm(std::shared_ptr<const Regex> re, std::string content)
      : re_(std::move(re)), content_(std::move(content)) {}
  void normalize(std::string& text) const override {
    thread_local std::vector<std::pair<Span, bool>> m;
    m.clear();
    re_->find_matches(text, m);
    std::string out;
    out.reserve(text.size());
    for (const auto& [span, is_match] : m) {
      if (is_match) {
        out += content_;
      } else {
        out.append(text, span.first, span.second - span.first);
      }
    }
    text = std::move(out);
  }

 private:
  std::shared_ptr<const Regex> re_;
  std::string content_;
};

class PrependNorm final : public Normalizer {
 public:
  explicit PrependNorm(std::string prepend) : prepend_(std::move(prepend)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ByteLevelNorm final : public Normalizer {
 public:
  void normalize(std::string& text) const override {
    std::string out;
    out.reserve(text.size() * 2);
    for (unsigned char b : text) out += byte_to_char_utf8(b);
    text = std::move(out);
  }
};

class SequenceNorm final : public Normalizer {
 public:
  explicit SequenceNorm(std::vector<std::unique_ptr<Normalizer>> items)
      : items_(std::move(items)) {}
  void normalize(std::string& text) const override {
    for (const auto& n : items_) n->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> items_;
};

}  // namespace

Result<std::shared_ptr<const Regex>> compile_pattern(const nlohmann::json& pattern,
                                                     const char* where) {
  if (pattern.contains("String"))
    return Regex::compile(Regex::escape(pattern.at("String").get<std::string>()));
  if (pattern.contains("Regex")) return Regex::compile(pattern.at("Regex").get<std::string>());
  return invalid_argument("{}: pattern needs String or Regex", where);
}

Result<std::unique_ptr<Normalizer>> make_normalizer(const nlohmann::json& j) {
  using Ptr = std::unique_ptr<Normalizer>;
  if (j.is_null()) return Ptr();
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<Ptr> items;
    for (const auto& item : j.at("normalizers")) {
      SW_ASSIGN_OR_RETURN(auto n, make_normalizer(item));
      if (!n) return invalid_argument("normalizer Sequence: null item");
      items.push_back(std::move(n));
    }
    return Ptr(new SequenceNorm(std::move(items)));
  }
  if (type == "NFC") return Ptr(new UnicodeNorm(unicode::NormalForm::kNFC));
  if (type == "NFD") return Ptr(new UnicodeNorm(unicode::NormalForm::kNFD));
  if (type == "NFKC") return Ptr(new UnicodeNorm(unicode::NormalForm::kNFKC));
  if (type == "NFKD") return Ptr(new UnicodeNorm(unicode::NormalForm::kNFKD));
  if (type == "Lowercase") return Ptr(new LowercaseNorm());
  if (type == "StripAccents") return Ptr(new StripAccentsNorm());
  if (type == "ByteLevel") return Ptr(new ByteLevelNorm());
  if (type == "Strip") {
    return Ptr(new StripNorm(j.at("strip_left").get<bool>(), j.at("strip_right").get<bool>()));
  }
  if (type == "Prepend") return Ptr(new PrependNorm(j.at("prepend").get<std::string>()));
  if (type == "Replace") {
    SW_ASSIGN_OR_RETURN(auto re, compile_pattern(j.at("pattern"), "normalizer Replace"));
    return Ptr(new ReplaceNorm(std::move(re), j.at("content").get<std::string>()));
  }
  return unimplemented("normalizer type '{}' is not supported", type);
}

}  // namespace sw::tokenizer

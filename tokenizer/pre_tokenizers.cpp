// Pre-tokenizers (pre_tokenizers/*.rs): Split, ByteLevel, Metaspace, Digits, Punctuation,
// Whitespace, WhitespaceSplit, Sequence. Add one: a PreTokenizer subclass and a branch in
// make_pre_tokenizer.
#include <array>
#include <functional>

#include "tokenizer/components.h"
#include "tokenizer/unicode.h"

namespace sw::tokenizer {
namespace {

using Matches = std::vector<std::pair<Span, bool>>;

// Pattern for a char predicate (pattern.rs `impl<F: Fn(char) -> bool> Pattern for F`): each
// matching char is one match, the runs between are non-matches.
template <typename Pred>
void find_char_matches(std::string_view s, Pred pred, Matches& out) {
  if (s.empty()) {
    out.push_back({{0, 0}, false});
    return;
  }
  size_t last_offset = 0, i = 0;
  while (i < s.size()) {
    const size_t b = i;
    const char32_t c = unicode::next_cp(s, i);
    if (pred(c)) {
      if (last_offset < b) out.push_back({{last_offset, b}, false});
      out.push_back({{b, i}, true});
      last_offset = i;
    }
  }
  if (s.size() > last_offset) out.push_back({{last_offset, s.size()}, false});
}

struct Tables {
  std::array<std::string, 256> byte_char;
  std::array<int16_t, 512> char_byte;  // code points < 512 only
  Tables() {
    char_byte.fill(-1);
    std::array<bool, 256> direct{};
    for (int b = '!'; b <= '~'; ++b) direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = direct[b] ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      unicode::append_utf8(cp, byte_char[b]);
      char_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

SplitBehavior parse_behavior(const nlohmann::json& j) {
  const std::string b = j.get<std::string>();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  throw std::invalid_argument(fmt::format("unknown split behavior '{}'", b));
}

// Split: a String (matched literally) or Regex pattern, through Oniguruma.
class SplitPre final : public PreTokenizer {
 public:
  SplitPre(std::shared_ptr<const Regex> re, SplitBehavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}

 protected:
  void split(const Piece& in, std::vector<Piece>& out) const override {
    thread_local Matches m;
    m.clear();
    re_->find_matches(in.text, m);
    if (invert_) {
      for (auto& x : m) x.second = !x.second;
    }
    split_piece(in, m, behavior_, out);
  }

 private:
  std::shared_ptr<const Regex> re_;
  SplitBehavior behavior_;
  bool invert_;
};

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre final : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, std::shared_ptr<const Regex> re)
      : add_prefix_space_(add_prefix_space), re_(std::move(re)) {}

 protected:
  void split(const Piece& in, std::vector<Piece>& out) const override {
    const Piece* p = &in;
    Piece prefixed;
    if (add_prefix_space_ && (in.text.empty() || in.text[0] != ' ')) {
      prefixed.text.resize(in.text.size() + 1);
      prefixed.text[0] = ' ';
      std::copy(in.text.begin(), in.text.end(), prefixed.text.begin() + 1);
      prefixed.at_start = in.at_start;
      p = &prefixed;
    }
    const size_t first = out.size();
    if (re_) {
      thread_local Matches m;
      m.clear();
      re_->find_matches(p->text, m);
      split_piece(*p, m, SplitBehavior::kIsolated, out);
    } else {
      out.push_back(*p);
    }
    const auto& t = tables();
    for (size_t k = first; k < out.size(); ++k) {
      std::string mapped;
      mapped.reserve(out[k].text.size() * 2);
      for (unsigned char b : out[k].text) mapped += t.byte_char[b];
      out[k].text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::shared_ptr<const Regex> re_;
};

enum class PrependScheme { kFirst, kNever, kAlways };

class MetaspacePre final : public PreTokenizer {
 public:
  MetaspacePre(std::string replacement, char32_t rep_cp, PrependScheme scheme, bool split)
      : rep_(std::move(replacement)), rep_cp_(rep_cp), scheme_(scheme), split_(split) {}

 protected:
  void split(const Piece& in, std::vector<Piece>& out) const override {
    Piece p;
    p.at_start = in.at_start;
    p.text.reserve(in.text.size() + rep_.size());
    for (char c : in.text) {
      if (c == ' ') {
        p.text += rep_;
      } else {
        p.text.push_back(c);
      }
    }
    const bool starts = p.text.compare(0, rep_.size(), rep_) == 0;
    if (!starts &&
        (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && in.at_start))) {
      p.text.insert(0, rep_);
    }
    if (!split_) {
      out.push_back(std::move(p));
      return;
    }
    thread_local Matches m;
    m.clear();
    find_char_matches(
        p.text, [this](char32_t c) { return c == rep_cp_; }, m);
    split_piece(p, m, SplitBehavior::kMergedWithNext, out);
  }

 private:
  std::string rep_;
  char32_t rep_cp_;
  PrependScheme scheme_;
  bool split_;
};

// Digits, Punctuation, WhitespaceSplit: a char predicate and a behavior.
class CharSplitPre final : public PreTokenizer {
 public:
  CharSplitPre(std::function<bool(char32_t)> pred, SplitBehavior behavior)
      : pred_(std::move(pred)), behavior_(behavior) {}

 protected:
  void split(const Piece& in, std::vector<Piece>& out) const override {
    thread_local Matches m;
    m.clear();
    find_char_matches(in.text, pred_, m);
    split_piece(in, m, behavior_, out);
  }

 private:
  std::function<bool(char32_t)> pred_;
  SplitBehavior behavior_;
};

// Whitespace: the runs of \w+ and of [^\w\s]+ (Rust regex `\w+|[^\w\s]+`, inverted, removed).
class WhitespacePre final : public PreTokenizer {
 protected:
  void split(const Piece& in, std::vector<Piece>& out) const override {
    const std::string_view s = in.text;
    size_t i = 0;
    int run_kind = 0;  // 0 none, 1 word, 2 other
    size_t run_start = 0;
    auto flush = [&](size_t end) {
      if (run_kind != 0)
        out.push_back(
            {std::string(s.substr(run_start, end - run_start)), in.at_start && run_start == 0});
      run_kind = 0;
    };
    while (i < s.size()) {
      const size_t b = i;
      const char32_t c = unicode::next_cp(s, i);
      const int kind = unicode::is_word_char(c) ? 1 : unicode::is_whitespace(c) ? 0 : 2;
      if (kind != run_kind) {
        flush(b);
        run_kind = kind;
        run_start = b;
      }
    }
    flush(s.size());
  }
};

class SequencePre final : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> items)
      : items_(std::move(items)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : items_) p->pre_tokenize(pieces);
  }

 protected:
  void split(const Piece& in, std::vector<Piece>& out) const override { out.push_back(in); }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> items_;
};

bool get_bool(const nlohmann::json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return it->get<bool>();
}

}  // namespace

const std::string& byte_to_char_utf8(uint8_t b) { return tables().byte_char[b]; }

int char_to_byte(char32_t cp) { return cp < 512 ? tables().char_byte[cp] : -1; }

void split_piece(const Piece& in, const std::vector<std::pair<Span, bool>>& matches,
                 SplitBehavior behavior, std::vector<Piece>& out) {
  thread_local std::vector<std::pair<Span, bool>> splits;  // (span, remove)
  splits.clear();
  bool prev_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& [span, m] : matches) splits.push_back({span, false});
      break;
    case SplitBehavior::kRemoved: splits.assign(matches.begin(), matches.end()); break;
    case SplitBehavior::kContiguous:
      for (const auto& [span, m] : matches) {
        if (m == prev_match && !splits.empty()) {
          splits.back().first.second = span.second;
        } else {
          splits.push_back({span, false});
        }
        prev_match = m;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& [span, m] : matches) {
        if (m && !prev_match && !splits.empty()) {
          splits.back().first.second = span.second;
        } else {
          splits.push_back({span, false});
        }
        prev_match = m;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->second && !prev_match && !splits.empty()) {
          splits.back().first.first = it->first.first;
        } else {
          splits.push_back({it->first, false});
        }
        prev_match = it->second;
      }
      std::reverse(splits.begin(), splits.end());
      break;
  }
  for (const auto& [span, remove] : splits) {
    if (remove || span.first >= span.second) continue;
    out.push_back(
        {in.text.substr(span.first, span.second - span.first), in.at_start && span.first == 0});
  }
}

void PreTokenizer::pre_tokenize(std::vector<Piece>& pieces) const {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 4);
  for (const Piece& p : pieces) split(p, out);
  std::erase_if(out, [](const Piece& p) { return p.text.empty(); });
  pieces = std::move(out);
}

Result<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const nlohmann::json& j) {
  if (j.is_null()) return std::unique_ptr<PreTokenizer>();
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> items;
    for (const auto& item : j.at("pretokenizers")) {
      SW_ASSIGN_OR_RETURN(auto p, make_pre_tokenizer(item));
      if (!p) return invalid_argument("pre_tokenizer Sequence: null item");
      items.push_back(std::move(p));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePre(std::move(items)));
  }
  if (type == "Split") {
    const auto& pat = j.at("pattern");
    std::string source;
    if (pat.contains("String")) {
      source = Regex::escape(pat.at("String").get<std::string>());
    } else if (pat.contains("Regex")) {
      source = pat.at("Regex").get<std::string>();
    } else {
      return invalid_argument("pre_tokenizer Split: pattern needs String or Regex");
    }
    SW_ASSIGN_OR_RETURN(auto re, Regex::compile(source));
    return std::unique_ptr<PreTokenizer>(new SplitPre(
        std::move(re), parse_behavior(j.at("behavior")), get_bool(j, "invert", false)));
  }
  if (type == "ByteLevel") {
    std::shared_ptr<const Regex> re;
    if (get_bool(j, "use_regex", true)) {
      static const auto gpt2 = Regex::compile(kGpt2Pattern);
      if (!gpt2.ok()) return gpt2.status();
      re = gpt2.value();
    }
    return std::unique_ptr<PreTokenizer>(
        new ByteLevelPre(get_bool(j, "add_prefix_space", true), std::move(re)));
  }
  if (type == "Metaspace") {
    const std::string rep = j.at("replacement").get<std::string>();
    if (rep.empty() || unicode::count_chars(rep) != 1) {
      return invalid_argument("pre_tokenizer Metaspace: replacement must be one character");
    }
    size_t i = 0;
    const char32_t cp = unicode::next_cp(rep, i);
    PrependScheme scheme = PrependScheme::kAlways;
    if (auto it = j.find("prepend_scheme"); it != j.end() && !it->is_null()) {
      const std::string s = it->get<std::string>();
      if (s == "first") {
        scheme = PrependScheme::kFirst;
      } else if (s == "never") {
        scheme = PrependScheme::kNever;
      } else if (s != "always") {
        return invalid_argument("pre_tokenizer Metaspace: unknown prepend_scheme '{}'", s);
      }
    }
    if (!get_bool(j, "add_prefix_space", true)) scheme = PrependScheme::kNever;
    return std::unique_ptr<PreTokenizer>(
        new MetaspacePre(rep, cp, scheme, get_bool(j, "split", true)));
  }
  if (type == "Digits") {
    const bool individual = get_bool(j, "individual_digits", false);
    return std::unique_ptr<PreTokenizer>(new CharSplitPre(
        unicode::is_numeric, individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous));
  }
  if (type == "Punctuation") {
    SplitBehavior b = SplitBehavior::kIsolated;
    if (auto it = j.find("behavior"); it != j.end() && !it->is_null()) b = parse_behavior(*it);
    return std::unique_ptr<PreTokenizer>(new CharSplitPre(unicode::is_punctuation, b));
  }
  if (type == "WhitespaceSplit") {
    return std::unique_ptr<PreTokenizer>(
        new CharSplitPre(unicode::is_whitespace, SplitBehavior::kRemoved));
  }
  if (type == "Whitespace") return std::unique_ptr<PreTokenizer>(new WhitespacePre());
  return unimplemented("pre_tokenizer type '{}' is not supported", type);
}

}  // namespace sw::tokenizer

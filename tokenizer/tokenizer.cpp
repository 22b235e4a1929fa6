// The tokenizer.json pipeline (tokenizer/mod.rs + added_vocabulary.rs): added tokens split
// out of the raw text, then the normalizer, the normalized added tokens, the pre-tokenizer, the
// BPE model and the post-processor; decode through the decoder. Loading of tokenizer.json and
// the model folder's side files. Extend: components go into components.h, not here.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "common/text_file.h"
#include "tokenizer/bpe.h"
#include "tokenizer/components.h"
#include "tokenizer/unicode.h"

namespace sw::tokenizer {
namespace {

constexpr int64_t kMaxTokenizerJson = int64_t{1} << 30;
constexpr int64_t kMaxSideFile = int64_t{64} << 20;

struct AddedToken {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  bool operator==(const AddedToken&) const = default;
};

// Byte trie over the added tokens' patterns: leftmost-longest matching (daachorse's
// MatchKind::LeftmostLongest).
class Trie {
 public:
  bool empty() const { return nodes_.size() <= 1; }
  void add(std::string_view pattern, int32_t value) {
    if (pattern.empty()) return;
    int32_t n = 0;
    for (unsigned char b : pattern) {
      int32_t child = -1;
      for (const auto& [cb, ci] : nodes_[n].children) {
        if (cb == b) child = ci;
      }
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_[n].children.push_back({b, child});
        nodes_.emplace_back();
      }
      n = child;
    }
    if (nodes_[n].value < 0) nodes_[n].value = value;  // a repeated pattern keeps the first
    first_[static_cast<unsigned char>(pattern[0])] = true;
  }
  // The leftmost-longest match in s[from..]: {start, end, value}; value -1 when none.
  struct Match {
    size_t start, end;
    int32_t value;
  };
  Match find(std::string_view s, size_t from) const {
    for (size_t pos = from; pos < s.size(); ++pos) {
      if (!first_[static_cast<unsigned char>(s[pos])]) continue;
      int32_t n = 0, best = -1;
      size_t best_end = 0;
      for (size_t k = pos; k < s.size(); ++k) {
        const auto b = static_cast<unsigned char>(s[k]);
        int32_t child = -1;
        for (const auto& [cb, ci] : nodes_[n].children) {
          if (cb == b) {
            child = ci;
            break;
          }
        }
        if (child < 0) break;
        n = child;
        if (nodes_[n].value >= 0) {
          best = nodes_[n].value;
          best_end = k + 1;
        }
      }
      if (best >= 0) return {pos, best_end, best};
    }
    return {s.size(), s.size(), -1};
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t value = -1;
  };
  std::vector<Node> nodes_ = std::vector<Node>(1);
  bool first_[256] = {};
};

// A segment of the input between added tokens: text, or an added token's id.
struct Segment {
  std::string text;
  bool at_start = false;
  int32_t id = -1;
};

bool last_is_word(std::string_view s) {
  if (s.empty()) return false;
  size_t b = s.size() - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  size_t i = b;
  return unicode::is_word_char(unicode::next_cp(s, i));
}

bool first_is_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = 0;
  return unicode::is_word_char(unicode::next_cp(s, i));
}

class HfTokenizer final : public Tokenizer {
 public:
  static Result<std::unique_ptr<HfTokenizer>> load(const nlohmann::json& j);

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    if (auto it = added_map_.find(std::string(token)); it != added_map_.end()) return it->second;
    const int32_t id = model_->token_to_id(token);
    if (id >= 0) return id;
    return std::nullopt;
  }
  std::optional<std::string> id_to_token(int32_t id) const override {
    const std::string* t = token_string(id);
    if (t == nullptr) return std::nullopt;
    return *t;
  }
  int64_t vocab_size() const override { return vocab_size_; }
  bool is_special(int32_t id) const override {
    auto it = added_r_.find(id);
    return it != added_r_.end() && it->second.special;
  }
  const TokenizerInfo& info() const override { return info_; }
  TokenizerInfo& mutable_info() override { return info_; }

 private:
  const std::string* token_string(int32_t id) const {
    if (auto it = normalized_cache_.find(id); it != normalized_cache_.end()) return &it->second;
    if (auto it = added_r_.find(id); it != added_r_.end()) return &it->second.content;
    return model_->id_to_token(id);
  }
  void add_tokens(const std::vector<AddedToken>& tokens);
  void split_added(const Segment& in, const Trie& trie, std::vector<Segment>& out) const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Bpe> model_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;

  std::unordered_map<std::string, int32_t> added_map_;
  std::map<int32_t, AddedToken> added_r_;
  std::unordered_set<std::string> special_set_;
  std::unordered_map<int32_t, std::string> normalized_cache_;
  Trie split_trie_, split_normalized_trie_;
  int64_t vocab_size_ = 0;
  TokenizerInfo info_;
};

void HfTokenizer::add_tokens(const std::vector<AddedToken>& tokens) {
  auto next_id = static_cast<int32_t>(model_->vocab_count());
  for (const AddedToken& t : tokens) {
    if (t.content.empty()) continue;
    if (auto it = added_map_.find(t.content); it != added_map_.end()) {
      auto r = added_r_.find(it->second);
      if (r != added_r_.end() && r->second == t) continue;
    }
    int32_t id;
    if (auto it = added_map_.find(t.content); it != added_map_.end()) {
      id = it->second;
    } else if (int32_t mid = model_->token_to_id(t.content); mid >= 0) {
      id = mid;
    } else {
      id = next_id++;
    }
    if (t.normalized && normalizer_) {
      std::string normed = t.content;
      normalizer_->normalize(normed);
      if (normed != t.content) normalized_cache_[id] = normed;
    }
    added_map_[t.content] = id;
    if (t.special) special_set_.insert(t.content);
    added_r_[id] = t;
  }
  for (const auto& [id, t] : added_r_) {
    if (t.normalized) {
      auto it = normalized_cache_.find(id);
      split_normalized_trie_.add(it != normalized_cache_.end() ? it->second : t.content, id);
    } else {
      split_trie_.add(t.content, id);
    }
  }
}

Result<std::unique_ptr<HfTokenizer>> HfTokenizer::load(const nlohmann::json& j) {
  if (!j.is_object()) return invalid_argument("expected a JSON object");
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer());
  auto field = [&](const char* key) -> const nlohmann::json& {
    static const nlohmann::json null_json;
    auto it = j.find(key);
    return it == j.end() ? null_json : *it;
  };
  auto ctx = [](const char* key) { return [key](const Status& s) { return s.with_context(key); }; };
  {
    auto r = make_normalizer(field("normalizer"));
    if (!r.ok()) return ctx("normalizer")(r.status());
    tok->normalizer_ = std::move(r).value();
  }
  {
    auto r = make_pre_tokenizer(field("pre_tokenizer"));
    if (!r.ok()) return ctx("pre_tokenizer")(r.status());
    tok->pre_tokenizer_ = std::move(r).value();
  }
  {
    auto r = make_post_processor(field("post_processor"));
    if (!r.ok()) return ctx("post_processor")(r.status());
    tok->post_processor_ = std::move(r).value();
  }
  {
    auto r = make_decoder(field("decoder"));
    if (!r.ok()) return ctx("decoder")(r.status());
    tok->decoder_ = std::move(r).value();
  }
  const auto& model = field("model");
  if (!model.is_object()) return invalid_argument("model: missing");
  std::string type = "BPE";
  if (auto it = model.find("type"); it != model.end()) type = it->get<std::string>();
  if (type != "BPE") return unimplemented("model: type '{}' is not supported (BPE only)", type);
  {
    auto r = Bpe::from_json(model);
    if (!r.ok()) return ctx("model")(r.status());
    tok->model_ = std::move(r).value();
  }
  std::vector<AddedToken> added;
  if (const auto& list = field("added_tokens"); !list.is_null()) {
    for (const auto& a : list) {
      AddedToken t;
      t.content = a.at("content").get<std::string>();
      auto flag = [&](const char* key, bool dflt) {
        auto it = a.find(key);
        return it == a.end() || it->is_null() ? dflt : it->get<bool>();
      };
      t.single_word = flag("single_word", false);
      t.lstrip = flag("lstrip", false);
      t.rstrip = flag("rstrip", false);
      t.normalized = flag("normalized", true);
      t.special = flag("special", false);
      added.push_back(std::move(t));
    }
  }
  tok->add_tokens(added);
  int64_t max_id = tok->model_->max_id();
  if (!tok->added_r_.empty()) max_id = std::max<int64_t>(max_id, tok->added_r_.rbegin()->first);
  tok->vocab_size_ = max_id + 1;
  return tok;
}

// AddedVocabulary::find_matches + split_with_indices on one text segment.
void HfTokenizer::split_added(const Segment& in, const Trie& trie,
                              std::vector<Segment>& out) const {
  const std::string_view s = in.text;
  if (trie.empty()) {
    out.push_back(in);
    return;
  }
  auto push_text = [&](size_t b, size_t e) {
    if (e > b) out.push_back({std::string(s.substr(b, e - b)), in.at_start && b == 0, -1});
  };
  size_t start_offset = 0, from = 0;
  while (from < s.size()) {
    const Trie::Match m = trie.find(s, from);
    if (m.value < 0) break;
    from = m.end;
    size_t start = m.start, stop = m.end;
    const AddedToken& t = added_r_.at(m.value);
    if (t.single_word) {
      const bool start_space = start == 0 || !last_is_word(s.substr(0, start));
      const bool stop_space = stop == s.size() || !first_is_word(s.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (t.lstrip) {
      size_t ns = start;
      while (ns > 0) {
        size_t b = ns - 1;
        while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
        size_t i = b;
        if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
        ns = b;
      }
      start = std::max(ns, start_offset);
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t i = stop;
        if (!unicode::is_whitespace(unicode::next_cp(s, i))) break;
        stop = i;
      }
    }
    push_text(start_offset, start);
    out.push_back({std::string(), false, m.value});
    start_offset = stop;
    // The trie's iterator goes on after the match it found, not after the stripped spaces.
  }
  push_text(start_offset, s.size());
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!unicode::is_valid_utf8(text)) {
    repaired = unicode::repair_utf8(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  // 1. Added tokens that are matched on the raw text (normalized: false).
  std::vector<Segment> raw;
  split_added({std::string(text), true, -1}, split_trie_, raw);
  std::vector<Segment> segs;
  std::vector<Piece> pieces;
  for (Segment& r : raw) {
    if (r.id >= 0) {
      ids.push_back(r.id);
      continue;
    }
    // 2. Normalize, then split out the normalized added tokens.
    if (normalizer_) normalizer_->normalize(r.text);
    segs.clear();
    split_added(r, split_normalized_trie_, segs);
    for (Segment& sg : segs) {
      if (sg.id >= 0) {
        ids.push_back(sg.id);
        continue;
      }
      if (sg.text.empty()) continue;
      // 3. Pre-tokenize and run the model on each piece.
      pieces.clear();
      pieces.push_back({std::move(sg.text), sg.at_start});
      if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
      for (const Piece& p : pieces) model_->tokenize(p.text, ids);
    }
  }
  if (add_special_tokens && post_processor_) post_processor_->process(ids);
  return ids;
}

std::string HfTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* t = token_string(id);
    if (t == nullptr) continue;
    if (skip_special_tokens && !special_set_.empty() && special_set_.count(*t)) continue;
    tokens.push_back(*t);
  }
  if (!decoder_) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  decoder_->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

// ---- the model folder's side files ----

// A special token in tokenizer_config.json / special_tokens_map.json: a string or
// {"content": ...}; "" when absent or null.
Result<std::string> token_field(const nlohmann::json& j, const char* key, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return invalid_argument("{}: key '{}': expected a string or an object with a string 'content'",
                          file, key);
}

Result<nlohmann::json> read_json(const std::string& path, const std::string& name, bool& present) {
  present = std::filesystem::exists(path);
  if (!present) return nlohmann::json();
  SW_ASSIGN_OR_RETURN(std::string text, read_text_file(path, kMaxSideFile, name.c_str()));
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_argument("{}: not valid JSON", path);
  if (!j.is_object()) return invalid_argument("{}: expected a JSON object", path);
  return j;
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_json(std::string_view json,
                                                        const std::string& source) {
  try {
    auto j = nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return invalid_argument("{}: not valid JSON", source);
    auto r = HfTokenizer::load(j);
    if (!r.ok()) return r.status().with_context(source);
    return std::unique_ptr<Tokenizer>(std::move(r).value());
  } catch (const std::exception& e) {
    return invalid_argument("{}: {}", source, e.what());
  }
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_file(const std::string& path) {
  SW_ASSIGN_OR_RETURN(std::string text, read_text_file(path, kMaxTokenizerJson, "tokenizer.json"));
  return from_json(text, path);
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string tj = (fs::path(dir) / "tokenizer.json").string();
  if (!fs::exists(tj)) return not_found("{}: no tokenizer.json", dir);
  SW_ASSIGN_OR_RETURN(auto tok, from_file(tj));
  TokenizerInfo& info = tok->mutable_info();
  try {
    bool has_cfg, has_map, has_gen;
    const std::string cfg_path = (fs::path(dir) / "tokenizer_config.json").string();
    const std::string map_path = (fs::path(dir) / "special_tokens_map.json").string();
    const std::string gen_path = (fs::path(dir) / "generation_config.json").string();
    SW_ASSIGN_OR_RETURN(auto cfg, read_json(cfg_path, "tokenizer_config.json", has_cfg));
    SW_ASSIGN_OR_RETURN(auto map, read_json(map_path, "special_tokens_map.json", has_map));
    SW_ASSIGN_OR_RETURN(auto gen, read_json(gen_path, "generation_config.json", has_gen));
    struct {
      const char* key;
      std::string* dst;
    } fields[] = {{"bos_token", &info.bos_token},
                  {"eos_token", &info.eos_token},
                  {"pad_token", &info.pad_token},
                  {"unk_token", &info.unk_token}};
    for (auto& f : fields) {
      if (has_cfg) {
        SW_ASSIGN_OR_RETURN(*f.dst, token_field(cfg, f.key, cfg_path));
      }
      if (f.dst->empty() && has_map) {
        SW_ASSIGN_OR_RETURN(*f.dst, token_field(map, f.key, map_path));
      }
    }
    if (has_cfg) {
      if (auto it = cfg.find("chat_template"); it != cfg.end() && !it->is_null()) {
        if (it->is_string()) {
          info.chat_template = it->get<std::string>();
        } else if (it->is_array()) {
          for (const auto& t : *it) {
            if (!t.is_object() || !t.contains("name") || !t.contains("template") ||
                !t.at("name").is_string() || !t.at("template").is_string()) {
              return invalid_argument(
                  "{}: key 'chat_template': list items need string 'name' and 'template'",
                  cfg_path);
            }
            info.chat_templates.emplace_back(t.at("name").get<std::string>(),
                                             t.at("template").get<std::string>());
            if (info.chat_templates.back().first == "default") {
              info.chat_template = info.chat_templates.back().second;
            }
          }
        } else {
          return invalid_argument("{}: key 'chat_template': expected a string or a list", cfg_path);
        }
      }
      if (auto it = cfg.find("model_max_length"); it != cfg.end() && !it->is_null()) {
        if (!it->is_number()) {
          return invalid_argument("{}: key 'model_max_length': expected a number", cfg_path);
        }
        const double v = it->get<double>();
        info.model_max_length = v > 0 && v < 1e18 ? static_cast<int64_t>(v) : 0;
      }
    }
    if (info.chat_template.empty() && info.chat_templates.empty()) {
      const std::string jinja = (fs::path(dir) / "chat_template.jinja").string();
      if (fs::exists(jinja)) {
        SW_ASSIGN_OR_RETURN(info.chat_template,
                            read_text_file(jinja, kMaxSideFile, "chat_template.jinja"));
      }
    }
    if (has_gen) {
      if (auto it = gen.find("eos_token_id"); it != gen.end() && !it->is_null()) {
        auto bad = [&] {
          return invalid_argument("{}: key 'eos_token_id': expected an integer or a list of them",
                                  gen_path);
        };
        if (it->is_number_integer()) {
          info.eos_token_ids.push_back(it->get<int32_t>());
        } else if (it->is_array()) {
          for (const auto& v : *it) {
            if (!v.is_number_integer()) return bad();
            info.eos_token_ids.push_back(v.get<int32_t>());
          }
        } else {
          return bad();
        }
      }
    }
    if (info.eos_token_ids.empty() && !info.eos_token.empty()) {
      if (auto id = tok->token_to_id(info.eos_token)) info.eos_token_ids.push_back(*id);
    }
  } catch (const std::exception& e) {
    return invalid_argument("{}: {}", dir, e.what());
  }
  return tok;
}

}  // namespace sw::tokenizer

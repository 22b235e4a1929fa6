// Post-processors (processors/*.rs) on a single sequence's ids: TemplateProcessing,
// RobertaProcessing, BertProcessing, ByteLevel (no-op on ids), Sequence. Add one: a
// PostProcessor subclass and a branch in make_post_processor.
#include <unordered_map>

#include "tokenizer/components.h"

namespace sw::tokenizer {
namespace {

// The ids around the sequence: before + ids + after.
class WrapProc final : public PostProcessor {
 public:
  WrapProc(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }

 private:
  std::vector<int32_t> before_, after_;
};

// A template with $A repeated or absent: the full piece list.
class TemplateProc final : public PostProcessor {
 public:
  // pieces: -1 for $A, else an index into specials_.
  TemplateProc(std::vector<int> pieces, std::vector<std::vector<int32_t>> specials)
      : pieces_(std::move(pieces)), specials_(std::move(specials)) {}
  void process(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 8);
    for (int p : pieces_) {
      if (p < 0) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), specials_[p].begin(), specials_[p].end());
      }
    }
    ids = std::move(out);
  }

 private:
  std::vector<int> pieces_;
  std::vector<std::vector<int32_t>> specials_;
};

class SequenceProc final : public PostProcessor {
 public:
  explicit SequenceProc(std::vector<std::unique_ptr<PostProcessor>> items)
      : items_(std::move(items)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& p : items_) p->process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> items_;
};

class NoopProc final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
};

int32_t pair_id(const nlohmann::json& j, const char* where) {
  // ["<s>", 0]
  if (!j.is_array() || j.size() != 2)
    throw std::invalid_argument(fmt::format("{}: expected [token, id]", where));
  return j.at(1).get<int32_t>();
}

// A template piece: {"Sequence": {"id": "A", ...}} / {"SpecialToken": {"id": "<s>", ...}}, or
// the string forms "$A", "$B:1", "<s>", "<s>:0". Returns "" for $A, "\x01B" for $B, else the
// special token's name.
std::string piece_name(const nlohmann::json& p) {
  if (p.is_object()) {
    if (p.contains("Sequence"))
      return fmt::format("\x01{}", p.at("Sequence").at("id").get<std::string>());
    return p.at("SpecialToken").at("id").get<std::string>();
  }
  std::string s = p.get<std::string>();
  if (!s.empty() && s[0] == '$') {
    const size_t colon = s.find(':');
    std::string_view id =
        std::string_view(s).substr(1, colon == std::string::npos ? colon : colon - 1);
    if (id.empty()) id = "A";
    return fmt::format("\x01{}", id);
  }
  if (auto c = s.rfind(':'); c != std::string::npos) s.resize(c);
  return s;
}

}  // namespace

Result<std::unique_ptr<PostProcessor>> make_post_processor(const nlohmann::json& j) {
  using Ptr = std::unique_ptr<PostProcessor>;
  if (j.is_null()) return Ptr();
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<Ptr> items;
    for (const auto& item : j.at("processors")) {
      SW_ASSIGN_OR_RETURN(auto p, make_post_processor(item));
      if (!p) return invalid_argument("post_processor Sequence: null item");
      items.push_back(std::move(p));
    }
    return Ptr(new SequenceProc(std::move(items)));
  }
  if (type == "ByteLevel") return Ptr(new NoopProc());
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    return Ptr(new WrapProc({pair_id(j.at("cls"), "cls")}, {pair_id(j.at("sep"), "sep")}));
  }
  if (type == "TemplateProcessing") {
    std::unordered_map<std::string, int> index;
    std::vector<std::vector<int32_t>> specials;
    for (const auto& [name, tok] : j.at("special_tokens").items()) {
      index[name] = static_cast<int>(specials.size());
      specials.push_back(tok.at("ids").get<std::vector<int32_t>>());
    }
    std::vector<int> pieces;
    const auto& single = j.at("single");
    std::vector<nlohmann::json> items;
    if (single.is_string()) {  // "$A:0 [SEP]:0"
      std::string s = single.get<std::string>();
      size_t pos = 0;
      while (pos < s.size()) {
        size_t e = s.find(' ', pos);
        if (e == std::string::npos) e = s.size();
        if (e > pos) items.emplace_back(s.substr(pos, e - pos));
        pos = e + 1;
      }
    } else {
      for (const auto& p : single) items.push_back(p);
    }
    for (const auto& p : items) {
      const std::string name = piece_name(p);
      if (!name.empty() && name[0] == '\x01') {
        if (name !=
            "\x01"
            "A")
          return invalid_argument("TemplateProcessing: single uses ${}", name.substr(1));
        pieces.push_back(-1);
        continue;
      }
      auto it = index.find(name);
      if (it == index.end()) {
        return invalid_argument("TemplateProcessing: missing special token '{}'", name);
      }
      pieces.push_back(it->second);
    }
    return Ptr(new TemplateProc(std::move(pieces), std::move(specials)));
  }
  return unimplemented("post_processor type '{}' is not supported", type);
}

}  // namespace sw::tokenizer

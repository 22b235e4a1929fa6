// parse_json_bounded: nlohmann's SAX parser (iterative) feeding a DOM builder that checks the
// depth and duplicate keys as values arrive. Add a limit: a member below, checked in its event.
#include "frontend/json_limits.h"

#include <fmt/format.h>

#include <string>
#include <utility>
#include <vector>

namespace sw::frontend {
namespace {

using nlohmann::json;

class BoundedBuilder : public nlohmann::json_sax<json> {
 public:
  BoundedBuilder(int max_depth, bool reject_duplicates)
      : max_depth_(max_depth), reject_duplicates_(reject_duplicates) {}

  bool null() override { return put(json(nullptr)); }
  bool boolean(bool v) override { return put(json(v)); }
  bool number_integer(number_integer_t v) override { return put(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return put(json(v)); }
  bool number_float(number_float_t v, const string_t&) override { return put(json(v)); }
  bool string(string_t& v) override { return put(json(std::move(v))); }
  bool binary(binary_t&) override {
    error_ = "binary values are not JSON";
    return false;
  }
  bool start_object(std::size_t) override { return open(json::object()); }
  bool key(string_t& k) override {
    json& obj = *stack_.back();
    if (reject_duplicates_ && obj.contains(k)) {
      error_ = fmt::format("duplicate key \"{}\"", k.size() > 60 ? k.substr(0, 57) + "..." : k);
      return false;
    }
    // The value lands here; nlohmann's own DOM parser does the same.
    key_slot_ = &obj[k];
    return true;
  }
  bool end_object() override {
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_array() override {
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    if (error_.empty()) {
      std::string what = ex.what();
      // "[json.exception.parse_error.101] parse error at line 1, column 2: ..." -> after ": "
      const auto colon = what.find(": ");
      error_ = fmt::format("invalid JSON at byte {}: {}", position,
                           colon == std::string::npos ? what : what.substr(colon + 2));
    }
    return false;
  }

  json root;
  std::string error_;

 private:
  bool put(json&& v) {
    if (stack_.empty()) {
      root = std::move(v);
      return true;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
    } else {
      *key_slot_ = std::move(v);
    }
    return true;
  }
  bool open(json&& v) {
    if (static_cast<int>(stack_.size()) >= max_depth_) {
      error_ = fmt::format("JSON nested deeper than {} levels", max_depth_);
      return false;
    }
    json* slot;
    if (stack_.empty()) {
      root = std::move(v);
      slot = &root;
    } else if (stack_.back()->is_array()) {
      stack_.back()->push_back(std::move(v));
      slot = &stack_.back()->back();
    } else {
      *key_slot_ = std::move(v);
      slot = key_slot_;
    }
    stack_.push_back(slot);
    return true;
  }

  int max_depth_;
  bool reject_duplicates_;
  std::vector<json*> stack_;
  json* key_slot_ = nullptr;
};

}  // namespace

Result<nlohmann::json> parse_json_bounded(std::string_view text, int max_depth,
                                          bool reject_duplicate_keys) {
  BoundedBuilder builder(max_depth < 1 ? 1 : max_depth, reject_duplicate_keys);
  bool ok = false;
  try {
    ok = json::sax_parse(text.begin(), text.end(), &builder, json::input_format_t::json,
                         /*strict=*/true);
  } catch (const std::exception& e) {  // allocation failure and the like
    return invalid_argument("invalid JSON: {}", e.what());
  }
  if (!ok) {
    // A partly built DOM may be deep: nlohmann (>= 3.10) destroys it without recursion.
    return invalid_argument("{}", builder.error_.empty() ? "invalid JSON" : builder.error_);
  }
  return std::move(builder.root);
}

}  // namespace sw::frontend

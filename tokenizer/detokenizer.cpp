// IncrementalDetokenizer (vLLM's detokenize_incrementally on ids: prefix/read offsets) and
// StopStringMatcher. See detokenizer.h for the contracts.
#include "tokenizer/detokenizer.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace sw::tokenizer {
namespace {

// vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET: the prefix window starts this many tokens
// before the read offset; the prompt context is that plus 2.
constexpr size_t kInitialOffset = 5;

bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, unicode::kReplacementChar) == 0;
}

// new_text past prefix_text: the byte suffix when prefix_text is its prefix, else (a decoder
// that rewrote earlier text) vLLM's slice by character count.
std::string text_after(const std::string& new_text, const std::string& prefix_text) {
  if (new_text.compare(0, prefix_text.size(), prefix_text) == 0) {
    return new_text.substr(prefix_text.size());
  }
  const size_t skip = unicode::count_chars(prefix_text);
  size_t i = 0, n = 0;
  while (i < new_text.size() && n < skip) {
    i += unicode::utf8_len(static_cast<unsigned char>(new_text[i]));
    ++n;
  }
  return i < new_text.size() ? new_text.substr(i) : std::string();
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               std::span<const int32_t> prompt_ids,
                                               bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {
  const size_t keep = std::min(prompt_ids.size(), kInitialOffset + 2);
  ids_.assign(prompt_ids.end() - static_cast<std::ptrdiff_t>(keep), prompt_ids.end());
  num_context_ = ids_.size();
  read_offset_ = ids_.size();
  prefix_offset_ = ids_.size() > kInitialOffset ? ids_.size() - kInitialOffset : 0;
}

std::string IncrementalDetokenizer::push(int32_t id) {
  ids_.push_back(id);
  outputs_.push_back(id);
  const std::span<const int32_t> all(ids_);
  const std::string prefix_text =
      tokenizer_.decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string new_text = tokenizer_.decode(all.subspan(prefix_offset_), skip_special_);
  if (new_text.size() <= prefix_text.size() || ends_with_replacement(new_text)) return "";
  std::string out = text_after(new_text, prefix_text);
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return out;
}

std::string IncrementalDetokenizer::flush() {
  if (read_offset_ >= ids_.size()) return "";
  const std::span<const int32_t> all(ids_);
  const std::string prefix_text =
      tokenizer_.decode(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string new_text = tokenizer_.decode(all.subspan(prefix_offset_), skip_special_);
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  if (new_text.size() <= prefix_text.size()) return "";
  return text_after(new_text, prefix_text);
}

const std::vector<int32_t>& IncrementalDetokenizer::output_ids() const { return outputs_; }

StopStringMatcher::StopStringMatcher(std::vector<std::string> stop) {
  for (auto& s : stop) {
    if (!s.empty()) stop_.push_back(std::move(s));
  }
  for (const auto& s : stop_) max_len_ = std::max(max_len_, s.size());
}

std::string StopStringMatcher::push(std::string_view text) {
  if (stopped_) return "";
  // Search only where a match could not have been seen before: the held-back tail + text.
  pending_.append(text);
  size_t best = std::string::npos;
  const std::string* best_stop = nullptr;
  for (const auto& s : stop_) {
    const size_t p = pending_.find(s);
    if (p != std::string::npos && (p < best || (p == best && s.size() > best_stop->size()))) {
      best = p;
      best_stop = &s;
    }
  }
  if (best_stop != nullptr) {
    stopped_ = true;
    matched_ = *best_stop;
    std::string out = pending_.substr(0, best);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail of pending_ that is a proper prefix of some stop string.
  size_t hold = 0;
  const size_t max_hold = std::min(pending_.size(), max_len_ > 0 ? max_len_ - 1 : 0);
  for (size_t k = max_hold; k > 0; --k) {
    const std::string_view tail = std::string_view(pending_).substr(pending_.size() - k);
    bool prefix = false;
    for (const auto& s : stop_) {
      if (s.size() > k && s.compare(0, k, tail) == 0) {
        prefix = true;
        break;
      }
    }
    if (prefix) {
      hold = k;
      break;
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::flush() {
  if (stopped_) return "";
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace sw::tokenizer

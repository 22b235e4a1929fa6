// Small text helpers shared by the command-line parsers.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace sw {

// Every `sep`-separated field of `text`, spaces and tabs trimmed, empty ones kept — also a
// last one ("1,2," is three fields), which std::getline would drop — so that a caller can
// refuse them. "" is one empty field.
inline std::vector<std::string> split_fields(std::string_view text, char sep) {
  std::vector<std::string> out;
  size_t begin = 0;
  while (true) {
    const size_t end = std::min(text.find(sep, begin), text.size());
    std::string_view f = text.substr(begin, end - begin);
    const size_t a = f.find_first_not_of(" \t"), b = f.find_last_not_of(" \t");
    out.emplace_back(a == std::string_view::npos ? std::string_view() : f.substr(a, b - a + 1));
    if (end == text.size()) return out;
    begin = end + 1;
  }
}

}  // namespace sw

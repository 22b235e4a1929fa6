// Typed access to a JSON object whose errors name the file and the key path, e.g.
//   models/x/config.json: key 'num_attention_heads': expected an integer, got string "8"
// Integers are range-checked into their C++ type (never narrowed: 4294967301 is no int32 5);
// *_in() also checks a [lo, hi] range, as the bounds of common/limits.h.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/logging.h"
#include "common/status.h"

namespace sw {

// A JSON value as an error message quotes it, at most `max_chars` long. Containers are
// serialised only when shallow: nlohmann's dump() recurses once per nesting level, so a value
// nested a million levels deep (which parses fine) would overflow the stack.
inline std::string json_excerpt(const nlohmann::json& v, size_t max_chars = 60) {
  std::string s;
  if (v.is_structured()) {
    bool shallow = v.size() <= 16;
    for (const auto& e : v) shallow = shallow && !e.is_structured();
    if (!shallow)
      return fmt::format("{} ({} {}{})", v.is_array() ? "[...]" : "{...}", v.size(),
                         v.is_array() ? "element" : "key", v.size() == 1 ? "" : "s");
  }
  if (v.is_number_float() && !std::isfinite(v.get<double>()))
    s = fmt::format("{}", v.get<double>());  // dump() would print null
  else
    s = v.dump();
  if (s.size() > max_chars) s = s.substr(0, max_chars - 3) + "...";
  return s;
}

class JsonFields {
 public:
  JsonFields(const nlohmann::json& j, std::string source, std::string prefix = "")
      : j_(j), source_(std::move(source)), prefix_(std::move(prefix)) {}

  bool has(const std::string& key) const {
    return j_.is_object() && j_.contains(key) && !j_[key].is_null();
  }
  const nlohmann::json& raw(const std::string& key) const { return j_[key]; }
  std::string key_path(const std::string& key) const {
    return prefix_.empty() ? key : prefix_ + "." + key;
  }
  const std::string& source() const { return source_; }

  // Every key of the object is one of `allowed`; else "<source>: unknown key 'k' (expected
  // a, b)", the key escaped (printable) and cut to 64 bytes.
  Status only_keys(std::initializer_list<const char*> allowed) const {
    if (!j_.is_object()) return Status();
    for (const auto& item : j_.items()) {
      bool known = false;
      for (const char* k : allowed) known = known || item.key() == k;
      if (!known)
        return invalid_argument("{}: unknown key '{}' (expected {})", source_,
                                printable(item.key(), 64), fmt::join(allowed, ", "));
    }
    return Status();
  }

  template <typename T>
  Result<T> required(const std::string& key) const {
    if (!has(key)) return not_found("{}: missing required key '{}'", source_, key_path(key));
    return convert<T>(key, j_[key]);
  }

  template <typename T>
  Result<T> optional(const std::string& key, T fallback) const {
    if (!has(key)) return fallback;
    return convert<T>(key, j_[key]);
  }

  // Integers within [lo, hi]: "key 'vocab_size': expected an integer in [1, 4194304], got ...".
  template <typename T>
  Result<T> required_in(const std::string& key, T lo, T hi) const {
    static_assert(std::is_integral_v<T>);
    if (!has(key)) return not_found("{}: missing required key '{}'", source_, key_path(key));
    return in_range(key, j_[key], lo, hi);
  }
  template <typename T>
  Result<T> optional_in(const std::string& key, T fallback, T lo, T hi) const {
    static_assert(std::is_integral_v<T>);
    if (!has(key)) return fallback;
    return in_range(key, j_[key], lo, hi);
  }

  // A JSON number that is an exact integer representable as T (integers written as 4.0 or
  // 1e3 count; 4294967301 into int32 does not).
  template <typename T>
  static bool as_integer(const nlohmann::json& v, T* out) {
    static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
    if (v.is_number_unsigned()) {
      const uint64_t x = v.get<uint64_t>();
      if (!std::in_range<T>(x)) return false;
      *out = static_cast<T>(x);
      return true;
    }
    if (v.is_number_integer()) {
      const int64_t x = v.get<int64_t>();
      if (!std::in_range<T>(x)) return false;
      *out = static_cast<T>(x);
      return true;
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!std::isfinite(d) || d != std::trunc(d)) return false;
      // Casting a double outside the target's range is undefined: compare first, against
      // bounds that are exact powers of two.
      if (d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
        const int64_t x = static_cast<int64_t>(d);
        if (!std::in_range<T>(x)) return false;
        *out = static_cast<T>(x);
        return true;
      }
      if (d >= 0 && d < 18446744073709551616.0) {
        const uint64_t x = static_cast<uint64_t>(d);
        if (!std::in_range<T>(x)) return false;
        *out = static_cast<T>(x);
        return true;
      }
    }
    return false;
  }

 private:
  template <typename T>
  static std::string integer_range() {
    return fmt::format("an integer in [{}, {}]", std::numeric_limits<T>::min(),
                       std::numeric_limits<T>::max());
  }

  template <typename T>
  Result<T> in_range(const std::string& key, const nlohmann::json& v, T lo, T hi) const {
    T x{};
    if (!as_integer(v, &x) || x < lo || x > hi)
      return mismatch(key, fmt::format("an integer in [{}, {}]", lo, hi), v);
    return x;
  }

  template <typename T>
  Result<T> convert(const std::string& key, const nlohmann::json& v) const {
    if constexpr (std::is_same_v<T, bool>) {
      if (v.is_boolean()) return v.get<bool>();
      return mismatch(key, "a boolean", v);
    } else if constexpr (std::is_integral_v<T>) {
      T x{};
      if (as_integer(v, &x)) return x;
      return mismatch(key, integer_range<T>(), v);
    } else if constexpr (std::is_floating_point_v<T>) {
      // Finite and representable: a double beyond FLT_MAX does not silently become inf.
      if (v.is_number()) {
        const double d = v.get<double>();
        if (std::isfinite(d) && std::fabs(d) <= static_cast<double>(std::numeric_limits<T>::max()))
          return static_cast<T>(d);
      }
      return mismatch(key, "a finite number", v);
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (v.is_string()) return v.get<std::string>();
      return mismatch(key, "a string", v);
    } else if constexpr (std::is_same_v<T, std::vector<int>>) {
      if (!v.is_array()) return mismatch(key, "a list of integers", v);
      std::vector<int> out;
      out.reserve(v.size());
      for (const auto& e : v) {
        int x = 0;
        if (!as_integer(e, &x))
          return mismatch(key, "a list of integers, each " + integer_range<int>(), v);
        out.push_back(x);
      }
      return out;
    } else {
      static_assert(sizeof(T) == 0, "unsupported JsonFields type");
    }
  }

  Status mismatch(const std::string& key, const std::string& expected,
                  const nlohmann::json& v) const {
    return invalid_argument("{}: key '{}': expected {}, got {} {}", source_, key_path(key),
                            expected, v.type_name(), json_excerpt(v));
  }

  const nlohmann::json& j_;
  std::string source_;
  std::string prefix_;
};

}  // namespace sw

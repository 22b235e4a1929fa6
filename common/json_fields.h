// Typed access to a JSON object whose errors name the file and the key path, e.g.
//   models/x/config.json: key 'num_attention_heads': expected an integer, got string "8"
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "common/status.h"

namespace sw {

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

 private:
  template <typename T>
  Result<T> convert(const std::string& key, const nlohmann::json& v) const {
    if constexpr (std::is_same_v<T, bool>) {
      if (v.is_boolean()) return v.get<bool>();
      return mismatch(key, "a boolean", v);
    } else if constexpr (std::is_integral_v<T>) {
      if (v.is_number_integer()) return v.get<T>();
      if (v.is_number_float() &&
          v.get<double>() == static_cast<double>(static_cast<T>(v.get<double>())))
        return static_cast<T>(v.get<double>());
      return mismatch(key, "an integer", v);
    } else if constexpr (std::is_floating_point_v<T>) {
      if (v.is_number()) return v.get<T>();
      return mismatch(key, "a number", v);
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (v.is_string()) return v.get<std::string>();
      return mismatch(key, "a string", v);
    } else if constexpr (std::is_same_v<T, std::vector<int>>) {
      if (!v.is_array()) return mismatch(key, "a list of integers", v);
      std::vector<int> out;
      for (const auto& e : v) {
        if (!e.is_number_integer()) return mismatch(key, "a list of integers", v);
        out.push_back(e.get<int>());
      }
      return out;
    } else {
      static_assert(sizeof(T) == 0, "unsupported JsonFields type");
    }
  }

  Status mismatch(const std::string& key, const char* expected, const nlohmann::json& v) const {
    std::string shown = v.dump();
    if (shown.size() > 60) shown = shown.substr(0, 57) + "...";
    return invalid_argument("{}: key '{}': expected {}, got {} {}", source_, key_path(key),
                            expected, v.type_name(), shown);
  }

  const nlohmann::json& j_;
  std::string source_;
  std::string prefix_;
};

}  // namespace sw

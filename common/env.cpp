// Environment override registry.
#include "common/env.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <set>

namespace sw {

std::optional<std::string> env_override(const std::string& name) {
  SW_CHECK_MSG(name.rfind("SHARDWISE_", 0) == 0, "env override '{}' must start with SHARDWISE_",
               name);
  const char* v = std::getenv(name.c_str());
  if (!v) return std::nullopt;
  static std::mutex mu;
  static std::set<std::string> logged;
  std::lock_guard<std::mutex> lock(mu);
  if (logged.insert(name).second) spdlog::info("environment override {}={}", name, v);
  return std::string(v);
}

Result<std::optional<int64_t>> env_override_int(const std::string& name) {
  auto v = env_override(name);
  if (!v) return std::optional<int64_t>();
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno == ERANGE)
    return invalid_argument("environment variable {}='{}': expected a 64-bit integer", name, *v);
  return std::optional<int64_t>(x);
}

Result<std::optional<double>> env_override_double(const std::string& name) {
  auto v = env_override(name);
  if (!v) return std::optional<double>();
  char* end = nullptr;
  double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || !std::isfinite(x))
    return invalid_argument("environment variable {}='{}': expected a finite number", name, *v);
  return std::optional<double>(x);
}

}  // namespace sw

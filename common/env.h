// SHARDWISE_* environment overrides go through this one registry, which logs each value the
// first time it is used, so a run's log says which overrides were in force.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"

namespace sw {

// Returns the variable's value if set (name must start with SHARDWISE_).
std::optional<std::string> env_override(const std::string& name);
// Parsed forms: an unparsable value is an error naming the variable.
Result<std::optional<int64_t>> env_override_int(const std::string& name);
Result<std::optional<double>> env_override_double(const std::string& name);

}  // namespace sw

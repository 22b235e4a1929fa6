// Depth-bounded JSON parsing for client input (HTTP bodies, ZeroMQ frames): a SAX builder that
// refuses nesting deeper than a bound and, when asked, duplicate keys, before it builds them.
// Only nlohmann_json and common/status: the fuzzing build compiles it from source.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "common/status.h"

namespace sw::frontend {

// Parses `text` (one JSON value, UTF-8) into a DOM. Nesting deeper than `max_depth` arrays or
// objects (the outermost is depth 1), a duplicate key in one object (when
// `reject_duplicate_keys`), bad UTF-8 or bad syntax: an invalid_argument naming the byte
// offset. Never recurses per nesting level, so hostile input cannot overflow the stack.
Result<nlohmann::json> parse_json_bounded(std::string_view text, int max_depth,
                                          bool reject_duplicate_keys);

}  // namespace sw::frontend

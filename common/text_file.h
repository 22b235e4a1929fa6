// Reading a whole input file (config.json, cluster YAML, safetensors index) with a size
// bound, so that a huge or endless file (/dev/zero) is refused before it is buffered.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace sw {

// The file's bytes; kNotFound when it cannot be opened, kInvalidArgument when it holds more
// than `max_bytes` (the message names the file, `what` it is and the limit).
Result<std::string> read_text_file(const std::string& path, int64_t max_bytes, const char* what);

}  // namespace sw

// Logging setup: spdlog to stderr with the rank in every line. Use spdlog::info() etc.
#pragma once

#include <string>

namespace sw {

// level: trace|debug|info|warn|error|off. rank < 0 leaves the rank out of the pattern.
void init_logging(const std::string& level = "info", int rank = -1);
// Tags every later line with the rank (MPI programs, once the rank is known).
void set_log_rank(int rank);

}  // namespace sw

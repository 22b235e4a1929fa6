// Logging setup: spdlog to stderr with the rank in every line. Use spdlog::info() etc.
// Text that came from another process (peer ids, its error messages) goes through printable().
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sw {

// level: trace|debug|info|warn|error|off. rank < 0 leaves the rank out of the pattern.
void init_logging(const std::string& level = "info", int rank = -1);
// Tags every later line with the rank (MPI programs, once the rank is known).
void set_log_rank(int rank);

// `bytes` made safe for one log line: printable ASCII is kept, a backslash becomes \\ and every
// other byte (newline, escape, UTF-8) \xNN, so a peer cannot end the line or forge the next
// one; at most `max_bytes` input bytes, then "...(N bytes)".
std::string printable(std::string_view bytes, size_t max_bytes = 256);

}  // namespace sw

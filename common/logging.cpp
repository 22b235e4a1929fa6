// spdlog configuration shared by every process.
#include "common/logging.h"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace sw {

void init_logging(const std::string& level, int rank) {
  auto logger = spdlog::get("shardwise");
  if (!logger) logger = spdlog::stderr_color_mt("shardwise");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  set_log_rank(rank);
}

void set_log_rank(int rank) {
  if (rank >= 0)
    spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] [rank " + std::to_string(rank) + "] %v");
  else
    spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
}

std::string printable(std::string_view bytes, size_t max_bytes) {
  std::string out;
  const size_t n = std::min(bytes.size(), max_bytes);
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\\')
      out += "\\\\";
    else if (c >= 0x20 && c < 0x7f)
      out += static_cast<char>(c);
    else
      out += fmt::format("\\x{:02x}", c);
  }
  if (n < bytes.size()) out += fmt::format("...({} bytes)", bytes.size());
  return out;
}

}  // namespace sw

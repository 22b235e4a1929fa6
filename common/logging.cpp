// spdlog configuration shared by every process.
#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

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

}  // namespace sw

// Where the tests find the source tree, the fixtures and the `shardwise` executable: the
// paths compiled in, unless SHARDWISE_TEST_SOURCE_DIR / SHARDWISE_TEST_CLI say otherwise (test
// binaries carried to another machine in a bundle: bench/gpu/device_check.sh sets both).
#pragma once

#include <cstdlib>
#include <string>

namespace sw::testing_paths {

inline std::string source_dir() {
  const char* e = std::getenv("SHARDWISE_TEST_SOURCE_DIR");
  return e && *e ? std::string(e) : std::string(SHARDWISE_SOURCE_DIR);
}

inline std::string fixtures_dir() {
  const char* e = std::getenv("SHARDWISE_TEST_SOURCE_DIR");
  return e && *e ? std::string(e) + "/tests/fixtures" : std::string(SHARDWISE_FIXTURES_DIR);
}

inline std::string cli() {
  const char* e = std::getenv("SHARDWISE_TEST_CLI");
  return e && *e ? std::string(e) : std::string(SHARDWISE_CLI);
}

}  // namespace sw::testing_paths

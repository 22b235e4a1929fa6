// Runs a shell command line and keeps what it printed (stdout and stderr, interleaved): how
// the tests that drive the `shardwise` executable, alone or under mpirun, run it.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "tests/unit/test_paths.h"

namespace sw::testing_util {

struct CommandRun {
  int exit_code = -1;  // -1: could not start, or killed by a signal
  std::string out;     // stdout + stderr
};

inline CommandRun run_command(const std::string& cmd) {
  CommandRun r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// `shardwise <args>`; `prefix` runs first in the same shell (an export, a ulimit).
inline CommandRun run_cli(const std::string& args, const std::string& prefix = "") {
  return run_command(prefix + " " + testing_paths::cli() + " " + args);
}

}  // namespace sw::testing_util

// The `shardwise` executable: subcommand dispatch, --version, logging set-up, and the last
// line of defence: an exception that escapes a subcommand (std::bad_alloc included) becomes a
// one-line message and exit status 1, never an abort with a core dump.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>

#include "cli/commands.h"
#include "common/logging.h"

#ifndef SHARDWISE_VERSION
#define SHARDWISE_VERSION "0.0.0"
#endif

namespace {

int run(int argc, char** argv) {
  CLI::App app{"Shardwise: serve one LLM (dense or MoE) across many GPUs and nodes"};
  app.set_version_flag("--version", std::string("shardwise ") + SHARDWISE_VERSION);
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  auto run_generate = sw::cli::add_generate_command(app);
  auto run_plan = sw::cli::add_plan_command(app);
  auto run_serve = sw::cli::add_serve_command(app);
  auto run_bench = sw::cli::add_bench_command(app);
  CLI11_PARSE(app, argc, argv);
  sw::init_logging(log_level);
  for (CLI::App* sub : app.get_subcommands()) {
    if (sub->get_name() == "generate") return run_generate();
    if (sub->get_name() == "plan") return run_plan();
    if (sub->get_name() == "serve") return run_serve();
    if (sub->get_name() == "bench") return run_bench();
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "shardwise: out of memory (std::bad_alloc): the model, KV cache or batch does not "
                 "fit in this machine's memory; use smaller sizes or more ranks\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shardwise: unexpected error: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "shardwise: unexpected error (unknown exception)\n");
  }
  return 1;
}

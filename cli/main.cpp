// The `shardwise` executable: subcommand dispatch, --version, logging set-up.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "common/logging.h"

#ifndef SHARDWISE_VERSION
#define SHARDWISE_VERSION "0.0.0"
#endif

int main(int argc, char** argv) {
  CLI::App app{"Shardwise: serve one LLM (dense or MoE) across many GPUs and nodes"};
  app.set_version_flag("--version", std::string("shardwise ") + SHARDWISE_VERSION);
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  auto run_generate = sw::cli::add_generate_command(app);
  auto run_plan = sw::cli::add_plan_command(app);
  CLI11_PARSE(app, argc, argv);
  sw::init_logging(log_level);
  for (CLI::App* sub : app.get_subcommands()) {
    if (sub->get_name() == "generate") return run_generate();
    if (sub->get_name() == "plan") return run_plan();
  }
  return 1;
}

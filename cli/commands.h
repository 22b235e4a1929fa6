// Subcommands of the `shardwise` executable. Each registers its flags on a CLI11 app and
// returns the process exit code when run. Add one: declare it here, define it in its own
// file, register it in main.cpp, and document it in docs/cli.md.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace sw::cli {

// Registers `generate` on `app`; the returned function runs it (exit code).
std::function<int()> add_generate_command(CLI::App& app);
// Registers `plan` (cluster YAML -> partition plan as a table or JSON).
std::function<int()> add_plan_command(CLI::App& app);
// Registers `serve` (the engine behind a ZeroMQ endpoint).
std::function<int()> add_serve_command(CLI::App& app);
// Registers `bench` with `throughput` (in-process load) and `serve` (against a server).
std::function<int()> add_bench_command(CLI::App& app);

}  // namespace sw::cli

// The start of an MPI program (the comm benchmark and the multi-rank test mains): MPI with
// serialized threads, logging tagged by world rank, and a command line whose errors (and
// --help) end the program with MPI finalized. Header-only: include it only from targets that
// link CLI11.
#pragma once

#include <mpi.h>

#include <CLI/CLI.hpp>
#include <optional>

#include "common/logging.h"

namespace sw::comm {

// MPI_Init_thread(MPI_THREAD_SERIALIZED) and warn-level logging; returns the world rank.
inline int start_mpi_program(int* argc, char*** argv) {
  int provided = 0, rank = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  init_logging("warn", rank);
  return rank;
}

// Parses argv; on a parse error or --help prints as CLI11 does, finalizes MPI and returns the
// exit code the program should return. nullopt: carry on.
inline std::optional<int> parse_or_finish(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    MPI_Finalize();
    return rc;
  }
  return std::nullopt;
}

}  // namespace sw::comm

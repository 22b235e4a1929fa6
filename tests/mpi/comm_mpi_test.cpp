// Multi-rank driver of the self-checking suite on MpiComm (run under mpirun by ctest), and
// the MPI bounded-wait test. Exit status 0 only if every rank of every case checked out, so
// mpirun's status is the verdict.
//   comm_mpi_test [--ranks-per-node R] [--group FIRST LAST] [--timeout-test] [--timeout S]
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <thread>

#include "comm/mpi/mpi_comm.h"
#include "comm/mpi/mpi_program.h"
#include "common/logging.h"
#include "tests/mpi/comm_suite.h"

namespace {

using sw::comm::Communicator;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// One rank skips an all_reduce; the others must fail within the deadline with a message
// naming op, group, rank and the missing peer. Returns this rank's failure count.
int timeout_test(Communicator& world, double timeout_s) {
  const int skipper = world.size() - 1;
  int failures = 0;
  if (world.rank() != skipper) {
    std::vector<float> x(1024, 1.0f), y(1024);
    auto t0 = std::chrono::steady_clock::now();
    sw::Status s = world.all_reduce(x.data(), y.data(), 1024, sw::DType::kF32);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string& m = s.message();
    std::string want_rank = fmt::format("rank {} (world rank {})", world.rank(), world.rank());
    std::string want_peer =
        fmt::format("peers that never arrived: [{}] (world ranks [{}])", skipper, skipper);
    bool ok = s.code() == sw::StatusCode::kDeadlineExceeded &&
              m.find("all_reduce on group 'world'") != std::string::npos &&
              m.find(want_rank) != std::string::npos && m.find(want_peer) != std::string::npos &&
              dt >= 0.9 * timeout_s && dt < timeout_s + 3.0;
    fmt::print(stderr, "[rank {}] timed-out all_reduce after {:.2f} s: {} -> {}\n", world.rank(),
               dt, s.to_string(), ok ? "as expected" : "UNEXPECTED");
    failures += !ok;
    // The broken communicator refuses further work instead of mismatching messages.
    sw::Status again = world.barrier();
    failures += again.code() != sw::StatusCode::kUnavailable;
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  sw::comm::start_mpi_program(&argc, &argv);
  CLI::App app{"comm MPI self-checking suite"};
  int ranks_per_node = 0;
  std::vector<int> group;
  bool timeout_mode = false;
  double timeout_s = 10;
  app.add_option("--ranks-per-node", ranks_per_node, "emulated ranks per node (0 = detect)");
  app.add_option("--group", group, "FIRST LAST: run on the sub-group of world ranks")->expected(2);
  app.add_flag("--timeout-test", timeout_mode, "one rank skips a collective");
  app.add_option("--timeout", timeout_s, "comm.timeout_s");
  if (auto rc = sw::comm::parse_or_finish(app, argc, argv)) return *rc;
  sw::comm::CommOptions opts;
  opts.ranks_per_node = ranks_per_node;
  opts.timeout_s = timeout_s;
  int64_t wrong = 0;
  {
    auto world = sw::comm::MpiComm::create_world(opts);
    if (!world.ok()) {
      fmt::print(stderr, "create_world: {}\n", world.status().to_string());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (timeout_mode) {
      wrong = timeout_test(**world, timeout_s);
    } else {
      Communicator* c = world->get();
      std::unique_ptr<Communicator> sub;
      bool member = true;
      if (!group.empty()) {
        member = world_rank() >= group[0] && world_rank() <= group[1];
        auto s = (*world)->split(member ? 0 : -1, world_rank());
        if (!s.ok()) {
          fmt::print(stderr, "split: {}\n", s.status().to_string());
          MPI_Abort(MPI_COMM_WORLD, 2);
        }
        sub = std::move(s).value();
        if (member) c = sub.get();
      }
      if (member) {
        if (c->rank() == 0)
          fmt::print("group '{}' of {} ranks on {}\n", c->name(), c->size(),
                     c->topology().describe());
        auto rep = sw::comm::testing::run_comm_suite(*c, 42 + c->size());
        for (const auto& n : rep.notes) fmt::print(stderr, "[rank {}] FAIL {}\n", world_rank(), n);
        wrong = rep.wrong;
      }
    }
  }
  // Verdict over plain MPI_COMM_WORLD: works even when a communicator under test is broken.
  int64_t total = 0;
  MPI_Allreduce(&wrong, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  if (world_rank() == 0)
    fmt::print("{}: {} wrong (summed over ranks)\n", total == 0 ? "PASS" : "FAIL", total);
  MPI_Finalize();
  return total == 0 ? 0 : 1;
}

// Multi-rank check of moe::ExpertDispatcher on MpiComm (run under mpirun by ctest): every
// rank rebuilds the whole seeded batch, runs the single-rank moe_ffn on its own slice as the
// reference, and runs moe_ffn_ep flat and hierarchical. Exit 0 only if every rank matched.
//   moe_ep_mpi_test [--ranks-per-node R]   (dropless, then capacity factor 0.75)
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "comm/mpi/mpi_comm.h"
#include "comm/mpi/mpi_program.h"
#include "common/logging.h"
#include "moe/capacity.h"
#include "moe/expert_dispatcher.h"

namespace {

using namespace sw;

// Tokens on rank r: uneven, rank 1 empty.
int64_t tokens_of(int r) { return r == 1 ? 0 : 5 + 7 * r; }

// Returns this rank's count of failed checks.
int64_t run_case(comm::Communicator& world, std::optional<double> capacity_factor) {
  const int S = world.size(), me = world.rank(), k = 2, E = 2 * S;
  const int64_t H = 16, I = 24;
  int64_t T_all = 0, first = 0;
  for (int r = 0; r < S; ++r) {
    if (r == me) first = T_all;
    T_all += tokens_of(r);
  }
  const int64_t T = tokens_of(me);
  std::mt19937 g(1234);
  std::normal_distribution<float> n(0.f, 1.f);
  auto randn = [&](int64_t count, float scale) {
    std::vector<float> v(count);
    for (auto& x : v) x = scale * n(g);
    return v;
  };
  Tensor router = Tensor::from_floats(randn(E * H, 1.f), {E, H});
  Tensor gate_up = Tensor::from_floats(randn(E * 2 * I * H, 0.2f), {E, 2 * I, H});
  Tensor down = Tensor::from_floats(randn(E * H * I, 0.2f), {E, H, I});
  Tensor x_all = Tensor::from_floats(randn(T_all * H, 1.f), {T_all, H});
  Tensor x = x_all.rows(first, first + T);
  auto b = kernels::make_cpu_backend(1);
  moe::MoeOptions o;
  o.top_k = k;
  o.capacity = moe::expert_capacity(capacity_factor, k, T, E);
  o.policy = kernels::DropPolicy::kPriorityMax;
  // Per-source capacity: the reference is this rank's own slice through the single-rank FFN.
  Tensor ref = Tensor::empty({T, H}, DType::kF32);
  int64_t wrong = 0;
  if (T > 0 && !moe::moe_ffn(*b, x, router, gate_up, down, o, ref).ok()) ++wrong;
  std::vector<std::vector<float>> outs;
  for (auto algo : {comm::AllToAllAlgorithm::kFlat, comm::AllToAllAlgorithm::kHierarchical}) {
    auto disp = moe::ExpertDispatcher::create(*b, world, E, algo);
    if (!disp.ok()) {
      fmt::print(stderr, "[rank {}] create: {}\n", me, disp.status().to_string());
      return wrong + 1;
    }
    const int El = E / S;
    Tensor out = Tensor::empty({T, H}, DType::kF32);
    Status s = (*disp)->moe_ffn_ep(x, router, gate_up.rows(me * El, (me + 1) * El),
                                   down.rows(me * El, (me + 1) * El), o, out);
    if (!s.ok()) {
      fmt::print(stderr, "[rank {}] moe_ffn_ep: {}\n", me, s.to_string());
      return wrong + 1;
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < T * H; ++i) {
      const double d = out.data_as<float>()[i] - ref.data_as<float>()[i];
      num += d * d;
      den += double(ref.data_as<float>()[i]) * ref.data_as<float>()[i];
    }
    if (T > 0 && std::sqrt(num / std::max(den, 1e-30)) > 1e-5) {
      fmt::print(stderr, "[rank {}] {}: rel L2 {:.3g} vs single-rank\n", me,
                 comm::all_to_all_algorithm_name(algo), std::sqrt(num / den));
      ++wrong;
    }
    outs.push_back(out.to_floats());
  }
  if (std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(float)) != 0) {
    fmt::print(stderr, "[rank {}] flat and hierarchical outputs differ\n", me);
    ++wrong;
  }
  return wrong;
}

}  // namespace

int main(int argc, char** argv) {
  const int rank = sw::comm::start_mpi_program(&argc, &argv);
  CLI::App app{"ExpertDispatcher under MPI"};
  int ranks_per_node = 0;
  app.add_option("--ranks-per-node", ranks_per_node, "emulated ranks per node (0 = detect)");
  if (auto rc = sw::comm::parse_or_finish(app, argc, argv)) return *rc;
  sw::comm::CommOptions opts;
  opts.ranks_per_node = ranks_per_node;
  opts.timeout_s = 30;
  int64_t wrong = 0;
  {
    auto world = sw::comm::MpiComm::create_world(opts);
    if (!world.ok()) {
      fmt::print(stderr, "create_world: {}\n", world.status().to_string());
      MPI_Abort(MPI_COMM_WORLD, 2);
    }
    wrong += run_case(**world, std::nullopt);
    wrong += run_case(**world, 0.75);
  }
  int64_t total = 0;
  MPI_Allreduce(&wrong, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0)
    fmt::print("{}: {} wrong (summed over ranks)\n", total == 0 ? "PASS" : "FAIL", total);
  MPI_Finalize();
  return total == 0 ? 0 : 1;
}

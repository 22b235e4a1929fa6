// comm_bench: nccl-tests-style sweep of every collective (and flat vs hierarchical
// all-to-all with uneven counts) over a size range, run under mpirun. Prints
// op / bytes / time / algbw / busbw / #wrong, fits alpha and beta per link class from
// ping-pongs, and writes JSON. Add an op: one more Case in make_cases().
//   mpirun -np 8 comm_bench --ranks-per-node 4 [--max-bytes N] [--backend mpi|nccl] [--device]
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "comm/cost_model.h"
#include "comm/device_memory.h"
#include "comm/hierarchical_all_to_all.h"
#include "comm/mpi/mpi_comm.h"
#include "comm/mpi/mpi_program.h"
#include "common/logging.h"
#include "common/rng.h"
#include "common/tensor.h"
#if SHARDWISE_COMM_HAVE_NCCL
#include "comm/nccl/nccl_comm.h"
#endif

namespace {

using sw::DType;
using sw::Status;
using sw::comm::Communicator;

float pattern(uint64_t seed, int rank, int64_t i) {
  return static_cast<float>(static_cast<int>(sw::philox4x32(seed, rank, i).v[0] % 33) - 16);
}

// Buffers live on the host, or on the device (copied around each check) with --device.
struct Buffer {
  std::vector<char> host;
  std::shared_ptr<void> dev;
  size_t bytes = 0;
  void* ptr() { return dev ? dev.get() : host.data(); }
  void resize(size_t n, bool device) {
    bytes = n;
    host.assign(n + 1, 0);
    if (device) dev = sw::comm::alloc_device(n + 1);
  }
  Status upload() {
    return dev ? sw::comm::copy_host_to_device(dev.get(), host.data(), bytes) : Status();
  }
  Status download() {
    return dev ? sw::comm::copy_device_to_host(host.data(), dev.get(), bytes) : Status();
  }
};

struct Case {
  std::string op;
  double busbw_factor;
  // prepare(bytes): fills inputs, returns the op's nominal size in bytes (nccl-tests sense).
  std::function<size_t(size_t)> prepare;
  std::function<Status()> run;
  std::function<int64_t()> check;  // wrong elements on this rank after one run
  std::function<int64_t()> messages = [] { return int64_t{-1}; };
};

int64_t a2a_count(uint64_t seed, int src, int dst, int64_t mean) {
  uint32_t h = sw::philox4x32(seed, src, dst).v[2];
  if (h % 5 == 0) return 0;                                           // zero rows
  return static_cast<int64_t>((h % 1000) * 2 * mean / 1000 * 5 / 4);  // uneven around mean
}

std::vector<Case> make_cases(Communicator& c, sw::comm::HierarchicalAllToAll* hier, bool device,
                             Buffer& in, Buffer& out) {
  const int S = c.size(), me = c.rank();
  std::vector<Case> cases;
  auto fill = [=, &in](size_t n_elems, uint64_t seed, DType dt) {
    for (size_t i = 0; i < n_elems; ++i)
      sw::store_float(in.host.data(), dt, i, pattern(seed, me, i));
  };
  auto sum_at = [=](uint64_t seed, int64_t i) {
    float e = 0;
    for (int r = 0; r < S; ++r) e += pattern(seed, r, i);
    return e;
  };
  static int64_t n;  // elements of the current size
  for (DType dt : {DType::kF32, DType::kBF16}) {
    cases.push_back(Case{fmt::format("all_reduce_{}", dt == DType::kF32 ? "f32" : "bf16"),
                         2.0 * (S - 1) / S,
                         [=, &c, &in, &out](size_t bytes) {
                           n = bytes / sw::dtype_size(dt);
                           in.resize(n * sw::dtype_size(dt), device);
                           out.resize(n * sw::dtype_size(dt), device);
                           fill(n, 1, dt);
                           (void)in.upload();
                           return n * sw::dtype_size(dt);
                         },
                         [=, &c, &in, &out] { return c.all_reduce(in.ptr(), out.ptr(), n, dt); },
                         [=, &c, &in, &out] {
                           (void)out.download();
                           int64_t bad = 0;
                           for (int64_t i = 0; i < n; ++i)
                             bad += sw::load_float(out.host.data(), dt, i) != sum_at(1, i);
                           return bad;
                         }});
  }
  cases.push_back(
      Case{"all_gather", double(S - 1) / S,
           [=, &c, &in, &out](size_t bytes) {
             n = std::max<int64_t>(1, bytes / 4 / S);
             in.resize(n * 4, device);
             out.resize(n * 4 * S, device);
             fill(n, 2, DType::kF32);
             (void)in.upload();
             return size_t(n) * 4 * S;
           },
           [=, &c, &in, &out] { return c.all_gather(in.ptr(), out.ptr(), n, DType::kF32); },
           [=, &c, &in, &out] {
             (void)out.download();
             const float* o = reinterpret_cast<const float*>(out.host.data());
             int64_t bad = 0;
             for (int r = 0; r < S; ++r)
               for (int64_t i = 0; i < n; ++i) bad += o[r * n + i] != pattern(2, r, i);
             return bad;
           }});
  cases.push_back(
      Case{"reduce_scatter", double(S - 1) / S,
           [=, &c, &in, &out](size_t bytes) {
             n = std::max<int64_t>(1, bytes / 4 / S);
             in.resize(n * 4 * S, device);
             out.resize(n * 4, device);
             fill(n * S, 3, DType::kF32);
             (void)in.upload();
             return size_t(n) * 4 * S;
           },
           [=, &c, &in, &out] { return c.reduce_scatter(in.ptr(), out.ptr(), n, DType::kF32); },
           [=, &c, &in, &out] {
             (void)out.download();
             const float* o = reinterpret_cast<const float*>(out.host.data());
             int64_t bad = 0;
             for (int64_t i = 0; i < n; ++i) bad += o[i] != sum_at(3, me * n + i);
             return bad;
           }});
  cases.push_back(Case{"broadcast", 1.0,
                       [=, &c, &in, &out](size_t bytes) {
                         n = bytes / 4;
                         in.resize(n * 4, device);
                         fill(n, 4, DType::kF32);
                         (void)in.upload();
                         return size_t(n) * 4;
                       },
                       [=, &c, &in, &out] { return c.broadcast(in.ptr(), n, DType::kF32, 0); },
                       [=, &c, &in, &out] {
                         (void)in.download();
                         const float* o = reinterpret_cast<const float*>(in.host.data());
                         int64_t bad = 0;
                         for (int64_t i = 0; i < n; ++i) bad += o[i] != pattern(4, 0, i);
                         fill(n, 4, DType::kF32);  // restore this rank's input for the next run
                         (void)in.upload();
                         return bad;
                       }});
  // all-to-all with uneven counts: flat vs hierarchical on the same counts and data.
  static std::vector<int64_t> sc, sd, rc, rd;
  static sw::comm::HierarchicalAllToAll::Plan plan;
  static int64_t sent_msgs = -1;
  auto a2a_prepare = [=, &c, &in, &out](size_t bytes) {
    const int64_t mean = std::max<int64_t>(1, bytes / 4 / S);
    sc.assign(S, 0), sd.assign(S, 0), rc.assign(S, 0), rd.assign(S, 0);
    int64_t st = 0, rt = 0, global = 0;
    for (int p = 0; p < S; ++p) {
      sc[p] = a2a_count(bytes, me, p, mean);
      sd[p] = st;
      st += sc[p];
      rc[p] = a2a_count(bytes, p, me, mean);
      rd[p] = rt;
      rt += rc[p];
      for (int q = 0; q < S; ++q) global += a2a_count(bytes, q, p, mean);
    }
    in.resize(st * 4, device);
    out.resize(rt * 4, device);
    int32_t* x = reinterpret_cast<int32_t*>(in.host.data());
    for (int p = 0; p < S; ++p)
      for (int64_t j = 0; j < sc[p]; ++j) x[sd[p] + j] = (me << 24) ^ (p << 16) ^ int32_t(j);
    (void)in.upload();
    if (hier) {
      auto p = hier->plan(sc, rc);
      if (p.ok()) plan = std::move(p).value();
    }
    return size_t(global * 4 / S);  // mean bytes sent per rank
  };
  auto a2a_check = [=, &c, &in, &out] {
    (void)out.download();
    const int32_t* y = reinterpret_cast<const int32_t*>(out.host.data());
    int64_t bad = 0;
    for (int p = 0; p < S; ++p)
      for (int64_t j = 0; j < rc[p]; ++j)
        bad += y[rd[p] + j] != ((p << 24) ^ (me << 16) ^ int32_t(j));
    std::memset(out.host.data(), 0, out.host.size());
    (void)out.upload();
    return bad;
  };
  cases.push_back(Case{"all_to_all_v_flat", double(S - 1) / S, a2a_prepare,
                       [=, &c, &in, &out] {
                         auto before = c.stats().messages_sent;
                         Status s =
                             c.all_to_all_v(in.ptr(), sc, sd, out.ptr(), rc, rd, DType::kI32);
                         sent_msgs = c.stats().messages_sent - before;
                         return s;
                       },
                       a2a_check, [] { return sent_msgs; }});
  if (hier)
    cases.push_back(Case{"all_to_all_v_hier", double(S - 1) / S, a2a_prepare,
                         [=, &c, &in, &out] {
                           return hier->execute(plan, in.ptr(), sd, out.ptr(), rd, DType::kI32);
                         },
                         a2a_check, [hier] { return hier->last_messages_sent(); }});
  return cases;
}

double max_over_ranks(double x) {
  double y = 0;
  MPI_Allreduce(&x, &y, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return y;
}
int64_t sum_over_ranks(int64_t x) {
  int64_t y = 0;
  MPI_Allreduce(&x, &y, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return y;
}

// One-way time of a ping-pong between group ranks a and b for each size (others idle).
std::vector<double> ping_pong(Communicator& c, int a, int b, const std::vector<double>& sizes,
                              int iters) {
  std::vector<double> out;
  std::vector<char> buf(static_cast<size_t>(sizes.back()) + 1);
  for (double sz : sizes) {
    const int64_t n = static_cast<int64_t>(sz);
    (void)c.barrier();
    double t = 0;
    // Best of 3 repetitions: on an oversubscribed machine the minimum is the link, the rest
    // is scheduling noise.
    for (int rep = 0; rep < 3 && (c.rank() == a || c.rank() == b); ++rep) {
      const int peer = c.rank() == a ? b : a;
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) {
        if (c.rank() == a) {
          (void)c.send(buf.data(), n, DType::kU8, peer, 1);
          (void)c.recv(buf.data(), n, DType::kU8, peer, 2);
        } else {
          (void)c.recv(buf.data(), n, DType::kU8, peer, 1);
          (void)c.send(buf.data(), n, DType::kU8, peer, 2);
        }
      }
      double one_way =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters / 2;
      t = rep == 0 ? one_way : std::min(t, one_way);
    }
    out.push_back(max_over_ranks(t));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const int world_rank = sw::comm::start_mpi_program(&argc, &argv);
  CLI::App app{"Shardwise communication benchmark (run under mpirun)"};
  sw::comm::CommOptions opts;
  size_t min_bytes = 64, max_bytes = size_t{1} << 20;
  int iters = 10, warmup = 2;
  std::string json_path = "comm_bench.json", backend = "mpi";
  bool device = false;
  app.add_option("--ranks-per-node", opts.ranks_per_node, "emulated ranks per node (0 = detect)");
  app.add_option("--min-bytes", min_bytes, "smallest size");
  app.add_option("--max-bytes", max_bytes, "largest size (x4 steps)");
  app.add_option("--iters", iters, "timed iterations per size");
  app.add_option("--warmup", warmup, "untimed iterations per size");
  app.add_option("--timeout", opts.timeout_s, "comm.timeout_s");
  app.add_option("--json", json_path, "JSON output");
  app.add_option("--backend", backend, "mpi | nccl (NCCL needs one GPU per rank)")
      ->check(CLI::IsMember({"mpi", "nccl"}));
  app.add_flag("--device", device, "device buffers (MPI stages them through pinned host memory)");
  if (auto rc = sw::comm::parse_or_finish(app, argc, argv)) return *rc;
  auto fail = [&](const Status& s) {
    fmt::print(stderr, "[rank {}] comm_bench: {}\n", world_rank, s.to_string());
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  };
  if (Status s = sw::comm::apply_env_overrides(&opts); !s.ok()) return fail(s);
  auto mpi = sw::comm::MpiComm::create_world(opts);
  if (!mpi.ok()) return fail(mpi.status());
  std::unique_ptr<Communicator> comm = std::move(mpi).value();
  if (backend == "nccl") {
#if SHARDWISE_COMM_HAVE_NCCL
    device = true;
    int ngpu = sw::comm::cuda_device_count();
    if (ngpu <= 0) return fail(sw::unavailable("--backend nccl: no GPU visible"));
    auto nccl = sw::comm::NcclComm::create(std::move(comm), world_rank % ngpu, nullptr);
    if (!nccl.ok()) return fail(nccl.status());
    comm = std::move(nccl).value();
#else
    return fail(sw::invalid_argument("--backend nccl: this build has no NCCL"));
#endif
  }
  if (device && sw::comm::cuda_device_count() <= 0)
    return fail(sw::unavailable("--device: no GPU visible"));
  Communicator& c = *comm;
  const sw::comm::Topology& topo = c.topology();
  std::unique_ptr<sw::comm::HierarchicalAllToAll> hier;
  if (topo.num_nodes() > 1) {
    auto h = sw::comm::HierarchicalAllToAll::create(c);
    if (!h.ok()) return fail(h.status());
    hier = std::move(h).value();
  }
  Buffer in, out;
  auto cases = make_cases(c, hier.get(), device, in, out);
  const bool root = c.rank() == 0;
  if (root) {
    fmt::print("# comm_bench: {} ranks, transport {}{}, {}\n", c.size(), c.transport(),
               device ? " (device buffers)" : "", topo.describe());
    fmt::print("# {:>18} {:>12} {:>11} {:>10} {:>10} {:>7} {:>6}\n", "op", "bytes", "time(us)",
               "algbw GB/s", "busbw GB/s", "#wrong", "msgs");
  }
  nlohmann::json results = nlohmann::json::array();
  int64_t all_wrong = 0;
  for (auto& cs : cases) {
    for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
      size_t nominal = cs.prepare(bytes);
      Status st;
      for (int i = 0; i < warmup && st.ok(); ++i) st = cs.run();
      int64_t wrong = st.ok() ? cs.check() : -1;
      if (st.ok()) st = c.barrier();
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters && st.ok(); ++i) st = cs.run();
      double t =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
      if (!st.ok()) return fail(st);
      if (wrong == 0) wrong = cs.check();  // the timed runs must be right too
      (void)cs.prepare(bytes);
      t = max_over_ranks(t);
      wrong = sum_over_ranks(wrong);
      const int64_t msgs = static_cast<int64_t>(max_over_ranks(double(cs.messages())));
      all_wrong += wrong;
      const double algbw = nominal / t / 1e9, busbw = algbw * cs.busbw_factor;
      if (root) {
        fmt::print("  {:>18} {:>12} {:>11.1f} {:>10.3f} {:>10.3f} {:>7} {:>6}\n", cs.op, nominal,
                   t * 1e6, algbw, busbw, wrong, msgs >= 0 ? fmt::to_string(msgs) : "-");
        results.push_back({{"op", cs.op},
                           {"bytes", nominal},
                           {"time_us", t * 1e6},
                           {"algbw_GBps", algbw},
                           {"busbw_GBps", busbw},
                           {"wrong", wrong},
                           {"max_messages_per_rank", msgs}});
      }
    }
  }
  // alpha-beta per link class from ping-pongs: rank 0 with a node mate, and with a rank on
  // another node.
  nlohmann::json fits = nlohmann::json::object();
  std::vector<double> sizes;
  for (double s = 8; s <= double(max_bytes); s *= 8) sizes.push_back(s);
  if (sizes.size() < 2) sizes = {8, 4096};
  auto fit_link = [&](const char* name, int peer) {
    if (peer < 0) return;
    auto secs = ping_pong(c, 0, peer, sizes, std::max(4, iters));
    auto f = sw::comm::fit_alpha_beta(sizes, secs);
    if (root && f.ok()) {
      fmt::print(
          "# fit {:<10} (rank 0 <-> rank {}): alpha = {:.2f} us, beta = {:.3f} GB/s, r2 = {:.3f}\n",
          name, peer, f->link.alpha_s * 1e6, f->link.beta_bytes_per_s / 1e9, f->r2);
      fits[name] = {{"peer", peer},
                    {"alpha_us", f->link.alpha_s * 1e6},
                    {"beta_GBps", f->link.beta_bytes_per_s / 1e9},
                    {"r2", f->r2}};
    }
  };
  int intra_peer = topo.num_local(topo.node_of(0)) > 1 ? topo.rank_at(topo.node_of(0), 1) : -1;
  int inter_peer = topo.num_nodes() > 1 ? topo.rank_at(topo.node_of(0) == 0 ? 1 : 0, 0) : -1;
  fit_link("intra_node", intra_peer);
  fit_link("inter_node", inter_peer);
  if (root) {
    sw::comm::CostModel model = sw::comm::CostModel::from_options(opts);
    std::string choices;
    for (double b : {1e3, 1e5, 1e7})
      choices += fmt::format(" {:g}B/pair->{}", b,
                             sw::comm::all_to_all_algorithm_name(sw::comm::choose_all_to_all(
                                 sw::comm::AllToAllAlgorithm::kAuto, topo, b, model)));
    fmt::print("# all_to_all auto (configured alpha/beta):{}\n", choices);
    fmt::print("# total #wrong = {}\n", all_wrong);
    nlohmann::json j = {{"world_size", c.size()},
                        {"transport", c.transport()},
                        {"device_buffers", device},
                        {"ranks_per_node", opts.ranks_per_node},
                        {"topology", topo.describe()},
                        {"results", results},
                        {"fit", fits},
                        {"total_wrong", all_wrong}};
    std::ofstream(json_path) << j.dump(2) << "\n";
    fmt::print("# wrote {}\n", json_path);
  }
  comm.reset();
  MPI_Finalize();
  return all_wrong == 0 ? 0 : 1;
}

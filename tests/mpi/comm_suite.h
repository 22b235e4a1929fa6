// The self-checking communicator suite shared by the loopback unit test and the MPI
// multi-rank tests: inputs are a function of (seed, rank, index), so every rank computes its
// expected output locally; run_comm_suite() returns this rank's wrong-element count, which
// callers sum over ranks. Add a case: a function below that returns its wrong count and a
// line in run_comm_suite().
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/hierarchical_all_to_all.h"
#include "common/rng.h"
#include "common/tensor.h"

namespace sw::comm::testing {

struct SuiteReport {
  int64_t wrong = 0;
  std::vector<std::string> notes;  // first failures, for the log
  void fail(int64_t n, std::string what) {
    if (n == 0) return;
    wrong += n;
    if (notes.size() < 8) notes.push_back(fmt::format("{} ({} wrong)", what, n));
  }
};

// Small integers in [-16, 16]: sums over <= 8 ranks are exact in f32 and bf16, so the
// expected value does not depend on summation order.
inline float pattern(uint64_t seed, int rank, int64_t i) {
  return static_cast<float>(static_cast<int>(philox4x32(seed, rank, i).v[0] % 33) - 16);
}
inline uint32_t hash32(uint64_t seed, int64_t a, int64_t b) {
  return philox4x32(seed, static_cast<uint64_t>(a), static_cast<uint64_t>(b)).v[1];
}

// a2a data: element j of the block src -> dst.
inline int32_t a2a_value(uint64_t seed, int src, int dst, int64_t j) {
  return static_cast<int32_t>(hash32(seed ^ 0xa2a, src * 1000 + dst, j) & 0x7fffffff);
}
// Uneven counts with zero rows; rank 1 (when present) sends nothing at all.
inline int64_t a2a_count(uint64_t seed, int src, int dst, int size) {
  if (size > 1 && src == 1) return 0;
  uint32_t h = hash32(seed ^ 0xc0, src, dst);
  if (h % 4 == 0) return 0;
  return static_cast<int64_t>(h % 37);
}

inline Status check_status(SuiteReport* rep, const Status& s, const char* what) {
  if (!s.ok()) rep->fail(1, fmt::format("{}: {}", what, s.to_string()));
  return s;
}

inline void case_all_reduce(Communicator& c, uint64_t seed, SuiteReport* rep) {
  for (int64_t n : {0, 1, 7, 769, 5125}) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      size_t es = dtype_size(dt);
      std::vector<char> in(n * es + 1), out(n * es + 1);
      for (int64_t i = 0; i < n; ++i) store_float(in.data(), dt, i, pattern(seed + n, c.rank(), i));
      const bool in_place = n == 769;
      if (in_place) out = in;
      if (!check_status(rep, c.all_reduce(in_place ? out.data() : in.data(), out.data(), n, dt),
                        "all_reduce")
               .ok())
        return;
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        float e = 0;
        for (int r = 0; r < c.size(); ++r) e += pattern(seed + n, r, i);
        bad += load_float(out.data(), dt, i) != e;
      }
      rep->fail(
          bad, fmt::format("all_reduce {} n={}{}", dtype_name(dt), n, in_place ? " in-place" : ""));
    }
  }
}

inline void case_all_reduce_async(Communicator& c, uint64_t seed, SuiteReport* rep) {
  const int64_t n = 333;
  std::vector<float> a(n), b(n), ra(n), rb(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = pattern(seed, c.rank(), i);
    b[i] = pattern(seed + 1, c.rank(), i);
  }
  auto wa = c.all_reduce_async(a.data(), ra.data(), n, DType::kF32);
  if (!check_status(rep, wa.status(), "all_reduce_async").ok()) return;
  auto wb = c.all_reduce_async(b.data(), rb.data(), n, DType::kF32);
  if (!check_status(rep, wb.status(), "all_reduce_async").ok()) return;
  if (!check_status(rep, wb->wait(), "wait b").ok() ||
      !check_status(rep, wa->wait(), "wait a").ok())
    return;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    float ea = 0, eb = 0;
    for (int r = 0; r < c.size(); ++r) {
      ea += pattern(seed, r, i);
      eb += pattern(seed + 1, r, i);
    }
    bad += (ra[i] != ea) + (rb[i] != eb);
  }
  rep->fail(bad, "two overlapping all_reduce_async");
}

inline void case_all_gather(Communicator& c, uint64_t seed, SuiteReport* rep) {
  for (int64_t n : {0, 7, 769}) {
    std::vector<float> in(n), out(n * c.size() + 1, -99.0f);
    for (int64_t i = 0; i < n; ++i) in[i] = pattern(seed, c.rank(), i);
    if (!check_status(rep, c.all_gather(in.data(), out.data(), n, DType::kF32), "all_gather").ok())
      return;
    int64_t bad = out.back() != -99.0f;
    for (int r = 0; r < c.size(); ++r)
      for (int64_t i = 0; i < n; ++i) bad += out[r * n + i] != pattern(seed, r, i);
    rep->fail(bad, fmt::format("all_gather n={}", n));
  }
}

inline void case_reduce_scatter(Communicator& c, uint64_t seed, SuiteReport* rep) {
  for (int64_t n : {1, 7, 513}) {
    std::vector<float> in(n * c.size()), out(n);
    for (int64_t i = 0; i < n * c.size(); ++i) in[i] = pattern(seed, c.rank(), i);
    if (!check_status(rep, c.reduce_scatter(in.data(), out.data(), n, DType::kF32),
                      "reduce_scatter")
             .ok())
      return;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      float e = 0;
      for (int r = 0; r < c.size(); ++r) e += pattern(seed, r, c.rank() * n + i);
      bad += out[i] != e;
    }
    rep->fail(bad, fmt::format("reduce_scatter n={}", n));
  }
}

inline void case_broadcast(Communicator& c, uint64_t seed, SuiteReport* rep) {
  const int64_t n = 129;
  for (int root = 0; root < c.size(); ++root) {
    std::vector<float> buf(n);
    for (int64_t i = 0; i < n; ++i) buf[i] = pattern(seed + root, c.rank(), i);
    if (!check_status(rep, c.broadcast(buf.data(), n, DType::kF32, root), "broadcast").ok()) return;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += buf[i] != pattern(seed + root, root, i);
    rep->fail(bad, fmt::format("broadcast root={}", root));
  }
}

inline void case_send_recv(Communicator& c, uint64_t seed, SuiteReport* rep) {
  if (c.size() < 2) return;
  const int next = (c.rank() + 1) % c.size(), prev = (c.rank() + c.size() - 1) % c.size();
  const int64_t n = 100;
  std::vector<float> s7(n), s9(n), r7(n), r9(n);
  for (int64_t i = 0; i < n; ++i) {
    s7[i] = pattern(seed + 7, c.rank(), i);
    s9[i] = pattern(seed + 9, c.rank(), i);
  }
  // Post receives in the opposite tag order: tags, not arrival order, must decide.
  auto w9 = c.recv_async(r9.data(), n, DType::kF32, prev, 9);
  auto w7 = c.recv_async(r7.data(), n, DType::kF32, prev, 7);
  if (!check_status(rep, w9.status(), "recv").ok() || !check_status(rep, w7.status(), "recv").ok())
    return;
  if (!check_status(rep, c.send(s7.data(), n, DType::kF32, next, 7), "send").ok() ||
      !check_status(rep, c.send(s9.data(), n, DType::kF32, next, 9), "send").ok() ||
      !check_status(rep, w7->wait(), "recv wait").ok() ||
      !check_status(rep, w9->wait(), "recv wait").ok())
    return;
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i)
    bad += (r7[i] != pattern(seed + 7, prev, i)) + (r9[i] != pattern(seed + 9, prev, i));
  rep->fail(bad, "send/recv ring with tags 7 and 9");
}

// Expected phase-1 + phase-2 message count of the hierarchical algorithm on this rank.
inline int64_t expected_hier_messages(const Topology& t, int me) {
  const int k = t.node_of(me), g = t.num_local(k);
  int64_t remote = 0;
  for (int d = 0; d < t.size(); ++d)
    if (t.node_of(d) != k && t.local_index(d) % g == t.local_index(me)) ++remote;
  return (g - 1) + remote;
}

inline void case_all_to_all(Communicator& c, uint64_t seed, SuiteReport* rep) {
  const int S = c.size(), me = c.rank();
  std::vector<int64_t> sc(S), sd(S), rc(S), rd(S);
  int64_t stotal = 0, rtotal = 0;
  for (int p = 0; p < S; ++p) {
    sc[p] = a2a_count(seed, me, p, S);
    sd[p] = stotal;
    stotal += sc[p] + 2;  // gaps between blocks: displacements are honoured
    rc[p] = a2a_count(seed, p, me, S);
    rd[p] = rtotal + 1;
    rtotal += rc[p] + 3;
  }
  std::vector<int32_t> send(stotal + 1, -1);
  for (int p = 0; p < S; ++p)
    for (int64_t j = 0; j < sc[p]; ++j) send[sd[p] + j] = a2a_value(seed, me, p, j);
  std::vector<int32_t> flat(rtotal + 1, -7), hier(rtotal + 1, -7);
  if (!check_status(rep, c.all_to_all_v(send.data(), sc, sd, flat.data(), rc, rd, DType::kI32),
                    "all_to_all_v")
           .ok())
    return;
  auto h = HierarchicalAllToAll::create(c);
  if (!check_status(rep, h.status(), "HierarchicalAllToAll::create").ok()) return;
  if (!check_status(rep, (*h)->run(send.data(), sc, sd, hier.data(), rc, rd, DType::kI32),
                    "hierarchical all_to_all")
           .ok())
    return;
  std::vector<int32_t> expect(rtotal + 1, -7);
  for (int p = 0; p < S; ++p)
    for (int64_t j = 0; j < rc[p]; ++j) expect[rd[p] + j] = a2a_value(seed, p, me, j);
  int64_t bad_flat = 0, bad_hier = 0, diff = 0;
  for (size_t i = 0; i < expect.size(); ++i) {
    bad_flat += flat[i] != expect[i];
    bad_hier += hier[i] != expect[i];
  }
  diff = std::memcmp(flat.data(), hier.data(), flat.size() * sizeof(int32_t)) != 0;
  rep->fail(bad_flat, "flat all_to_all_v uneven counts");
  rep->fail(bad_hier,
            fmt::format("hierarchical all_to_all uneven counts on {}", c.topology().describe()));
  rep->fail(diff, "flat and hierarchical results differ bitwise");
  const int64_t want = expected_hier_messages(c.topology(), me);
  const int64_t got = (*h)->last_messages_sent();
  rep->fail(got != want, fmt::format("hierarchical sent {} messages, expected {}", got, want));
  if (c.topology().uniform()) {
    const int64_t g = c.topology().num_local(0), n = c.topology().num_nodes();
    rep->fail(got != (g - 1) + (n - 1),
              fmt::format("uniform layout: {} messages != (g-1)+(n-1) = {}", got, g + n - 2));
  }
  // The plan is reusable: the reverse exchange (combine) sends every block back.
  std::vector<int32_t> back(stotal + 1, -1);
  auto plan = (*h)->plan(rc, sc);
  if (!check_status(rep, plan.status(), "hierarchical plan (reverse)").ok()) return;
  if (!check_status(rep, (*h)->execute(*plan, hier.data(), rd, back.data(), sd, DType::kI32),
                    "hierarchical execute (reverse)")
           .ok())
    return;
  int64_t bad_back = 0;
  for (size_t i = 0; i < send.size(); ++i) bad_back += back[i] != send[i];
  rep->fail(bad_back, "hierarchical combine (reverse exchange) round trip");
}

inline void case_split(Communicator& c, uint64_t seed, SuiteReport* rep) {
  const int color = c.rank() % 2;
  auto child = c.split(color, -c.rank());  // reversed order inside each color
  if (!check_status(rep, child.status(), "split").ok()) return;
  std::vector<int> members;
  for (int r = c.size() - 1; r >= 0; --r)
    if (r % 2 == color) members.push_back(r);
  Communicator& ch = **child;
  int64_t bad = ch.size() != static_cast<int>(members.size());
  if (!bad) bad += members[ch.rank()] != c.rank();
  const int64_t n = 65;
  std::vector<float> in(n), out(n);
  for (int64_t i = 0; i < n; ++i) in[i] = pattern(seed, c.world_rank_of(c.rank()), i);
  if (!check_status(rep, ch.all_reduce(in.data(), out.data(), n, DType::kF32), "child all_reduce")
           .ok())
    return;
  for (int64_t i = 0; i < n; ++i) {
    float e = 0;
    for (int m : members) e += pattern(seed, c.world_rank_of(m), i);
    bad += out[i] != e;
  }
  rep->fail(bad, fmt::format("split(color={}) all_reduce", color));
  // A rank with a negative color joins no child.
  auto none = c.split(c.rank() == 0 ? -1 : 0, 0);
  if (!check_status(rep, none.status(), "split with color -1").ok()) return;
  rep->fail((c.rank() == 0) != (*none == nullptr), "split(color=-1) must return no child");
}

// Runs every case; returns this rank's report. Ends with a barrier so a rank that finished
// early cannot mistake a slow peer for a timeout in the caller's next step.
inline SuiteReport run_comm_suite(Communicator& c, uint64_t seed) {
  SuiteReport rep;
  case_all_reduce(c, seed, &rep);
  case_all_reduce_async(c, seed + 100, &rep);
  case_all_gather(c, seed + 200, &rep);
  case_reduce_scatter(c, seed + 300, &rep);
  case_broadcast(c, seed + 400, &rep);
  case_send_recv(c, seed + 500, &rep);
  case_all_to_all(c, seed + 600, &rep);
  case_all_to_all(c, seed + 601, &rep);
  case_split(c, seed + 700, &rep);
  (void)check_status(&rep, c.barrier(), "barrier");
  return rep;
}

// Sum of wrong counts over the group (-1 if the reduction itself failed).
inline int64_t total_wrong(Communicator& c, const SuiteReport& rep) {
  int64_t w = rep.wrong, total = 0;
  if (!c.all_reduce(&w, &total, 1, DType::kI64).ok()) return -1;
  return total;
}

}  // namespace sw::comm::testing

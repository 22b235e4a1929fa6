// ExpertDispatcher on loopback groups (S threads in one process): DeepEP-style provenance
// (every received row carries its sender rank and token index and must sit under the expert
// it chose), EP MoE FFN == single-rank moe_ffn (dropless and per-source-rank capacity),
// batch-priority scores (router probabilities or combine weights) against the float64
// reference in tests/unit/moe_reference.h, ranks with zero tokens, and flat vs hierarchical
// all-to-all giving bitwise-equal outputs.
// Add a case: a new tokens-per-rank table or node layout in the parameter lists below.
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <ostream>
#include <random>
#include <string>

#include "comm/loopback.h"
#include "moe/capacity.h"
#include "moe/expert_dispatcher.h"
#include "tests/unit/moe_reference.h"

namespace sw::moe {
namespace {

using comm::AllToAllAlgorithm;
using comm::Communicator;
using kernels::DropPolicy;

comm::CommOptions loopback_options(int ranks_per_node = 0) {
  comm::CommOptions o;
  o.timeout_s = 20;
  o.ranks_per_node = ranks_per_node;
  return o;
}

void expect_all_ok(const std::vector<Status>& st) {
  for (size_t r = 0; r < st.size(); ++r)
    EXPECT_TRUE(st[r].ok()) << "rank " << r << ": " << st[r].to_string();
}

// Routing table of rank `rank`: a function of (seed, rank, token), so every rank can rebuild
// every other rank's table. Skewed: half the first choices go to expert 0; expert E - 1 is
// never chosen (an expert with zero tokens). Weights descending, like router_topk's.
struct Routing {
  std::vector<int32_t> ids;
  std::vector<float> w;
};
Routing make_routing(uint32_t seed, int rank, int64_t T, int k, int E) {
  std::mt19937 g(seed * 7919u + static_cast<uint32_t>(rank));
  std::uniform_int_distribution<int32_t> pick(0, E - 2);
  std::uniform_real_distribution<float> weight(0.05f, 1.0f);
  Routing r;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> chosen;
    while (static_cast<int>(chosen.size()) < k) {
      int32_t e = (chosen.empty() && g() % 2 == 0) ? 0 : pick(g);
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    std::vector<float> w(k);
    for (auto& v : w) v = weight(g);
    std::sort(w.begin(), w.end(), std::greater<float>());
    r.ids.insert(r.ids.end(), chosen.begin(), chosen.end());
    r.w.insert(r.w.end(), w.begin(), w.end());
  }
  return r;
}

// moe_assign of one source's table: dest rows and expert offsets (host).
void assign(kernels::Backend& b, const Routing& rt, int64_t T, int k, int E, int64_t cap,
            DropPolicy p, std::vector<int32_t>* dest, std::vector<int32_t>* off) {
  Tensor d = Tensor::empty({T, k}, DType::kI32), o = Tensor::empty({E + 1}, DType::kI32);
  Status s = b.moe_assign(Tensor::from_ints(rt.ids, {T, k}), Tensor::from_floats(rt.w, {T, k}), E,
                          cap, p, d, o);
  ASSERT_TRUE(s.ok()) << s.to_string();
  dest->assign(d.data_as<int32_t>(), d.data_as<int32_t>() + T * k);
  off->assign(o.data_as<int32_t>(), o.data_as<int32_t>() + E + 1);
}

const char* policy_name(DropPolicy p) {
  return p == DropPolicy::kOrder         ? "order"
         : p == DropPolicy::kPriorityMax ? "priority"
                                         : "priority_sum";
}
std::string tokens_str(const std::vector<int64_t>& t) {
  return fmt::format("[{}]", fmt::join(t, " "));
}
std::string factor_str(const std::optional<double>& c) {
  return c ? fmt::format("C={}", *c) : "dropless";
}

struct ProvenanceCase {
  std::vector<int64_t> tokens;  // per rank; size = S
  int num_experts;
  int64_t capacity;  // -1 dropless
  DropPolicy policy;
};

void PrintTo(const ProvenanceCase& c, std::ostream* os) {
  *os << "tokens " << tokens_str(c.tokens) << " E=" << c.num_experts << " capacity=" << c.capacity
      << " " << policy_name(c.policy);
}

class Provenance : public ::testing::TestWithParam<ProvenanceCase> {};

// Rows are (sender rank, token index, 0.5): the receiver checks each against the table it
// rebuilds for the sender, and combine() of y = (expert + 1) * x checks the return trip.
TEST_P(Provenance, EveryRowProvesItsSourceAndExpert) {
  const ProvenanceCase pc = GetParam();
  const int S = static_cast<int>(pc.tokens.size()), E = pc.num_experts, k = 2, El = E / S;
  const int64_t H = 3;
  const uint32_t seed = 17;
  auto st = comm::run_loopback(S, loopback_options(), [&](Communicator& c) -> Status {
    auto b = kernels::make_cpu_backend(1);
    SW_ASSIGN_OR_RETURN(auto disp, ExpertDispatcher::create(*b, c, E, AllToAllAlgorithm::kFlat));
    const int me = c.rank();
    const int64_t T = pc.tokens[me];
    Routing rt = make_routing(seed, me, T, k, E);
    Tensor ids = Tensor::from_ints(rt.ids, {T, k}), w = Tensor::from_floats(rt.w, {T, k});
    SW_ASSIGN_OR_RETURN(DispatchHandle h, disp->layout(ids, w, pc.capacity, pc.policy));
    std::vector<float> xv;
    for (int64_t t = 0; t < T; ++t) xv.insert(xv.end(), {float(me), float(t), 0.5f});
    Tensor x = Tensor::from_floats(xv, {T, H});
    SW_ASSIGN_OR_RETURN(Tensor recv, disp->dispatch(x, h));

    // Expected expert-major buffer: local expert, then source rank, then the source's slot.
    std::vector<std::array<float, 3>> want;
    std::vector<int32_t> want_off = {0};
    std::vector<std::vector<int32_t>> dest(S), off(S);
    for (int s = 0; s < S; ++s)
      assign(*b, make_routing(seed, s, pc.tokens[s], k, E), pc.tokens[s], k, E, pc.capacity,
             pc.policy, &dest[s], &off[s]);
    for (int le = 0; le < El; ++le) {
      const int e = me * El + le;
      for (int s = 0; s < S; ++s) {
        std::vector<int32_t> token_of_row(off[s][E], -1);
        for (size_t i = 0; i < dest[s].size(); ++i)
          if (dest[s][i] >= 0) token_of_row[dest[s][i]] = static_cast<int32_t>(i / k);
        for (int32_t d = off[s][e]; d < off[s][e + 1]; ++d)
          want.push_back({float(s), float(token_of_row[d]), 0.5f});
      }
      want_off.push_back(static_cast<int32_t>(want.size()));
    }
    EXPECT_EQ(recv.dim(0), static_cast<int64_t>(want.size())) << "rank " << me;
    EXPECT_EQ(h.num_recv_rows, static_cast<int64_t>(want.size()));
    std::vector<int32_t> got_off(h.local_expert_offsets.data_as<int32_t>(),
                                 h.local_expert_offsets.data_as<int32_t>() + El + 1);
    EXPECT_EQ(got_off, want_off) << "rank " << me;
    const float* rv = recv.data_as<float>();
    for (size_t i = 0; i < want.size() && i < static_cast<size_t>(recv.dim(0)); ++i)
      for (int c2 = 0; c2 < 3; ++c2)
        EXPECT_EQ(rv[i * H + c2], want[i][c2]) << "rank " << me << " row " << i << " col " << c2;

    // Return trip: y = (global expert + 1) * row.
    Tensor y = Tensor::empty({recv.dim(0), H}, DType::kF32);
    for (int le = 0; le < El; ++le)
      for (int32_t i = got_off[le]; i < got_off[le + 1]; ++i)
        for (int c2 = 0; c2 < H; ++c2)
          y.data_as<float>()[i * H + c2] = float(me * El + le + 1) * rv[i * H + c2];
    Tensor out = Tensor::from_floats(std::vector<float>(T * H, -7.f), {T, H});
    SW_RETURN_IF_ERROR(disp->combine(y, h, out));
    for (int64_t t = 0; t < T; ++t)
      for (int c2 = 0; c2 < H; ++c2) {
        float acc = 0.f;
        for (int j = 0; j < k; ++j)
          if (dest[me][t * k + j] >= 0)
            acc += rt.w[t * k + j] * (float(rt.ids[t * k + j] + 1) * xv[t * H + c2]);
        EXPECT_FLOAT_EQ(out.data_as<float>()[t * H + c2], acc) << "rank " << me << " token " << t;
      }
    return c.barrier();
  });
  expect_all_ok(st);
}

INSTANTIATE_TEST_SUITE_P(Groups, Provenance,
                         ::testing::Values(ProvenanceCase{{6}, 4, -1, DropPolicy::kOrder},
                                           ProvenanceCase{{6, 0}, 4, -1, DropPolicy::kOrder},
                                           ProvenanceCase{{6, 0, 9}, 12, -1, DropPolicy::kOrder},
                                           ProvenanceCase{{6, 0, 9, 4}, 12, -1, DropPolicy::kOrder},
                                           ProvenanceCase{{6, 0, 9, 4}, 8, 1, DropPolicy::kOrder},
                                           ProvenanceCase{
                                               {11, 3, 0}, 6, 2, DropPolicy::kPriorityMax},
                                           ProvenanceCase{{5, 8}, 4, 0, DropPolicy::kPrioritySum},
                                           ProvenanceCase{{0, 0, 0}, 3, -1, DropPolicy::kOrder}));

// ---- EP MoE FFN vs the single-rank moe_ffn ------------------------------------------------

struct Model {
  int E;
  int64_t H, I;
  Tensor router, gate_up, down;
};

Model make_model(uint32_t seed, int E, int64_t H, int64_t I) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  Model m{E, H, I, {}, {}, {}};
  std::vector<float> r(E * H), gu(E * 2 * I * H), d(E * H * I);
  // Rows scaled by expert id: uneven routing, later experts favoured.
  for (int e = 0; e < E; ++e)
    for (int64_t i = 0; i < H; ++i) r[e * H + i] = n(g) * (0.5f + 0.25f * e);
  for (auto& v : gu) v = 0.2f * n(g);
  for (auto& v : d) v = 0.2f * n(g);
  m.router = Tensor::from_floats(r, {E, H});
  m.gate_up = Tensor::from_floats(gu, {E, 2 * I, H});
  m.down = Tensor::from_floats(d, {E, H, I});
  return m;
}

std::vector<int64_t> starts_of(const std::vector<int64_t>& tokens) {
  std::vector<int64_t> s(tokens.size() + 1, 0);
  for (size_t i = 0; i < tokens.size(); ++i) s[i + 1] = s[i] + tokens[i];
  return s;
}

// Runs moe_ffn_ep on every rank of a loopback world; returns the concatenated outputs and
// rank 0's metrics.
std::vector<float> run_ep(const Model& m, const Tensor& x, const std::vector<int64_t>& tokens,
                          int ranks_per_node, AllToAllAlgorithm algo,
                          std::optional<double> capacity_factor, DropPolicy policy,
                          MoeLayerMetrics* metrics0 = nullptr,
                          AllToAllAlgorithm* chosen = nullptr) {
  const int S = static_cast<int>(tokens.size()), El = m.E / S, k = 2;
  const std::vector<int64_t> start = starts_of(tokens);
  std::vector<float> out_all(start[S] * m.H, std::nanf(""));
  auto st = comm::run_loopback(S, loopback_options(ranks_per_node), [&](Communicator& c) -> Status {
    auto b = kernels::make_cpu_backend(1);
    SW_ASSIGN_OR_RETURN(auto disp, ExpertDispatcher::create(*b, c, m.E, algo));
    const int me = c.rank();
    if (me == 0 && chosen) *chosen = disp->algorithm();
    Tensor xr = x.rows(start[me], start[me + 1]);
    Tensor out = Tensor::empty({tokens[me], m.H}, DType::kF32);
    MoeOptions o;
    o.top_k = k;
    o.capacity = expert_capacity(capacity_factor, k, tokens[me], m.E);
    o.policy = policy;
    MoeLayerMetrics met;
    SW_RETURN_IF_ERROR(disp->moe_ffn_ep(xr, m.router, m.gate_up.rows(me * El, (me + 1) * El),
                                        m.down.rows(me * El, (me + 1) * El), o, out, &met));
    if (me == 0 && metrics0) *metrics0 = met;
    std::copy(out.data_as<float>(), out.data_as<float>() + out.numel(),
              out_all.begin() + start[me] * m.H);
    return c.barrier();
  });
  expect_all_ok(st);
  return out_all;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct FfnCase {
  std::vector<int64_t> tokens;
  int num_experts;
  std::optional<double> capacity_factor;
  DropPolicy policy;
};

void PrintTo(const FfnCase& c, std::ostream* os) {
  *os << "tokens " << tokens_str(c.tokens) << " E=" << c.num_experts << " "
      << factor_str(c.capacity_factor) << " " << policy_name(c.policy);
}

class EpMatchesSingleRank : public ::testing::TestWithParam<FfnCase> {};

TEST_P(EpMatchesSingleRank, OutputAndMetrics) {
  const FfnCase fc = GetParam();
  const int S = static_cast<int>(fc.tokens.size()), k = 2;
  const Model m = make_model(99, fc.num_experts, 16, 24);
  const std::vector<int64_t> start = starts_of(fc.tokens);
  std::mt19937 g(5);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> xv(start[S] * m.H);
  for (auto& v : xv) v = n(g);
  Tensor x = Tensor::from_floats(xv, {start[S], m.H});

  // Reference: dropless on the concatenation; with a capacity factor, each source rank's
  // tokens on their own with that rank's capacity (the EP capacity is per source rank).
  auto b = kernels::make_cpu_backend(1);
  std::vector<float> ref(start[S] * m.H, 0.f);
  MoeLayerMetrics ref_met;
  ref_met.tokens_per_expert.assign(m.E, 0);
  for (int s = 0; s < S; ++s) {
    const bool whole = !fc.capacity_factor;
    if (whole && s > 0) break;
    const int64_t b0 = whole ? 0 : start[s], b1 = whole ? start[S] : start[s + 1];
    if (b1 == b0) continue;
    MoeOptions o;
    o.top_k = k;
    o.capacity = expert_capacity(fc.capacity_factor, k, b1 - b0, m.E);
    o.policy = fc.policy;
    Tensor out = Tensor::empty({b1 - b0, m.H}, DType::kF32);
    MoeLayerMetrics met;
    ASSERT_TRUE(moe_ffn(*b, x.rows(b0, b1), m.router, m.gate_up, m.down, o, out, &met).ok());
    std::copy(out.data_as<float>(), out.data_as<float>() + out.numel(), ref.begin() + b0 * m.H);
    for (int e = 0; e < m.E; ++e) ref_met.tokens_per_expert[e] += met.tokens_per_expert[e];
    ref_met.num_assignments += met.num_assignments;
    ref_met.num_dropped += met.num_dropped;
  }

  MoeLayerMetrics met;
  std::vector<float> got =
      run_ep(m, x, fc.tokens, 0, AllToAllAlgorithm::kFlat, fc.capacity_factor, fc.policy, &met);
  const double err = rel_l2(got, ref);
  EXPECT_LE(err, 1e-5) << "S=" << S;
  EXPECT_EQ(met.tokens_per_expert, ref_met.tokens_per_expert);
  EXPECT_EQ(met.num_assignments, start[S] * k);
  EXPECT_EQ(met.num_dropped, ref_met.num_dropped);
  if (!fc.capacity_factor) {
    EXPECT_EQ(met.num_dropped, 0);
  }
  if (start[S] > 0) {
    EXPECT_GE(met.imbalance, 1.0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Groups, EpMatchesSingleRank,
    ::testing::Values(FfnCase{{13}, 4, std::nullopt, DropPolicy::kOrder},
                      FfnCase{{13, 6}, 4, std::nullopt, DropPolicy::kOrder},
                      FfnCase{{13, 0, 21}, 6, std::nullopt, DropPolicy::kOrder},
                      FfnCase{{13, 0, 21, 5}, 8, std::nullopt, DropPolicy::kOrder},
                      FfnCase{{0, 0, 0, 0}, 8, std::nullopt, DropPolicy::kOrder},
                      FfnCase{{17}, 4, 0.75, DropPolicy::kOrder},
                      FfnCase{{17, 30}, 4, 0.5, DropPolicy::kPriorityMax},
                      FfnCase{{17, 0, 30}, 6, 1.0, DropPolicy::kPrioritySum},
                      FfnCase{{17, 0, 30, 9}, 8, 0.6, DropPolicy::kPriorityMax},
                      FfnCase{{17, 0, 30, 9}, 8, 1.25, DropPolicy::kOrder}));

// ---- batch-priority scores under EP vs the float64 reference ------------------------------

// Two ranks route the worked example of docs/moe-routing.md (8 tokens, E = 4, k = 2, C = 0.5:
// capacity 2 per source rank); rank 1 sees the tokens in reverse. x = log p and an identity router
// give the example's router probabilities. Each rank's output must match the naive reference
// (tests/unit/moe_reference.h) for its own tokens under priority_score router and combine,
// and the two scores must drop different tokens (so the option reaches moe_assign).
struct EpScoreCase {
  DropPolicy policy;
  PriorityScore score;
  testing_ref::RefPolicy ref;
};

void PrintTo(const EpScoreCase& c, std::ostream* os) {
  *os << policy_name(c.policy) << " priority_score " << priority_score_name(c.score);
}

class EpPriorityScore : public ::testing::TestWithParam<EpScoreCase> {};

TEST_P(EpPriorityScore, MatchesTheReferencePerSourceRank) {
  const EpScoreCase sc = GetParam();
  const int S = 2, E = 4, El = E / S, k = 2;
  const int64_t T = 8, H = 4, I = 6;
  // Router probabilities by expert (rows sum to 1), top-2 distinct by a margin of 0.01.
  const float p[T][E] = {{0.52f, 0.40f, 0.04f, 0.04f}, {0.45f, 0.18f, 0.19f, 0.18f},
                         {0.28f, 0.60f, 0.06f, 0.06f}, {0.48f, 0.03f, 0.02f, 0.47f},
                         {0.05f, 0.10f, 0.80f, 0.05f}, {0.70f, 0.09f, 0.09f, 0.12f},
                         {0.02f, 0.02f, 0.46f, 0.50f}, {0.16f, 0.75f, 0.05f, 0.04f}};
  Model m = make_model(41, E, H, I);
  std::vector<float> eye(E * H, 0.f);
  for (int e = 0; e < E; ++e) eye[e * H + e] = 1.f;
  m.router = Tensor::from_floats(eye, {E, H});
  std::vector<std::vector<float>> xs(S);
  for (int64_t t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) {
      xs[0].push_back(std::log(p[t][e]));
      xs[1].push_back(std::log(p[T - 1 - t][e]));
    }
  std::vector<std::vector<float>> outs(S);
  auto st = comm::run_loopback(S, loopback_options(), [&](Communicator& c) -> Status {
    auto b = kernels::make_cpu_backend(1);
    SW_ASSIGN_OR_RETURN(auto disp, ExpertDispatcher::create(*b, c, E, AllToAllAlgorithm::kFlat));
    const int me = c.rank();
    MoeOptions o;
    o.top_k = k;
    o.renormalize = true;
    o.capacity = expert_capacity(0.5, k, T, E);
    o.policy = sc.policy;
    o.priority_score = sc.score;
    Tensor out = Tensor::empty({T, H}, DType::kF32);
    SW_RETURN_IF_ERROR(disp->moe_ffn_ep(Tensor::from_floats(xs[me], {T, H}), m.router,
                                        m.gate_up.rows(me * El, (me + 1) * El),
                                        m.down.rows(me * El, (me + 1) * El), o, out));
    outs[me] = out.to_floats();
    return c.barrier();
  });
  expect_all_ok(st);
  const std::vector<float> gu = m.gate_up.to_floats(), dn = m.down.to_floats();
  std::vector<std::vector<int32_t>> kept(S);
  for (int r = 0; r < S; ++r) {
    const std::vector<double> x64(xs[r].begin(), xs[r].end());
    const testing_ref::RefRouting ref = testing_ref::ref_route(x64, T, E, k, true, 2, sc.ref);
    kept[r] = ref.kept;
    const std::vector<double> want =
        testing_ref::ref_moe_ffn(x64, T, H, I, std::vector<double>(gu.begin(), gu.end()),
                                 std::vector<double>(dn.begin(), dn.end()), ref, k);
    EXPECT_LE(rel_l2(outs[r], std::vector<float>(want.begin(), want.end())), 1e-5) << "rank " << r;
    int64_t kept_count = 0;
    for (int32_t v : ref.kept) kept_count += v;
    EXPECT_EQ(kept_count, 8) << "every slot of every expert is taken";
  }
  // The two ranks see the same tokens in opposite orders: identical routing decisions per
  // token under a priority policy (scores break no ties here), but not under order.
  std::vector<int32_t> back(kept[1].size());
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) back[t * k + j] = kept[1][(T - 1 - t) * k + j];
  if (sc.policy == DropPolicy::kOrder) {
    EXPECT_NE(back, kept[0]);
  } else {
    EXPECT_EQ(back, kept[0]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    ReadmeWorkedExample, EpPriorityScore,
    ::testing::Values(EpScoreCase{DropPolicy::kOrder, PriorityScore::kRouter,
                                  testing_ref::RefPolicy::kOrder},
                      EpScoreCase{DropPolicy::kPriorityMax, PriorityScore::kRouter,
                                  testing_ref::RefPolicy::kRouterMax},
                      EpScoreCase{DropPolicy::kPrioritySum, PriorityScore::kRouter,
                                  testing_ref::RefPolicy::kRouterSum},
                      EpScoreCase{DropPolicy::kPriorityMax, PriorityScore::kCombine,
                                  testing_ref::RefPolicy::kCombineMax}),
    [](const ::testing::TestParamInfo<EpScoreCase>& info) {
      const EpScoreCase& c = info.param;
      return std::string(policy_name(c.policy)) + "_" + priority_score_name(c.score);
    });

// The router and combine scores keep different assignments on the example (rank 0's view):
// an option that never reached moe_assign would make these equal.
TEST(EpPriorityScoreExample, RouterAndCombineDropDifferentTokens) {
  std::vector<double> logits;
  const float p[8][4] = {{0.52f, 0.40f, 0.04f, 0.04f}, {0.45f, 0.18f, 0.19f, 0.18f},
                         {0.28f, 0.60f, 0.06f, 0.06f}, {0.48f, 0.03f, 0.02f, 0.47f},
                         {0.05f, 0.10f, 0.80f, 0.05f}, {0.70f, 0.09f, 0.09f, 0.12f},
                         {0.02f, 0.02f, 0.46f, 0.50f}, {0.16f, 0.75f, 0.05f, 0.04f}};
  for (const auto& row : p)
    for (float v : row) logits.push_back(std::log(static_cast<double>(v)));
  EXPECT_NE(
      testing_ref::ref_route(logits, 8, 4, 2, true, 2, testing_ref::RefPolicy::kRouterMax).kept,
      testing_ref::ref_route(logits, 8, 4, 2, true, 2, testing_ref::RefPolicy::kCombineMax).kept);
}

// ---- flat vs hierarchical ------------------------------------------------------------------

struct LayoutCase {
  std::vector<int64_t> tokens;
  int ranks_per_node;
  std::optional<double> capacity_factor;
};

void PrintTo(const LayoutCase& c, std::ostream* os) {
  *os << "tokens " << tokens_str(c.tokens) << " ranks_per_node=" << c.ranks_per_node << " "
      << factor_str(c.capacity_factor);
}

class FlatVsHierarchical : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(FlatVsHierarchical, BitwiseIdentical) {
  const LayoutCase lc = GetParam();
  const int S = static_cast<int>(lc.tokens.size());
  const Model m = make_model(3, 2 * S, 8, 12);
  const std::vector<int64_t> start = starts_of(lc.tokens);
  std::mt19937 g(8);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> xv(start[S] * m.H);
  for (auto& v : xv) v = n(g);
  Tensor x = Tensor::from_floats(xv, {start[S], m.H});
  AllToAllAlgorithm chosen = AllToAllAlgorithm::kAuto;
  std::vector<float> flat = run_ep(m, x, lc.tokens, lc.ranks_per_node, AllToAllAlgorithm::kFlat,
                                   lc.capacity_factor, DropPolicy::kPriorityMax);
  std::vector<float> hier =
      run_ep(m, x, lc.tokens, lc.ranks_per_node, AllToAllAlgorithm::kHierarchical,
             lc.capacity_factor, DropPolicy::kPriorityMax, nullptr, &chosen);
  EXPECT_EQ(chosen, AllToAllAlgorithm::kHierarchical);
  std::vector<float> autov = run_ep(m, x, lc.tokens, lc.ranks_per_node, AllToAllAlgorithm::kAuto,
                                    lc.capacity_factor, DropPolicy::kPriorityMax);
  ASSERT_EQ(flat.size(), hier.size());
  EXPECT_EQ(std::memcmp(flat.data(), hier.data(), flat.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(flat.data(), autov.data(), flat.size() * sizeof(float)), 0);
  for (float v : flat) ASSERT_TRUE(std::isfinite(v));
}

INSTANTIATE_TEST_SUITE_P(Layouts, FlatVsHierarchical,
                         ::testing::Values(LayoutCase{{9, 0, 14, 5}, 2, std::nullopt},
                                           LayoutCase{{9, 0, 14, 5}, 2, 0.5},
                                           LayoutCase{{7, 3, 0, 12, 4, 6}, 4, std::nullopt},
                                           LayoutCase{{7, 3, 0, 12, 4, 6}, 3, 0.75}));

TEST(ExpertDispatcherCreate, ExpertsMustDivideAmongRanks) {
  auto st = comm::run_loopback(3, loopback_options(), [&](Communicator& c) -> Status {
    auto b = kernels::make_cpu_backend(1);
    auto d = ExpertDispatcher::create(*b, c, 8, AllToAllAlgorithm::kFlat);
    EXPECT_FALSE(d.ok());
    EXPECT_NE(d.status().message().find("multiple of the group size 3"), std::string::npos)
        << d.status().message();
    return Status();
  });
  expect_all_ok(st);
}

}  // namespace
}  // namespace sw::moe

// MoE routing on one rank: expert_capacity, the backend's moe_assign on hand-built routing
// tables (order vs batch-priority drops, GShard top-1-first, dropless, capacity 0), the
// the worked example of docs/moe-routing.md (priority scored by the router's probabilities or the
// combine weights) through moe_assign and moe_ffn against tests/unit/moe_reference.h, and the
// batch-priority-routing comparison on a seeded random router (prints its numbers).
// Add a case: write the [T, k] table out by hand and assert every dest row.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <ostream>
#include <random>

#include "kernels/backend.h"
#include "moe/capacity.h"
#include "moe/expert_ffn.h"
#include "tests/unit/moe_reference.h"

namespace sw::moe {
namespace {

using kernels::DropPolicy;

TEST(ExpertCapacity, ExactValues) {
  EXPECT_EQ(expert_capacity(1.0, 2, 8, 4), 4);    // 1 * 2 * 8 / 4
  EXPECT_EQ(expert_capacity(0.5, 2, 8, 4), 2);    // docs/moe-routing.md's worked example
  EXPECT_EQ(expert_capacity(1.25, 1, 10, 4), 4);  // ceil(3.125)
  EXPECT_EQ(expert_capacity(1.0, 2, 1, 8), 1);    // ceil(0.25): one token still gets a slot
  EXPECT_EQ(expert_capacity(1.0, 2, 0, 8), 0);    // no tokens, no slots
  EXPECT_EQ(expert_capacity(2.0, 1, 3, 2), 3);
  EXPECT_EQ(expert_capacity(0.1, 2, 10, 2), 1);  // 1.0000000000000002 in double -> 1, not 2
  EXPECT_EQ(expert_capacity(1.0, 2, 512, 8), 128);
  EXPECT_EQ(expert_capacity(0.5, 2, 512, 8), 64);
  EXPECT_EQ(expert_capacity(1.0, 1, 7, 3), 3);  // ceil(2.33)
  EXPECT_EQ(expert_capacity(std::nullopt, 2, 512, 8), -1);
}

TEST(ExpertCapacityDeathTest, FactorMustBePositive) {
  EXPECT_DEATH((void)expert_capacity(0.0, 2, 8, 4), "capacity_factor");
  EXPECT_DEATH((void)expert_capacity(-1.0, 2, 8, 4), "capacity_factor");
}

struct Assigned {
  std::vector<int32_t> dest;     // [T * k]
  std::vector<int32_t> offsets;  // [E + 1]
};

// moe_assign on a hand-written table (ids/weights row-major [T, k]).
Assigned assign(const std::vector<int32_t>& ids, const std::vector<float>& w, int k, int E,
                int64_t capacity, DropPolicy policy) {
  auto b = kernels::make_cpu_backend(1);
  const int64_t T = static_cast<int64_t>(ids.size()) / k;
  Tensor tid = Tensor::from_ints(ids, {T, k});
  Tensor tw = Tensor::from_floats(w, {T, k});
  Tensor dest = Tensor::empty({T, k}, DType::kI32);
  Tensor off = Tensor::empty({E + 1}, DType::kI32);
  Status s = b->moe_assign(tid, tw, E, capacity, policy, dest, off);
  EXPECT_TRUE(s.ok()) << s.to_string();
  Assigned a;
  a.dest.assign(dest.data_as<int32_t>(), dest.data_as<int32_t>() + T * k);
  a.offsets.assign(off.data_as<int32_t>(), off.data_as<int32_t>() + E + 1);
  return a;
}

std::vector<int32_t> kept_mask(const Assigned& a) {
  std::vector<int32_t> m;
  for (int32_t d : a.dest) m.push_back(d >= 0 ? 1 : 0);
  return m;
}

// Five tokens, top-1, all on expert 0 except token 4; capacity 2 (C = 1, E = 2 would give
// ceil(1 * 1 * 5 / 2) = 3; we use 2 to force drops on expert 0).
TEST(MoeAssignHandBuilt, OrderDropsTheLatestTokens) {
  const std::vector<int32_t> ids = {0, 0, 0, 0, 1};
  const std::vector<float> w = {0.3f, 0.9f, 0.8f, 0.4f, 0.5f};
  Assigned a = assign(ids, w, 1, 2, 2, DropPolicy::kOrder);
  EXPECT_EQ(a.dest, (std::vector<int32_t>{0, 1, -1, -1, 2}));
  EXPECT_EQ(a.offsets, (std::vector<int32_t>{0, 2, 3}));
}

TEST(MoeAssignHandBuilt, PriorityMaxDropsTheLowestWeights) {
  const std::vector<int32_t> ids = {0, 0, 0, 0, 1};
  const std::vector<float> w = {0.3f, 0.9f, 0.8f, 0.4f, 0.5f};
  Assigned a = assign(ids, w, 1, 2, 2, DropPolicy::kPriorityMax);
  // Priority order 1 (0.9), 2 (0.8), 4, 3, 0: tokens 1 and 2 take expert 0's slots.
  EXPECT_EQ(a.dest, (std::vector<int32_t>{-1, 0, 1, -1, 2}));
  EXPECT_EQ(a.offsets, (std::vector<int32_t>{0, 2, 3}));
}

// Token 0: (0.60, 0.10) -> max 0.60, sum 0.70; token 1: (0.50, 0.45) -> max 0.50, sum 0.95.
// Both put their first choice on expert 0 (capacity 1); second choices go to experts 1, 2.
TEST(MoeAssignHandBuilt, PrioritySumOrdersByTheSumOfTopKWeights) {
  const std::vector<int32_t> ids = {0, 1, 0, 2};
  const std::vector<float> w = {0.60f, 0.10f, 0.50f, 0.45f};
  Assigned by_max = assign(ids, w, 2, 3, 1, DropPolicy::kPriorityMax);
  EXPECT_EQ(kept_mask(by_max), (std::vector<int32_t>{1, 1, 0, 1}));  // token 0 wins expert 0
  Assigned by_sum = assign(ids, w, 2, 3, 1, DropPolicy::kPrioritySum);
  EXPECT_EQ(kept_mask(by_sum), (std::vector<int32_t>{0, 1, 1, 1}));  // token 1 wins expert 0
  EXPECT_EQ(by_sum.dest, (std::vector<int32_t>{-1, 1, 0, 2}));
}

// Token 0 = (expert 1: 0.6, expert 0: 0.4), token 1 = (expert 0: 0.7, expert 1: 0.3),
// capacity 1. Token-major filling would give token 0's second choice expert 0's only slot
// and drop token 1's first choice; GShard fills every first choice first.
TEST(MoeAssignHandBuilt, FirstChoicesAlwaysBeatSecondChoices) {
  const std::vector<int32_t> ids = {1, 0, 0, 1};
  const std::vector<float> w = {0.6f, 0.4f, 0.7f, 0.3f};
  for (DropPolicy p : {DropPolicy::kOrder, DropPolicy::kPriorityMax, DropPolicy::kPrioritySum}) {
    Assigned a = assign(ids, w, 2, 2, 1, p);
    EXPECT_EQ(a.dest, (std::vector<int32_t>{1, -1, 0, -1})) << static_cast<int>(p);
  }
  // A late token's first choice beats an early, more confident token's second choice.
  const std::vector<int32_t> ids2 = {0, 1, 2, 1, 1, 0};
  const std::vector<float> w2 = {0.9f, 0.09f, 0.5f, 0.4f, 0.2f, 0.1f};
  Assigned a = assign(ids2, w2, 2, 3, 1, DropPolicy::kPriorityMax);
  // Expert 1: token 2's first choice (weight 0.2, lowest priority) beats the second choices
  // of tokens 0 and 1.
  EXPECT_EQ(kept_mask(a), (std::vector<int32_t>{1, 0, 1, 0, 1, 0}));
}

// docs/moe-routing.md's worked example: 8 tokens, 4 experts, k = 2, C = 0.5 -> capacity 2.
// Each token's router probabilities over all four experts (softmax outputs; they sum to 1).
// The first two columns of each row are its top-2 choices, p1 > p2 > the other two.
struct ExampleToken {
  int32_t e1, e2;
  float p[4];  // by expert id
};
const ExampleToken kExample[8] = {
    {0, 1, {0.52f, 0.40f, 0.04f, 0.04f}}, {0, 2, {0.45f, 0.18f, 0.19f, 0.18f}},
    {1, 0, {0.28f, 0.60f, 0.06f, 0.06f}}, {0, 3, {0.48f, 0.03f, 0.02f, 0.47f}},
    {2, 1, {0.05f, 0.10f, 0.80f, 0.05f}}, {0, 3, {0.70f, 0.09f, 0.09f, 0.12f}},
    {3, 2, {0.02f, 0.02f, 0.46f, 0.50f}}, {1, 0, {0.16f, 0.75f, 0.05f, 0.04f}},
};
// Hand-worked kept masks ([T, k] row-major), as in docs/moe-routing.md's table.
const std::vector<int32_t> kKeptOrder = {1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0};
const std::vector<int32_t> kKeptRouterMax = {1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 0};
const std::vector<int32_t> kKeptRouterSum = {1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0};
const std::vector<int32_t> kKeptCombineMax = {0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1, 0};

// The example as logits (log p: softmax gives p back) for the reference and moe_ffn.
std::vector<double> example_logits() {
  std::vector<double> l;
  for (const ExampleToken& t : kExample)
    for (float p : t.p) l.push_back(std::log(static_cast<double>(p)));
  return l;
}

TEST(MoeAssignHandBuilt, ReadmeWorkedExample) {
  ASSERT_EQ(expert_capacity(0.5, 2, 8, 4), 2);
  std::vector<int32_t> ids;
  std::vector<float> router, combine;  // [8, 2]
  for (const ExampleToken& t : kExample) {
    const float p1 = t.p[t.e1], p2 = t.p[t.e2];
    ids.insert(ids.end(), {t.e1, t.e2});
    router.insert(router.end(), {p1, p2});
    // Renormalised as a model does; w2 = 1 - w1 is exact here, so every token's sum is 1.
    const float w1 = p1 / (p1 + p2);
    combine.insert(combine.end(), {w1, 1.f - w1});
  }
  // The naive reference agrees with the hand-worked masks.
  using testing_ref::RefPolicy;
  const std::vector<double> logits = example_logits();
  EXPECT_EQ(testing_ref::ref_route(logits, 8, 4, 2, true, 2, RefPolicy::kOrder).kept, kKeptOrder);
  EXPECT_EQ(testing_ref::ref_route(logits, 8, 4, 2, true, 2, RefPolicy::kRouterMax).kept,
            kKeptRouterMax);
  EXPECT_EQ(testing_ref::ref_route(logits, 8, 4, 2, true, 2, RefPolicy::kRouterSum).kept,
            kKeptRouterSum);
  EXPECT_EQ(testing_ref::ref_route(logits, 8, 4, 2, true, 2, RefPolicy::kCombineMax).kept,
            kKeptCombineMax);
  for (size_t i = 0; i < ids.size(); ++i)
    EXPECT_EQ(testing_ref::ref_route(logits, 8, 4, 2, true, 2, RefPolicy::kOrder).ids[i], ids[i]);

  // moe_assign scores by the weights it is given: the router's probabilities...
  EXPECT_EQ(kept_mask(assign(ids, router, 2, 4, 2, DropPolicy::kOrder)), kKeptOrder);
  EXPECT_EQ(kept_mask(assign(ids, router, 2, 4, 2, DropPolicy::kPriorityMax)), kKeptRouterMax);
  EXPECT_EQ(kept_mask(assign(ids, router, 2, 4, 2, DropPolicy::kPrioritySum)), kKeptRouterSum);
  // ...or the combine weights: max ranks by w1, and sum (1 for every token) keeps batch order.
  EXPECT_EQ(kept_mask(assign(ids, combine, 2, 4, 2, DropPolicy::kPriorityMax)), kKeptCombineMax);
  EXPECT_EQ(kept_mask(assign(ids, combine, 2, 4, 2, DropPolicy::kPrioritySum)), kKeptOrder);

  // Router probability kept: docs/moe-routing.md's 4.28 / 4.45 / 4.58 / 4.11.
  auto kept_mass = [&](const std::vector<int32_t>& mask) {
    double m = 0;
    for (size_t i = 0; i < mask.size(); ++i) m += mask[i] * static_cast<double>(router[i]);
    return m;
  };
  EXPECT_NEAR(kept_mass(kKeptOrder), 4.28, 1e-6);
  EXPECT_NEAR(kept_mass(kKeptRouterMax), 4.45, 1e-6);
  EXPECT_NEAR(kept_mass(kKeptRouterSum), 4.58, 1e-6);
  EXPECT_NEAR(kept_mass(kKeptCombineMax), 4.11, 1e-6);
}

std::vector<float> randn(std::mt19937& g, size_t n, float scale) {
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

TEST(MoeAssignHandBuilt, DroplessDropsNothing) {
  std::mt19937 g(7);
  const int T = 37, k = 3, E = 5;
  std::vector<int32_t> ids;
  std::vector<float> w;
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      ids.push_back(j == 0 ? 2 : static_cast<int32_t>((t + j) % E));  // expert 2 overloaded
      w.push_back(std::uniform_real_distribution<float>(0, 1)(g));
    }
  for (DropPolicy p : {DropPolicy::kOrder, DropPolicy::kPriorityMax, DropPolicy::kPrioritySum}) {
    Assigned a = assign(ids, w, k, E, -1, p);
    EXPECT_EQ(std::count(a.dest.begin(), a.dest.end(), -1), 0);
    EXPECT_EQ(a.offsets[E], T * k);
    std::vector<int32_t> sorted = a.dest;
    std::sort(sorted.begin(), sorted.end());
    for (int i = 0; i < T * k; ++i) EXPECT_EQ(sorted[i], i);  // a permutation of the rows
  }
}

struct FfnWeights {
  Tensor router, gate_up, down;
};

FfnWeights random_weights(std::mt19937& g, int E, int64_t H, int64_t I) {
  FfnWeights w;
  w.router = Tensor::from_floats(randn(g, E * H, 1.0f), {E, H});
  w.gate_up = Tensor::from_floats(randn(g, E * 2 * I * H, 0.2f), {E, 2 * I, H});
  w.down = Tensor::from_floats(randn(g, E * H * I, 0.2f), {E, H, I});
  return w;
}

TEST(MoeAssignHandBuilt, CapacityZeroDropsEverythingAndContributesZero) {
  Assigned a =
      assign({0, 1, 1, 0, 2, 1}, {0.5f, 0.5f, 0.7f, 0.3f, 0.9f, 0.1f}, 2, 3, 0, DropPolicy::kOrder);
  EXPECT_EQ(a.dest, (std::vector<int32_t>(6, -1)));
  EXPECT_EQ(a.offsets, (std::vector<int32_t>(4, 0)));

  std::mt19937 g(11);
  const int E = 4;
  const int64_t T = 6, H = 8, I = 16;
  FfnWeights w = random_weights(g, E, H, I);
  Tensor x = Tensor::from_floats(randn(g, T * H, 1.0f), {T, H});
  Tensor out = Tensor::from_floats(std::vector<float>(T * H, 123.f), {T, H});
  auto b = kernels::make_cpu_backend(1);
  MoeOptions o;
  o.capacity = 0;
  MoeLayerMetrics m;
  ASSERT_TRUE(moe_ffn(*b, x, w.router, w.gate_up, w.down, o, out, &m).ok());
  for (float v : out.to_floats()) EXPECT_EQ(v, 0.f);
  EXPECT_EQ(m.num_dropped, T * 2);
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }

  return std::sqrt(num / std::max(den, 1e-30));
}

// The worked example through the whole single-rank MoE FFN: x = log p, router = identity, so
// the router sees the example's logits. Every (policy, priority_score) must drop exactly the
// tokens docs/moe-routing.md says (their rows are zeros) and match the float64 reference elsewhere.
struct ScoreCase {
  DropPolicy policy;
  PriorityScore score;
  testing_ref::RefPolicy ref;
  std::vector<int32_t> kept;
};

void PrintTo(const ScoreCase& c, std::ostream* os) {
  *os << "policy " << static_cast<int>(c.policy) << " priority_score "
      << priority_score_name(c.score);
}

class MoeFfnPriorityScore : public ::testing::TestWithParam<ScoreCase> {};

TEST_P(MoeFfnPriorityScore, DropsWhatTheReadmeSaysAndMatchesTheReference) {
  const ScoreCase sc = GetParam();
  const int E = 4, k = 2;
  const int64_t T = 8, H = 4, I = 8;
  std::mt19937 g(31);
  const std::vector<double> logits = example_logits();
  std::vector<float> xv(logits.begin(), logits.end());
  std::vector<float> eye(E * H, 0.f);
  for (int e = 0; e < E; ++e) eye[e * H + e] = 1.f;
  FfnWeights w = random_weights(g, E, H, I);
  w.router = Tensor::from_floats(eye, {E, H});
  auto b = kernels::make_cpu_backend(1);
  MoeOptions o;
  o.top_k = k;
  o.renormalize = true;
  o.capacity_factor = 0.5;
  o.policy = sc.policy;
  o.priority_score = sc.score;
  Tensor out = Tensor::empty({T, H}, DType::kF32);
  MoeLayerMetrics m;
  ASSERT_TRUE(
      moe_ffn(*b, Tensor::from_floats(xv, {T, H}), w.router, w.gate_up, w.down, o, out, &m).ok());

  const std::vector<double> x64(xv.begin(), xv.end());
  const testing_ref::RefRouting r = testing_ref::ref_route(x64, T, E, k, true, 2, sc.ref);
  EXPECT_EQ(r.kept, sc.kept) << "reference vs the hand-worked mask";
  std::vector<float> gu = w.gate_up.to_floats(), dn = w.down.to_floats();
  const std::vector<double> want =
      testing_ref::ref_moe_ffn(x64, T, H, I, std::vector<double>(gu.begin(), gu.end()),
                               std::vector<double>(dn.begin(), dn.end()), r, k);
  const std::vector<float> got = out.to_floats();
  EXPECT_LE(rel_l2(got, std::vector<float>(want.begin(), want.end())), 1e-5);
  for (int64_t t = 0; t < T; ++t) {
    const bool dropped = sc.kept[t * k] == 0 && sc.kept[t * k + 1] == 0;
    for (int64_t h = 0; h < H; ++h)
      if (dropped) {
        EXPECT_EQ(got[t * H + h], 0.f) << "token " << t << " lost both choices";
      } else {
        EXPECT_NE(got[t * H + h], 0.f) << "token " << t << " kept a choice";
      }
  }
  EXPECT_EQ(m.num_dropped, 8);
  for (int e = 0; e < E; ++e) EXPECT_EQ(m.tokens_per_expert[e], 2) << "expert " << e;
}

INSTANTIATE_TEST_SUITE_P(
    ReadmeWorkedExample, MoeFfnPriorityScore,
    ::testing::Values(ScoreCase{DropPolicy::kOrder, PriorityScore::kRouter,
                                testing_ref::RefPolicy::kOrder, kKeptOrder},
                      ScoreCase{DropPolicy::kPriorityMax, PriorityScore::kRouter,
                                testing_ref::RefPolicy::kRouterMax, kKeptRouterMax},
                      ScoreCase{DropPolicy::kPrioritySum, PriorityScore::kRouter,
                                testing_ref::RefPolicy::kRouterSum, kKeptRouterSum},
                      ScoreCase{DropPolicy::kPriorityMax, PriorityScore::kCombine,
                                testing_ref::RefPolicy::kCombineMax, kKeptCombineMax}),
    [](const ::testing::TestParamInfo<ScoreCase>& info) {
      const ScoreCase& c = info.param;
      return std::string(c.policy == DropPolicy::kOrder         ? "order"
                         : c.policy == DropPolicy::kPriorityMax ? "max"
                                                                : "sum") +
             "_" + priority_score_name(c.score);
    });

TEST(MoeOptionsDefaults, PriorityScoreIsRouter) {
  EXPECT_EQ(MoeOptions{}.priority_score, PriorityScore::kRouter);
}

// V-MoE's claim on a seeded random router: with too little capacity (C = 0.5), dropping the
// assignments the router is least sure of keeps more of its probability mass and stays
// closer to dropless. Scored by the combine weights instead (printed for comparison), max
// ranks by p1 / (p1 + p2).
TEST(BatchPriorityRouting, KeepsMoreWeightAndTracksDroplessBetterThanOrder) {
  std::mt19937 g(2024);
  const int E = 8, k = 2;
  const int64_t T = 512, H = 32, I = 64;
  FfnWeights w = random_weights(g, E, H, I);
  Tensor x = Tensor::from_floats(randn(g, T * H, 1.0f), {T, H});
  auto b = kernels::make_cpu_backend(1);
  const int64_t capacity = expert_capacity(0.5, k, T, E);
  ASSERT_EQ(capacity, 64);

  Tensor logits = Tensor::empty({T, E}, DType::kF32);
  ASSERT_TRUE(b->gemm(x, w.router, logits).ok());
  Tensor ids = Tensor::empty({T, k}, DType::kI32), wts = Tensor::empty({T, k}, DType::kF32);
  Tensor probs = Tensor::empty({T, k}, DType::kF32);
  ASSERT_TRUE(b->router_topk(logits, k, true, ids, wts, &probs).ok());

  // Mean router probability of the kept assignments when moe_assign scores by `score_by`.
  auto kept_prob_mean = [&](DropPolicy p, const Tensor& score_by, int64_t* kept) {
    Tensor dest = Tensor::empty({T, k}, DType::kI32), off = Tensor::empty({E + 1}, DType::kI32);
    EXPECT_TRUE(b->moe_assign(ids, score_by, E, capacity, p, dest, off).ok());
    double sum = 0;
    *kept = 0;
    for (int64_t i = 0; i < T * k; ++i)
      if (dest.data_as<int32_t>()[i] >= 0) {
        sum += probs.data_as<float>()[i];
        ++*kept;
      }
    return sum / std::max<int64_t>(*kept, 1);
  };
  auto run = [&](int64_t cap, DropPolicy p, PriorityScore score) {
    Tensor out = Tensor::empty({T, H}, DType::kF32);
    MoeOptions o;
    o.top_k = k;
    o.capacity = cap;
    o.policy = p;
    o.priority_score = score;
    EXPECT_TRUE(moe_ffn(*b, x, w.router, w.gate_up, w.down, o, out).ok());
    return out.to_floats();
  };
  int64_t kept_order = 0, kept_router = 0, kept_combine = 0;
  const double mean_order = kept_prob_mean(DropPolicy::kOrder, probs, &kept_order);
  const double mean_router = kept_prob_mean(DropPolicy::kPriorityMax, probs, &kept_router);
  const double mean_combine = kept_prob_mean(DropPolicy::kPriorityMax, wts, &kept_combine);
  const std::vector<float> dropless = run(-1, DropPolicy::kOrder, PriorityScore::kRouter);
  const double err_order =
      rel_l2(run(capacity, DropPolicy::kOrder, PriorityScore::kRouter), dropless);
  const double err_router =
      rel_l2(run(capacity, DropPolicy::kPriorityMax, PriorityScore::kRouter), dropless);
  const double err_combine =
      rel_l2(run(capacity, DropPolicy::kPriorityMax, PriorityScore::kCombine), dropless);
  std::printf(
      "[BPR] T=%lld E=%d k=%d C=0.5 capacity=%lld\n"
      "[BPR] kept assignments: order %lld, priority %lld, priority (combine) %lld (of %lld)\n"
      "[BPR] mean router probability of kept assignments: order %.4f, priority %.4f, "
      "priority (combine) %.4f\n"
      "[BPR] relative L2 error vs dropless output:         order %.4f, priority %.4f, "
      "priority (combine) %.4f\n",
      static_cast<long long>(T), E, k, static_cast<long long>(capacity),
      static_cast<long long>(kept_order), static_cast<long long>(kept_router),
      static_cast<long long>(kept_combine), static_cast<long long>(T * k), mean_order, mean_router,
      mean_combine, err_order, err_router, err_combine);
  RecordProperty("kept_prob_mean_order", std::to_string(mean_order));
  RecordProperty("kept_prob_mean_priority", std::to_string(mean_router));
  RecordProperty("kept_prob_mean_priority_combine", std::to_string(mean_combine));
  RecordProperty("rel_l2_order", std::to_string(err_order));
  RecordProperty("rel_l2_priority", std::to_string(err_router));
  RecordProperty("rel_l2_priority_combine", std::to_string(err_combine));
  EXPECT_GT(mean_router, mean_order);
  EXPECT_LT(err_router, err_order);
}

}  // namespace
}  // namespace sw::moe

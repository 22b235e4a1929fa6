// Device memory of a step and decode graphs, on the CPU backend:
// * the per-step Workspace arena (carving, alignment, overflow, growth, rewinding);
// * steady-state steps allocate nothing from the device once the largest step was seen;
// * the KV cache sized from gpu_memory_utilization after a profile step;
// * decode steps replayed from graphs (the CPU backend records ops) give the same tokens
//   and logits as eager steps while batch sizes, block tables and sampling change.
#include <gtest/gtest.h>

#include <set>

#include "engine_test_util.h"

namespace sw {
namespace {

using testing::config_from_json;
using testing::input;
using testing::make_engine;
using testing::max_rel_diff;
using testing::seeded_tokens;
using testing::SequenceInput;

// ---- Workspace ------------------------------------------------------------------------------

TEST(Workspace, CarvesAlignedDisjointTensorsAndRewinds) {
  auto be = kernels::make_cpu_backend(1);
  kernels::Workspace ws;
  ws.reserve(*be, 1 << 20);
  const int64_t before = be->device_allocations();
  kernels::WorkspaceScope scope(*be, &ws);
  Tensor a = be->alloc({7}, DType::kF32), b = be->alloc({3, 5}, DType::kBF16);
  Tensor c = be->alloc({0, 8}, DType::kF32), d = be->alloc({1}, DType::kI32);
  EXPECT_EQ(be->device_allocations(), before);
  std::set<uintptr_t> seen;
  for (const Tensor* t : {&a, &b, &d}) {
    const auto p = reinterpret_cast<uintptr_t>(t->data());
    EXPECT_EQ(p % kernels::Workspace::kAlignment, 0u) << t->describe();
    EXPECT_TRUE(seen.insert(p).second) << "two tensors share an address";
  }
  // Writing every element of each leaves the others intact (no overlap).
  std::fill_n(a.data_as<float>(), 7, 1.f);
  std::fill_n(b.data_as<uint16_t>(), 15, uint16_t{2});
  std::fill_n(d.data_as<int32_t>(), 1, 3);
  EXPECT_EQ(a.data_as<float>()[6], 1.f);
  EXPECT_EQ(b.data_as<uint16_t>()[14], 2);
  EXPECT_EQ(d.data_as<int32_t>()[0], 3);
  const int64_t mark = ws.used_bytes();
  Tensor e = be->alloc({100}, DType::kF32);
  ws.rewind_to(mark);
  Tensor f = be->alloc({100}, DType::kF32);
  EXPECT_EQ(e.data(), f.data()) << "rewinding hands the same bytes out again";
  (void)c;
}

TEST(Workspace, OverflowIsServedAndTheNextResetGrowsTheArena) {
  auto be = kernels::make_cpu_backend(1);
  kernels::Workspace ws;
  ws.reserve(*be, 4096);
  const int64_t base = be->device_allocations();
  {
    kernels::WorkspaceScope scope(*be, &ws);
    Tensor small = be->alloc({256}, DType::kF32);  // 1 KiB: fits
    EXPECT_EQ(ws.overflow_allocations(), 0);
    // The arena rounds up to 1 MiB; 2 MB do not fit and get an allocation of their own.
    EXPECT_EQ(ws.capacity_bytes(), 1 << 20);
    Tensor big = be->alloc({500000}, DType::kF32);
    EXPECT_EQ(ws.overflow_allocations(), 1);
    EXPECT_EQ(be->device_allocations(), base + 1);
    std::fill_n(big.data_as<float>(), 500000, 5.f);  // usable memory
    EXPECT_GE(ws.high_water_bytes(), 2001024);
  }
  EXPECT_TRUE(ws.reset(*be)) << "the arena grows to the high-water mark";
  EXPECT_GE(ws.capacity_bytes(), ws.high_water_bytes());
  EXPECT_FALSE(ws.reset(*be)) << "and stays";
  const int64_t grown = be->device_allocations();
  kernels::WorkspaceScope scope(*be, &ws);
  Tensor small = be->alloc({256}, DType::kF32), big = be->alloc({500000}, DType::kF32);
  EXPECT_EQ(be->device_allocations(), grown);
  EXPECT_EQ(ws.overflow_allocations(), 1);
}

// ---- model steps ----------------------------------------------------------------------------

nlohmann::json family(const std::string& type) {
  for (const auto& j : testing::family_configs())
    if (j["model_type"] == type) return j;
  ADD_FAILURE() << "no family config " << type;
  return {};
}

class StepMemoryTest : public ::testing::TestWithParam<std::string> {};

// After the largest step has run once, steps of that size or smaller (prefill, decode and
// mixed) make no device allocation at all: everything comes from the arena.
TEST_P(StepMemoryTest, SteadyStateStepsAllocateNothing) {
  auto c = config_from_json(family(GetParam()));
  auto src = model::make_dummy_source(c, 5);
  auto e = make_engine(c, *src, DType::kF32, 64, 4);
  auto& r = *e.runner;
  const int V = static_cast<int>(c.vocab_size);
  ASSERT_TRUE(e.step({input(1, seeded_tokens(40, V, 1)), input(2, seeded_tokens(9, V, 2))}).ok());
  ASSERT_TRUE(e.step({input(1, {5}), input(2, {6})}).ok());  // the arena grows here
  const int64_t allocs = e.backend->device_allocations();
  const int64_t overflows = r.workspace().overflow_allocations();
  for (int i = 0; i < 6; ++i) {
    std::vector<SequenceInput> batch = {input(1, {7 + i}), input(2, {8 + i}, i % 2 == 0)};
    if (i == 2) batch.push_back(input(3, seeded_tokens(30, V, 3)));
    if (i == 4) {
      ASSERT_TRUE(e.free_sequence(3).ok());
    }
    auto res = e.step(batch);
    ASSERT_TRUE(res.ok()) << res.status().to_string();
  }
  EXPECT_EQ(e.backend->device_allocations(), allocs) << "a steady-state step allocated";
  EXPECT_EQ(r.workspace().overflow_allocations(), overflows);
  EXPECT_GT(r.workspace().capacity_bytes(), 0);
}

// The arena is reused layer after layer: it holds far less than the sum of every layer's
// temporaries (5 layers here; a bump arena without rewinding would need about 5x).
TEST_P(StepMemoryTest, LayersShareTheArena) {
  auto j = family(GetParam());
  j["num_hidden_layers"] = 1;
  auto one = config_from_json(j);
  j["num_hidden_layers"] = 5;
  auto five = config_from_json(j);
  int64_t peak[2] = {0, 0};
  int i = 0;
  for (const auto& c : {one, five}) {
    auto src = model::make_dummy_source(c, 5);
    auto e = make_engine(c, *src, DType::kF32, 64, 16);
    ASSERT_TRUE(
        e.step({input(1, seeded_tokens(200, static_cast<int>(c.vocab_size), 1), false)}).ok());
    peak[i++] = e.runner->workspace().high_water_bytes();
  }
  EXPECT_LT(peak[1], peak[0] * 3 / 2) << "1 layer: " << peak[0] << " B, 5 layers: " << peak[1];
}

// KV blocks = (utilization * total - what the backend holds after the profile step) / block
// bytes; the runner still computes the same logits with its new cache.
TEST_P(StepMemoryTest, KvCacheIsSizedFromMemoryAfterAProfileStep) {
  auto c = config_from_json(family(GetParam()));
  auto src = model::make_dummy_source(c, 9);
  const int64_t profile_tokens = 96;
  auto e = make_engine(c, *src, DType::kF32, profile_tokens / 16, 16);
  auto& r = *e.runner;
  // Too little memory: an error with the numbers, and the runner keeps a usable cache.
  auto refused = r.fit_kv_cache_to_memory(1e-9, profile_tokens, 32);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("gpu_memory_utilization"), std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("at least 32 are needed"), std::string::npos)
      << refused.status().message();
  EXPECT_EQ(r.num_kv_blocks(), profile_tokens / 16);

  // Aim at 100 blocks: what the backend holds without the cache, plus 100.5 blocks.
  const kernels::MemoryInfo mem = e.backend->memory_info();
  const int64_t cache_bytes = r.num_kv_blocks() * r.kv_block_bytes();
  const int64_t held = mem.in_use_bytes - cache_bytes;
  int64_t weight_bytes = c.num_parameters() * 4;
  EXPECT_GE(held, weight_bytes + r.workspace().capacity_bytes())
      << "weights and the arena count as held";
  const double util =
      (static_cast<double>(held) + 100.5 * static_cast<double>(r.kv_block_bytes())) /
      static_cast<double>(mem.total_bytes);
  const int64_t allocs_before = e.backend->device_allocations();
  auto blocks = r.fit_kv_cache_to_memory(util, profile_tokens, 32);
  ASSERT_TRUE(blocks.ok()) << blocks.status().to_string();
  EXPECT_NEAR(static_cast<double>(*blocks), 100.0, 1.0);
  EXPECT_EQ(r.num_kv_blocks(), *blocks);
  e.reset_pool();

  // The profile sized the arena: a step of profile_tokens now allocates only nothing.
  const int64_t after_fit = e.backend->device_allocations();
  EXPECT_GT(after_fit, allocs_before);  // the new cache
  const auto prompt = seeded_tokens(static_cast<int>(profile_tokens), c.vocab_size, 4);
  auto got = e.step({input(1, prompt)});
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(e.backend->device_allocations(), after_fit);

  auto ref = make_engine(c, *src, DType::kF32, 128, 16);
  auto want = ref.step({input(1, prompt)});
  ASSERT_TRUE(want.ok());
  EXPECT_LE(max_rel_diff(got->logits.data_as<float>(), want->logits.data_as<float>(),
                         want->logits.numel()),
            1e-6);
}

INSTANTIATE_TEST_SUITE_P(Families, StepMemoryTest,
                         ::testing::Values(std::string("llama"), std::string("mixtral")));

// ---- decode graphs --------------------------------------------------------------------------

class DecodeGraphTest : public ::testing::TestWithParam<std::string> {};

// The same schedule on an eager runner and on one that replays decode graphs: batch sizes
// 3, 4, 7, 1, 9 and 2 (capture sizes 4, 4, 8, 1, 16, 2), sequences crossing block
// boundaries, joining and leaving, prefill steps in between (eager on both), a sequence that
// does not sample, and seeded random sampling whose offset changes every step.
TEST_P(DecodeGraphTest, ReplayedDecodeStepsMatchEagerSteps) {
  auto c = config_from_json(family(GetParam()));
  SCOPED_TRACE(c.model_type);
  auto src = model::make_dummy_source(c, 17);
  auto eager = make_engine(c, *src, DType::kF32, 256, 4);
  auto graphed = make_engine(c, *src, DType::kF32, 256, 4, kernels::make_cpu_backend(0, true));
  graphed.runner->set_decode_graphs(16);
  ASSERT_TRUE(graphed.backend->supports_graphs());
  const int V = static_cast<int>(c.vocab_size);

  std::map<int64_t, int32_t> last;  // seq -> its latest token
  int step_index = 0;
  int decode_steps = 0;
  auto run = [&](const std::vector<SequenceInput>& batch) {
    SCOPED_TRACE(fmt::format("step {}", step_index));
    auto a = eager.step(batch);
    auto b = graphed.step(batch);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    ASSERT_TRUE(b.ok()) << b.status().to_string();
    EXPECT_EQ(a->sampled, b->sampled);
    EXPECT_EQ(a->logits_row, b->logits_row);
    ASSERT_EQ(a->logits.numel(), b->logits.numel());
    if (a->logits.numel() > 0) {
      EXPECT_LE(
          max_rel_diff(b->logits.data_as<float>(), a->logits.data_as<float>(), a->logits.numel()),
          1e-5);
    }
    for (size_t i = 0; i < batch.size(); ++i)
      if (a->sampled[i] >= 0) last[batch[i].seq_id] = a->sampled[i];
    ++step_index;
  };
  auto prefill = [&](int64_t seq, int n) {
    run({input(seq, seeded_tokens(n, V, static_cast<uint32_t>(seq)))});
  };
  auto decode = [&](const std::vector<int64_t>& seqs) {
    std::vector<SequenceInput> batch;
    for (int64_t s : seqs) {
      SequenceInput in = input(s, {last.at(s)}, s % 3 != 0);
      if (s == 4) {  // does not sample: the caller picks its next token
        in.sample = false;
        last[s] = static_cast<int32_t>((step_index * 7 + 11) % V);
      }
      if (s % 2 == 1) {
        in.sampling.temperature = 0.8f;
        in.sampling.top_k = 20;
        in.sampling.seed = 1000 + static_cast<uint64_t>(s);
        in.sampling.offset = static_cast<uint64_t>(step_index);
      }
      batch.push_back(std::move(in));
    }
    ++decode_steps;
    run(batch);
  };
  for (int64_t s = 1; s <= 3; ++s) prefill(s, 3 + static_cast<int>(s));
  decode({1, 2, 3});
  decode({1, 2, 3});
  prefill(4, 6);
  decode({1, 2, 3, 4});
  for (int64_t s = 5; s <= 7; ++s) prefill(s, 2);
  for (int i = 0; i < 5; ++i) decode({1, 2, 3, 4, 5, 6, 7});  // crosses block boundaries
  ASSERT_TRUE(eager.free_sequence(2).ok());
  ASSERT_TRUE(graphed.free_sequence(2).ok());
  decode({5});
  run({input(8, seeded_tokens(5, V, 8)), input(1, {last.at(1)})});  // mixed: eager on both
  prefill(9, 4);
  prefill(10, 13);
  for (int i = 0; i < 3; ++i) decode({1, 3, 4, 5, 6, 7, 8, 9, 10});
  decode({6, 7});

  EXPECT_EQ(eager.runner->graph_replays(), 0);
  EXPECT_EQ(graphed.runner->graph_replays(), decode_steps) << "every decode step replayed";
  // Capture sizes 4, 8, 1, 16 and 2, each captured at least once (again after the arena grew).
  EXPECT_GE(graphed.runner->graph_captures(), 5);
  EXPECT_LT(graphed.runner->graph_captures(), decode_steps);
}

// Steps the graphs cannot replay exactly run eagerly: MoE with a capacity limit (padding
// would change the capacity), metrics collection, and batches over the largest capture size.
TEST(DecodeGraph, IneligibleStepsRunEagerly) {
  auto c = config_from_json(family("mixtral"));
  auto src = model::make_dummy_source(c, 3);
  auto e = make_engine(c, *src, DType::kF32, 64, 4, kernels::make_cpu_backend(0, true));
  auto& r = *e.runner;
  r.set_decode_graphs(2);
  EXPECT_EQ(r.graph_batch_size(1), 1);
  EXPECT_EQ(r.graph_batch_size(2), 2);
  EXPECT_EQ(r.graph_batch_size(3), 0);
  const int V = static_cast<int>(c.vocab_size);
  ASSERT_TRUE(e.step({input(1, seeded_tokens(3, V, 1)), input(2, seeded_tokens(4, V, 2)),
                      input(3, seeded_tokens(5, V, 3))})
                  .ok());
  ASSERT_TRUE(e.step({input(1, {1}), input(2, {2}), input(3, {3})}).ok());  // 3 > 2
  EXPECT_EQ(r.graph_replays(), 0);
  r.set_collect_moe_metrics(true);
  auto m = e.step({input(1, {4})});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(r.graph_replays(), 0);
  EXPECT_EQ(m->moe_metrics.size(), 3u) << "metrics come from the eager path";
  r.set_collect_moe_metrics(false);
  moe::MoeOptions capped;
  capped.capacity_factor = 1.0;
  r.set_moe_options(capped);
  ASSERT_TRUE(e.step({input(1, {5})}).ok());
  EXPECT_EQ(r.graph_replays(), 0);
  r.set_moe_options(moe::MoeOptions{});
  ASSERT_TRUE(e.step({input(1, {6})}).ok());
  EXPECT_EQ(r.graph_replays(), 1) << "dropless decode of 1 sequence replays";
}

INSTANTIATE_TEST_SUITE_P(Families, DecodeGraphTest,
                         ::testing::Values(std::string("llama"), std::string("qwen2"),
                                           std::string("mixtral"), std::string("qwen3_moe")));

}  // namespace
}  // namespace sw

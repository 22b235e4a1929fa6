// Engine invariants on every supported family with dummy weights: incremental decode equals
// one full prefill (KV cache correctness), batch invariance in mixed prefill+decode batches,
// chunked prefill, preemption with recompute, KV exhaustion, finite activations, bf16.
#include <gtest/gtest.h>

#include <cstring>

#include "engine_test_util.h"

namespace sw {
namespace {

using testing::config_from_json;
using testing::input;
using testing::make_engine;
using testing::max_rel_diff;
using testing::seeded_tokens;
using testing::SequenceInput;

// Logits rows of input i of a step result.
std::vector<float> rows_of(const worker::StepResult& r, size_t i, int64_t n, int64_t vocab) {
  const float* p = r.logits.data_as<float>() + r.logits_row[i] * vocab;
  return std::vector<float>(p, p + n * vocab);
}

class FamilyTest : public ::testing::TestWithParam<int> {
 protected:
  model::ModelConfig config() const {
    return config_from_json(testing::family_configs()[GetParam()]);
  }
};

TEST_P(FamilyTest, IncrementalDecodeMatchesFullPrefill) {
  auto c = config();
  SCOPED_TRACE(c.model_type);
  auto src = model::make_dummy_source(c, 7);
  // Block size 4 so the sequence spans several blocks, with a partial last block.
  auto full = make_engine(c, *src, DType::kF32, 64, 4);
  auto inc = make_engine(c, *src, DType::kF32, 64, 4);
  const auto tokens = seeded_tokens(19, static_cast<int>(c.vocab_size), 3);
  auto r_full = full.step({input(1, tokens)});
  ASSERT_TRUE(r_full.ok()) << r_full.status().to_string();
  const int64_t V = c.vocab_size;
  auto want = rows_of(*r_full, 0, 19, V);

  std::vector<float> got;
  auto r0 = inc.step({input(1, std::vector<int32_t>(tokens.begin(), tokens.begin() + 6))});
  ASSERT_TRUE(r0.ok()) << r0.status().to_string();
  got = rows_of(*r0, 0, 6, V);
  for (int i = 6; i < 19; ++i) {
    auto r = inc.step({input(1, {tokens[i]})});
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    auto row = rows_of(*r, 0, 1, V);
    got.insert(got.end(), row.begin(), row.end());
  }
  EXPECT_LE(max_rel_diff(got.data(), want.data(), static_cast<int64_t>(want.size())), 1e-5);
  // Not vacuous: the logits differ between positions.
  EXPECT_GT(max_rel_diff(want.data(), want.data() + V, V), 1e-3);
}

TEST_P(FamilyTest, LogitsAreBatchInvariantInMixedBatches) {
  auto c = config();
  SCOPED_TRACE(c.model_type);
  auto src = model::make_dummy_source(c, 11);
  const int64_t V = c.vocab_size;
  const auto x = seeded_tokens(9, static_cast<int>(V), 5);
  const auto other = seeded_tokens(23, static_cast<int>(V), 6);
  const auto third = seeded_tokens(1, static_cast<int>(V), 8);

  auto alone = make_engine(c, *src);
  auto a0 = alone.step({input(1, std::vector<int32_t>(x.begin(), x.begin() + 7))});
  auto a1 = alone.step({input(1, {x[7]})});
  auto a2 = alone.step({input(1, {x[8]})});
  ASSERT_TRUE(a0.ok() && a1.ok() && a2.ok());

  auto mixed = make_engine(c, *src);
  // Step 0: x's prefill together with another prompt and a 1-token prompt.
  auto m0 = mixed.step({input(5, std::vector<int32_t>(other.begin(), other.begin() + 11)),
                        input(1, std::vector<int32_t>(x.begin(), x.begin() + 7)), input(9, third)});
  // Step 1: x decodes while `other` prefills its second chunk and seq 9 decodes.
  auto m1 =
      mixed.step({input(9, {3}), input(5, std::vector<int32_t>(other.begin() + 11, other.end())),
                  input(1, {x[7]})});
  // Step 2: x decodes next to a brand new prompt.
  auto m2 = mixed.step({input(1, {x[8]}), input(12, seeded_tokens(5, static_cast<int>(V), 9))});
  ASSERT_TRUE(m0.ok() && m1.ok() && m2.ok()) << m0.status().to_string() << m1.status().to_string();

  auto cmp = [&](const worker::StepResult& a, size_t ai, const worker::StepResult& m, size_t mi,
                 int64_t n) {
    auto ra = rows_of(a, ai, n, V), rm = rows_of(m, mi, n, V);
    return max_rel_diff(rm.data(), ra.data(), n * V);
  };
  EXPECT_LE(cmp(*a0, 0, *m0, 1, 7), 1e-5);
  EXPECT_LE(cmp(*a1, 0, *m1, 2, 1), 1e-5);
  EXPECT_LE(cmp(*a2, 0, *m2, 0, 1), 1e-5);
}

TEST_P(FamilyTest, ChunkedPrefillAndPreemptionGiveTheSameTokens) {
  auto c = config();
  SCOPED_TRACE(c.model_type);
  auto src = model::make_dummy_source(c, 13);
  std::vector<coordinator::RequestSpec> reqs;
  for (int i = 0; i < 4; ++i) {
    coordinator::RequestSpec r;
    r.prompt_ids = seeded_tokens(3 + 6 * i, static_cast<int>(c.vocab_size), 20 + i);
    r.max_new_tokens = 10;
    r.ignore_eos = true;
    r.return_logits = true;
    reqs.push_back(r);
  }
  auto big = make_engine(c, *src, DType::kF32, 128, 4);
  auto want = testing::generate(*big.runner, reqs);
  ASSERT_TRUE(want.ok()) << want.status().to_string();

  // 12 blocks of 4 tokens cannot hold all four sequences (up to 28 tokens each): the newest
  // get preempted and recomputed; 5 tokens per step chunk every prompt. generate() checks
  // that every block is free at the end.
  auto small = make_engine(c, *src, DType::kF32, 12, 4);
  testing::GenerationStats stats;
  coordinator::SchedulerOptions tight;
  tight.max_num_seqs = 8;
  tight.max_num_batched_tokens = 5;
  auto got = testing::generate(*small.runner, reqs, tight, &stats);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_GT(stats.num_preemptions, 0);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ((*got)[i].output_ids, (*want)[i].output_ids) << "request " << i;
    ASSERT_EQ((*got)[i].logits.shape(), (*want)[i].logits.shape());
    EXPECT_LE(max_rel_diff((*got)[i].logits.data_as<float>(), (*want)[i].logits.data_as<float>(),
                           (*want)[i].logits.numel()),
              1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyTest, ::testing::Range(0, 6), [](const auto& info) {
  return testing::family_configs()[info.param]["model_type"].template get<std::string>() +
         std::to_string(info.param);
});

// A prompt chunked over several steps holds blocks while a decoder grows: the scheduler must
// preempt (the newest first) instead of stalling, and still give the unconstrained tokens.
TEST(Engine, PartialPrefillHoldingBlocksDoesNotStall) {
  auto c = model::load_model_config("tiny-dense");
  auto src = model::make_dummy_source(*c, 5);
  coordinator::RequestSpec a, b;
  a.prompt_ids = seeded_tokens(40, static_cast<int>(c->vocab_size), 31);
  a.max_new_tokens = 80;
  b.prompt_ids = seeded_tokens(100, static_cast<int>(c->vocab_size), 32);
  b.max_new_tokens = 10;
  a.ignore_eos = b.ignore_eos = true;
  auto big = make_engine(*c, *src, DType::kF32, 64, 16);
  auto want = testing::generate(*big.runner, {a, b});
  auto tight = make_engine(*c, *src, DType::kF32, 8, 16);  // 120 and 110 tokens: each fits alone
  coordinator::SchedulerOptions o;
  o.max_num_seqs = 8;
  o.max_num_batched_tokens = 64;
  testing::GenerationStats stats;
  auto got = testing::generate(*tight.runner, {a, b}, o, &stats);
  ASSERT_TRUE(want.ok() && got.ok()) << got.status().to_string();
  EXPECT_EQ((*got)[0].output_ids, (*want)[0].output_ids);
  EXPECT_EQ((*got)[1].output_ids, (*want)[1].output_ids);
  EXPECT_GT(stats.num_preemptions, 0);
}

TEST(Engine, BadTokenIdIsAnError) {
  auto c = model::load_model_config("tiny-dense");
  auto src = model::make_dummy_source(*c, 0);
  auto e = make_engine(*c, *src);
  auto r = e.step({input(4, {1, 2, static_cast<int32_t>(c->vocab_size)})});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("sequence 4: token id 1024 is outside the vocabulary"),
            std::string::npos)
      << r.status().message();
}

TEST(Engine, DummyWeightsKeepActivationsFiniteOverManyLayers) {
  auto j = testing::family_configs()[4];  // qwen3_moe shape
  j["num_hidden_layers"] = 40;
  j["mlp_only_layers"] = nlohmann::json::array();
  auto c = config_from_json(j);
  auto src = model::make_dummy_source(c, 0);
  auto e = make_engine(c, *src, DType::kBF16);
  auto r = e.step({input(1, seeded_tokens(33, static_cast<int>(c.vocab_size), 2))});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  double sum2 = 0;
  for (float v : r->logits.to_floats()) {
    ASSERT_TRUE(std::isfinite(v));
    sum2 += static_cast<double>(v) * v;
  }
  double rms = std::sqrt(sum2 / static_cast<double>(r->logits.numel()));
  EXPECT_GT(rms, 0.05);
  EXPECT_LT(rms, 100.0);
}

TEST(Engine, Bfloat16TracksFloat32) {
  auto c = model::load_model_config("tiny-dense");
  auto src = model::make_dummy_source(*c, 3);
  auto f32 = make_engine(*c, *src, DType::kF32);
  auto bf16 = make_engine(*c, *src, DType::kBF16);
  auto tokens = seeded_tokens(17, static_cast<int>(c->vocab_size), 4);
  auto a = f32.step({input(1, tokens)});
  auto b = bf16.step({input(1, tokens)});
  ASSERT_TRUE(a.ok() && b.ok());
  double rel =
      max_rel_diff(b->logits.data_as<float>(), a->logits.data_as<float>(), a->logits.numel());
  EXPECT_LE(rel, 5e-2);
  EXPECT_GT(rel, 0.0);  // bf16 really ran in bf16
}

TEST(Engine, SeededSamplingIsReproducible) {
  auto c = model::load_model_config("tiny-moe");
  auto src = model::make_dummy_source(*c, 0);
  auto run = [&](uint64_t seed) {
    auto e = make_engine(*c, *src);
    coordinator::RequestSpec r;
    r.prompt_ids = {1, 2, 3};
    r.max_new_tokens = 12;
    r.ignore_eos = true;
    r.sampling.temperature = 1.5f;
    r.sampling.top_p = 0.95f;
    r.sampling.seed = seed;
    auto out = testing::generate(*e.runner, {r, r});
    EXPECT_TRUE(out.ok());
    EXPECT_EQ((*out)[0].output_ids, (*out)[1].output_ids);  // same seed, same tokens
    return (*out)[0].output_ids;
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

TEST(Engine, InvalidRequestsAreRejectedAndTheRestRun) {
  auto c = model::load_model_config("tiny-dense");
  auto src = model::make_dummy_source(*c, 0);
  coordinator::RequestSpec good;
  good.prompt_ids = {4, 5, 6};
  good.max_new_tokens = 4;
  good.ignore_eos = true;
  auto bad_token = good, empty = good, too_long = good;
  bad_token.prompt_ids = {4, -1};
  empty.prompt_ids = {};
  too_long.max_new_tokens = 5000;
  auto alone = make_engine(*c, *src);
  auto want = testing::generate(*alone.runner, {good});
  auto mixed = make_engine(*c, *src);
  auto got = testing::generate(*mixed.runner, {bad_token, good, empty, too_long});
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_EQ((*got)[1].output_ids, (*want)[0].output_ids);
  EXPECT_EQ((*got)[1].finish_reason, "length");
  for (size_t i : {0u, 2u, 3u}) {
    EXPECT_EQ((*got)[i].finish_reason, "error") << i;
    EXPECT_TRUE((*got)[i].output_ids.empty()) << i;
  }
  EXPECT_NE((*got)[0].error.find("request 0: token id -1 is outside the vocabulary"),
            std::string::npos);
  EXPECT_NE((*got)[2].error.find("request 2: empty prompt"), std::string::npos);
  EXPECT_NE((*got)[3].error.find("exceeds max_model_len 4096"), std::string::npos)
      << (*got)[3].error;
}

TEST(Engine, EmptyInputsAreSkipped) {
  auto c = model::load_model_config("tiny-dense");
  auto src = model::make_dummy_source(*c, 0);
  auto e = make_engine(*c, *src);
  auto r = e.step({input(1, {}), input(2, {5, 6})});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->sampled[0], -1);
  EXPECT_GE(r->sampled[1], 0);
  auto none = e.step({});
  EXPECT_TRUE(none.ok());
}

}  // namespace
}  // namespace sw

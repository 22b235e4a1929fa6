// Shardwise against Hugging Face transformers: tiny Llama, Mixtral and Qwen3-MoE models made
// by tests/fixtures/make_hf_fixtures.py, with reference logits at every position and the
// greedy continuation. Logits must agree to 1e-4 of the logit scale and tokens exactly.
#include <gtest/gtest.h>

#include <fstream>

#include "engine_test_util.h"
#include "model/safetensors.h"

namespace sw {
namespace {

class HfFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixtureTest, LogitsAndGreedyTokensMatchTransformers) {
  const std::string dir = std::string(SHARDWISE_FIXTURES_DIR) + "/hf/" + GetParam();
  auto config = model::load_model_config(dir);
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  auto source = model::open_weight_source(*config, dir, model::LoadFormat::kSafetensors);
  ASSERT_TRUE(source.ok()) << source.status().to_string();
  auto ref_file = model::SafetensorsFile::open(dir + "/reference.safetensors");
  ASSERT_TRUE(ref_file.ok()) << ref_file.status().to_string();
  std::ifstream in(dir + "/reference.json");
  nlohmann::json ref = nlohmann::json::parse(in);
  ASSERT_FALSE(ref["cases"].empty());

  testing::TestEngine engine = testing::make_engine(*config, **source);
  std::vector<worker::GenerationRequest> requests;
  for (const auto& c : ref["cases"]) {
    worker::GenerationRequest r;
    r.prompt_ids = c["prompt_ids"].get<std::vector<int32_t>>();
    r.max_new_tokens = static_cast<int>(c["greedy_ids"].size());
    r.ignore_eos = true;
    r.return_logits = true;
    requests.push_back(r);
  }
  // All cases in one batch: prefill and decode of different lengths share steps.
  worker::Generator gen(*engine.runner, worker::SchedulerOptions{});
  auto results = gen.generate(requests);
  ASSERT_TRUE(results.ok()) << results.status().to_string();
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE(GetParam() + " case " + std::to_string(i));
    const auto& c = ref["cases"][i];
    EXPECT_EQ((*results)[i].output_ids, c["greedy_ids"].get<std::vector<int32_t>>());
    auto want = (*ref_file)->read(c["logits_tensor"].get<std::string>(),
                                  model::TensorSlice::whole(), DType::kF32);
    ASSERT_TRUE(want.ok()) << want.status().to_string();
    const Tensor& got = (*results)[i].logits;
    ASSERT_EQ(got.shape(), want->shape());
    double rel = testing::max_rel_diff(got.data_as<float>(), want->data_as<float>(), got.numel());
    EXPECT_LE(rel, 1e-4) << "max |logit diff| relative to the logit scale";
  }
}

INSTANTIATE_TEST_SUITE_P(Families, HfFixtureTest,
                         ::testing::Values("llama", "mixtral", "qwen3_moe"));

}  // namespace
}  // namespace sw

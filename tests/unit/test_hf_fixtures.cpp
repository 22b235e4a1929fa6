// Shardwise against Hugging Face transformers: tiny Llama, Mixtral and Qwen3-MoE models made
// by tests/fixtures/make_hf_fixtures.py, with reference logits at every position and the
// greedy continuation. Logits must agree to 1e-4 of the logit scale and tokens exactly.
#include <gtest/gtest.h>

#include <fstream>

#include "engine_test_util.h"
#include "model/safetensors.h"
#include "tests/unit/test_paths.h"

namespace sw {
namespace {

class HfFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFixtureTest, LogitsAndGreedyTokensMatchTransformers) {
  const std::string dir = testing_paths::fixtures_dir() + "/hf/" + GetParam();
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
  std::vector<coordinator::RequestSpec> requests;
  for (const auto& c : ref["cases"]) {
    coordinator::RequestSpec r;
    r.prompt_ids = c["prompt_ids"].get<std::vector<int32_t>>();
    r.max_new_tokens = static_cast<int64_t>(c["greedy_ids"].size());
    r.ignore_eos = true;
    r.return_logits = true;
    requests.push_back(r);
  }
  // All cases in one batch: prefill and decode of different lengths share steps.
  auto results = testing::generate(*engine.runner, requests);
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

// The same fixtures on the CUDA backend: float32 gives the CPU's greedy tokens and logits;
// bfloat16 gives logits within bfloat16 tolerance of the float32 reference. Skips without a GPU.
TEST_P(HfFixtureTest, CudaMatchesCpu) {
  if (kernels::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: cuda_device_count() == 0";
  const std::string dir = testing_paths::fixtures_dir() + "/hf/" + GetParam();
  auto config = model::load_model_config(dir);
  ASSERT_TRUE(config.ok()) << config.status().to_string();
  auto source = model::open_weight_source(*config, dir, model::LoadFormat::kSafetensors);
  ASSERT_TRUE(source.ok()) << source.status().to_string();
  std::ifstream in(dir + "/reference.json");
  nlohmann::json ref = nlohmann::json::parse(in);
  std::vector<coordinator::RequestSpec> requests;
  for (const auto& c : ref["cases"]) {
    coordinator::RequestSpec r;
    r.prompt_ids = c["prompt_ids"].get<std::vector<int32_t>>();
    r.max_new_tokens = static_cast<int64_t>(c["greedy_ids"].size());
    r.ignore_eos = true;
    r.return_logits = true;
    requests.push_back(r);
  }
  auto run = [&](DType dtype, std::unique_ptr<kernels::Backend> backend) {
    testing::TestEngine engine =
        testing::make_engine(*config, **source, dtype, 512, 16, std::move(backend));
    auto results = testing::generate(*engine.runner, requests);
    EXPECT_TRUE(results.ok()) << results.status().to_string();
    return results.ok() ? std::move(results).value() : std::vector<testing::GenerationResult>{};
  };
  auto cpu = run(DType::kF32, nullptr);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(std::string("cuda ") + dtype_name(dtype));
    auto backend = kernels::make_cuda_backend(0);
    ASSERT_TRUE(backend.ok()) << backend.status().to_string();
    auto cuda = run(dtype, std::move(backend).value());
    ASSERT_EQ(cuda.size(), cpu.size());
    for (size_t i = 0; i < cpu.size(); ++i) {
      if (dtype == DType::kF32) {
        EXPECT_EQ(cuda[i].output_ids, cpu[i].output_ids) << "case " << i;
      }
      // bf16 may pick other tokens; compare the prompt positions, which do not depend on them.
      const int64_t rows = dtype == DType::kF32
                               ? cpu[i].logits.dim(0)
                               : static_cast<int64_t>(requests[i].prompt_ids.size());
      const int64_t V = cpu[i].logits.dim(1);
      ASSERT_GE(cuda[i].logits.dim(0), rows);
      double rel = testing::max_rel_diff(cuda[i].logits.data_as<float>(),
                                         cpu[i].logits.data_as<float>(), rows * V);
      EXPECT_LE(rel, dtype == DType::kF32 ? 1e-4 : 5e-2) << "case " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, HfFixtureTest,
                         ::testing::Values("llama", "mixtral", "qwen3_moe"));

}  // namespace
}  // namespace sw

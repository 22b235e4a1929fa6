// Weight sources: dummy weights are deterministic and every slice equals the same part of
// the whole tensor; safetensors sources check the checkpoint against the config; host
// tensors refuse shapes whose bytes overflow, and loaders those larger than the host.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "model/model_config.h"
#include "model/weight_catalog.h"
#include "model/weight_source.h"

namespace sw::model {
namespace {

TEST(DummyWeights, SlicesMatchTheWholeTensor) {
  auto c = load_model_config("tiny-moe");
  ASSERT_TRUE(c.ok());
  auto src = make_dummy_source(*c, 42);
  const std::string name = "model.layers.1.self_attn.q_proj.weight";  // [256, 256]
  auto whole = src->read(name, TensorSlice::whole(), DType::kF32);
  ASSERT_TRUE(whole.ok());
  const float* w = whole->data_as<float>();
  auto rows = src->read(name, TensorSlice::rows(32, 96), DType::kF32);
  ASSERT_TRUE(rows.ok());
  for (int64_t r = 0; r < 64; ++r)
    for (int64_t k = 0; k < 256; ++k)
      ASSERT_EQ(rows->data_as<float>()[r * 256 + k], w[(r + 32) * 256 + k]);
  auto cols = src->read(name, TensorSlice::cols(256, 100, 131), DType::kF32);
  ASSERT_TRUE(cols.ok());
  ASSERT_EQ(cols->shape(), (Shape{256, 31}));
  for (int64_t r = 0; r < 256; ++r)
    for (int64_t k = 0; k < 31; ++k)
      ASSERT_EQ(cols->data_as<float>()[r * 31 + k], w[r * 256 + 100 + k]);
  // bf16 reads are the rounded float32 values.
  auto bf = src->read(name, TensorSlice::rows(0, 1), DType::kBF16);
  ASSERT_TRUE(bf.ok());
  EXPECT_EQ(bf->data_as<uint16_t>()[3], float_to_bf16_bits(w[3]));
}

TEST(DummyWeights, DeterministicSeededAndScaled) {
  auto c = load_model_config("tiny-dense");
  auto a = make_dummy_source(*c, 1), b = make_dummy_source(*c, 1), other = make_dummy_source(*c, 2);
  const std::string name = "model.layers.0.mlp.down_proj.weight";  // [256, 768]
  auto x = a->read(name, TensorSlice::whole(), DType::kF32)->to_floats();
  auto y = b->read(name, TensorSlice::whole(), DType::kF32)->to_floats();
  auto z = other->read(name, TensorSlice::whole(), DType::kF32)->to_floats();
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  double mean = 0, var = 0;
  for (float v : x) mean += v;
  mean /= static_cast<double>(x.size());
  for (float v : x) var += (v - mean) * (v - mean);
  var /= static_cast<double>(x.size());
  EXPECT_NEAR(std::sqrt(var), 1.0 / std::sqrt(768.0), 0.1 / std::sqrt(768.0));  // 1/sqrt(fan_in)
  EXPECT_NEAR(mean, 0.0, 0.01);
  auto norm = a->read("model.norm.weight", TensorSlice::whole(), DType::kF32)->to_floats();
  for (float v : norm) EXPECT_NEAR(v, 1.0f, 0.3f);
  EXPECT_FALSE(
      a->read("model.layers.9.mlp.down_proj.weight", TensorSlice::whole(), DType::kF32).ok());
  auto oob = a->read(name, TensorSlice::rows(0, 999), DType::kF32);
  ASSERT_FALSE(oob.ok());
  EXPECT_NE(oob.status().message().find(name), std::string::npos);
}

TEST(SafetensorsSource, ChecksTheCheckpointAgainstTheConfig) {
  const std::string fixture = std::string(SHARDWISE_FIXTURES_DIR) + "/hf/llama";
  auto c = load_model_config(fixture);
  ASSERT_TRUE(c.ok());
  auto ok = open_weight_source(*c, fixture, LoadFormat::kAuto);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_NE((*ok)->describe().find("safetensors"), std::string::npos);

  // A config that implies other shapes: the error names the tensor and both shapes.
  ModelConfig wrong = *c;
  wrong.intermediate_size = 100;
  auto bad = open_weight_source(wrong, fixture, LoadFormat::kSafetensors);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("model.layers.0.mlp.gate_proj.weight' has shape [128, 64] "
                                        "but config.json implies [100, 64]"),
            std::string::npos)
      << bad.status().message();
  // A config with one more layer: the missing tensor is named.
  ModelConfig deeper = *c;
  deeper.num_hidden_layers += 1;
  auto missing = open_weight_source(deeper, fixture, LoadFormat::kSafetensors);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("model.layers.3.input_layernorm.weight"),
            std::string::npos)
      << missing.status().message();
  // A folder without weights.
  auto empty = std::filesystem::path(::testing::TempDir()) / "no_weights";
  std::filesystem::create_directories(empty);
  auto none = open_weight_source(*c, empty.string(), LoadFormat::kAuto);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("--load-format dummy"), std::string::npos);
  EXPECT_FALSE(parse_load_format("pt").ok());
}

}  // namespace
}  // namespace sw::model

namespace sw {
namespace {

// The fuzzer's step-reply case: a shape of [2^62, 1] float32 is 2^64 bytes, which wrapped to
// a 0-byte buffer that claimed 2^62 elements. Unallocatable shapes now throw std::bad_alloc
// (reported by main() as one line), and loaders check the host's memory before that.
TEST(TensorLimits, ShapesWhoseBytesOverflowAreNotAllocated) {
  EXPECT_THROW(Tensor::empty({int64_t{1} << 62, 1}, DType::kF32), std::bad_alloc);
  EXPECT_THROW(Tensor::empty({-1, 4}, DType::kF32), std::bad_alloc);
  EXPECT_THROW(Tensor::uninitialized({int64_t{1} << 40, int64_t{1} << 40}, DType::kBF16),
               std::bad_alloc);
  EXPECT_EQ(Tensor::empty({0, 5}, DType::kF32).numel(), 0);
  auto big = check_host_allocation({int64_t{1} << 40, int64_t{1} << 40}, DType::kF32, "w");
  EXPECT_EQ(big.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(big.message().find("w: float32 [1099511627776, 1099511627776] needs "),
            std::string::npos)
      << big.message();
  EXPECT_TRUE(check_host_allocation({16, 16}, DType::kF32, "w").ok());
}

}  // namespace
}  // namespace sw

// ModelConfig parsing: every preset and fixture config, family conventions, and errors that
// name the file and key for missing keys, wrong types and unknown model types.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "model/presets.h"
#include "model/weight_catalog.h"
#include "model/weight_source.h"

namespace sw::model {
namespace {

nlohmann::json llama_json() {
  return {{"model_type", "llama"},    {"vocab_size", 100},      {"hidden_size", 64},
          {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2}};
}

TEST(ModelConfig, PresetsParse) {
  for (const char* name :
       {"tiny-moe", "tiny-dense", "mixtral-8x7b", "qwen3-30b-a3b", "llama-3-8b"}) {
    auto c = load_model_config(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().to_string();
  }
  auto mixtral = load_model_config("mixtral-8x7b");
  EXPECT_EQ(mixtral->family, ModelFamily::kMixtral);
  EXPECT_EQ(mixtral->num_experts, 8);
  EXPECT_EQ(mixtral->head_dim, 128);
  // Mixtral 8x7B has about 46.7B parameters, 12.9B active.
  EXPECT_NEAR(mixtral->num_parameters() / 1e9, 46.7, 0.2);
  EXPECT_NEAR(mixtral->num_active_parameters() / 1e9, 12.9, 0.2);
  auto qwen = load_model_config("qwen3-30b-a3b");
  EXPECT_NEAR(qwen->num_parameters() / 1e9, 30.5, 0.3);
  EXPECT_NEAR(qwen->num_active_parameters() / 1e9, 3.3, 0.2);
  EXPECT_TRUE(qwen->qk_norm);
  auto llama = load_model_config("llama-3-8b");
  EXPECT_NEAR(llama->num_parameters() / 1e9, 8.03, 0.05);
  auto tiny = load_model_config("tiny-moe");
  EXPECT_EQ(tiny->hidden_size, 256);
  EXPECT_EQ(tiny->num_experts, 8);
  EXPECT_EQ(tiny->num_experts_per_tok, 2);
  EXPECT_LT(tiny->num_key_value_heads, tiny->num_attention_heads);
}

TEST(ModelConfig, FixtureConfigsFollowFamilyConventions) {
  const std::string dir = std::string(SHARDWISE_FIXTURES_DIR) + "/hf/";
  auto q = load_model_config(dir + "qwen3_moe");
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  EXPECT_EQ(q->family, ModelFamily::kQwen3Moe);
  EXPECT_TRUE(q->tie_word_embeddings);
  EXPECT_FALSE(q->is_moe_layer(1));  // mlp_only_layers: [1]
  EXPECT_TRUE(q->is_moe_layer(0));
  EXPECT_TRUE(q->is_moe_layer(2));
  auto m = load_model_config(dir + "mixtral/config.json");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_TRUE(m->norm_topk_prob);
  EXPECT_EQ(m->moe_intermediate_size, m->intermediate_size);
  auto l = load_model_config(dir + "llama");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->rope_theta, 10000.0);
}

TEST(ModelConfig, DefaultsAndDerivedValues) {
  auto j = llama_json();
  j.erase("num_key_value_heads");
  auto c = parse_model_config(j, "x.json");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 16);
  j["model_type"] = "qwen2";
  EXPECT_TRUE(parse_model_config(j, "x.json")->attention_bias);
  j["eos_token_id"] = {2, 7};
  EXPECT_EQ(parse_model_config(j, "x.json")->eos_token_ids, (std::vector<int>{2, 7}));
  // transformers 5 nests RoPE settings.
  j["rope_parameters"] = {{"rope_theta", 5e5}, {"rope_type", "default"}};
  EXPECT_EQ(parse_model_config(j, "x.json")->rope_theta, 5e5);
}

void expect_error(const nlohmann::json& j, StatusCode code, const std::string& needle) {
  auto c = parse_model_config(j, "models/m/config.json");
  ASSERT_FALSE(c.ok()) << "expected an error containing: " << needle;
  EXPECT_EQ(c.status().code(), code) << c.status().to_string();
  EXPECT_NE(c.status().message().find("models/m/config.json"), std::string::npos)
      << c.status().message();
  EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
}

TEST(ModelConfig, ErrorsNameTheFileAndKey) {
  auto j = llama_json();
  j.erase("hidden_size");
  expect_error(j, StatusCode::kNotFound, "missing required key 'hidden_size'");
  j = llama_json();
  j["num_attention_heads"] = "4";
  expect_error(j, StatusCode::kInvalidArgument,
               "key 'num_attention_heads': expected an integer in [1, 1024], got string \"4\"");
  j = llama_json();
  j["model_type"] = "gpt2";
  expect_error(j, StatusCode::kInvalidArgument, "unsupported model type 'gpt2'");
  j = llama_json();
  j.erase("model_type");
  expect_error(j, StatusCode::kNotFound, "missing required key 'model_type'");
  j = llama_json();
  j["num_key_value_heads"] = 3;
  expect_error(j, StatusCode::kInvalidArgument, "multiple of num_key_value_heads (3)");
  j = llama_json();
  j["tie_word_embeddings"] = 1;
  expect_error(j, StatusCode::kInvalidArgument, "key 'tie_word_embeddings': expected a boolean");
  j = llama_json();
  j["model_type"] = "mixtral";
  j["num_experts_per_tok"] = 2;
  expect_error(j, StatusCode::kNotFound, "missing required key 'num_local_experts'");
  j["num_local_experts"] = 4;
  j["num_experts_per_tok"] = 5;
  expect_error(j, StatusCode::kInvalidArgument, "'num_experts_per_tok': expected 1..4");
  j = llama_json();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_error(j, StatusCode::kInvalidArgument, "unsupported RoPE scaling 'yarn'");
  j = llama_json();
  j["vocab_size"] = -5;
  expect_error(j, StatusCode::kInvalidArgument,
               "key 'vocab_size': expected an integer in [1, 4194304], got number -5");
  expect_error(nlohmann::json::array(), StatusCode::kInvalidArgument, "expected a JSON object");
}

TEST(ModelConfig, FileErrors) {
  auto c = load_model_config("no-such-preset");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("presets: "), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find("tiny-moe"), std::string::npos);
  auto dir = std::filesystem::path(::testing::TempDir()) / "bad_config";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << "{\"model_type\": \"llama\", ";
  auto bad = load_model_config(dir.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("config.json: not valid JSON"), std::string::npos)
      << bad.status().message();
  auto missing = load_model_config((dir / "nowhere").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(WeightCatalog, NamesFollowHfConventions) {
  auto m = parse_model_config({{"model_type", "mixtral"},
                               {"vocab_size", 10},
                               {"hidden_size", 8},
                               {"intermediate_size", 16},
                               {"num_hidden_layers", 1},
                               {"num_attention_heads", 2},
                               {"num_local_experts", 3},
                               {"num_experts_per_tok", 2}},
                              "m");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(expert_weight_name(*m, 0, 2, ExpertProj::kGate),
            "model.layers.0.block_sparse_moe.experts.2.w1.weight");
  EXPECT_EQ(expert_weight_name(*m, 0, 2, ExpertProj::kDown),
            "model.layers.0.block_sparse_moe.experts.2.w2.weight");
  EXPECT_EQ(router_weight_name(*m, 0), "model.layers.0.block_sparse_moe.gate.weight");
  auto specs = weight_catalog(*m);
  // embed + 2 norms + 4 attn + router + 3 experts x 3 + final norm + lm_head
  EXPECT_EQ(specs.size(), 1u + 2 + 4 + 1 + 9 + 1 + 1);
}

// Issue 12, "silent wrap-around": integers are range-checked into their type, never narrowed.
TEST(ModelConfigLimits, WrappedIntegersAreErrorsNotSmallValues) {
  auto j = llama_json();
  j["num_hidden_layers"] = 4294967299LL;  // 2^32 + 3: used to build 3 layers
  expect_error(j, StatusCode::kInvalidArgument,
               "key 'num_hidden_layers': expected an integer in [1, 512], got number 4294967299");
  j = llama_json();
  j["num_attention_heads"] = 4294967300.0;  // as a float: must not be cast (UB) nor wrap
  expect_error(j, StatusCode::kInvalidArgument, "key 'num_attention_heads': expected an integer");
  j = llama_json();
  j["num_key_value_heads"] = 1e300;
  expect_error(j, StatusCode::kInvalidArgument, "key 'num_key_value_heads': expected an integer");
  j = llama_json();
  j["eos_token_id"] = 4294967301LL;  // used to become token 5
  expect_error(j, StatusCode::kInvalidArgument,
               "key 'eos_token_id': expected an integer in [-2147483648, 2147483647], got number "
               "4294967301");
  j["eos_token_id"] = {2, 4294967298LL};
  expect_error(j, StatusCode::kInvalidArgument, "key 'eos_token_id': expected a list of integers");
  j["eos_token_id"] = 100;  // vocab_size is 100
  expect_error(j, StatusCode::kInvalidArgument,
               "key 'eos_token_id': token 100 is outside the vocabulary [0, 100)");
  j = llama_json();
  j["hidden_size"] = 64.0;  // an integral float is still an integer
  EXPECT_TRUE(parse_model_config(j, "x.json").ok());
}

// Issue 12, "crashes instead of errors": sizes of 1e12 are refused with the limit, before the
// dummy weights or the plan allocate or multiply anything.
TEST(ModelConfigLimits, HugeSizesAreRefusedWithTheLimit) {
  struct Case {
    const char* key;
    const char* needle;
  };
  const Case cases[] = {
      {"vocab_size",
       "key 'vocab_size': expected an integer in [1, 4194304], got number 1000000000000.0"},
      {"hidden_size",
       "key 'hidden_size': expected an integer in [1, 65536], got number 1000000000000.0"},
      {"intermediate_size",
       "key 'intermediate_size': expected an integer in [1, 262144], got number 1000000000000.0"},
      {"max_position_embeddings",
       "key 'max_position_embeddings': expected an integer in [1, 16777216], got number "
       "1000000000000.0"},
      {"head_dim", "key 'head_dim': expected an integer in [1, 1024], got number 1000000000000.0"},
  };
  for (const Case& c : cases) {
    auto j = llama_json();
    j[c.key] = 1e12;
    expect_error(j, StatusCode::kInvalidArgument, c.needle);
    j[c.key] = 1000000000000LL;  // the same as a JSON integer
    expect_error(j, StatusCode::kInvalidArgument,
                 std::string("key '") + c.key + "': expected an integer in [1, ");
  }
  nlohmann::json moe = llama_json();
  moe["model_type"] = "qwen3_moe";
  moe["num_experts"] = 1000000000000LL;
  moe["num_experts_per_tok"] = 2;
  moe["moe_intermediate_size"] = 32;
  expect_error(moe, StatusCode::kInvalidArgument,
               "key 'num_experts': expected an integer in [1, 1024], got number 1000000000000");
  moe["num_experts"] = 8;
  moe["moe_intermediate_size"] = 1e12;
  expect_error(moe, StatusCode::kInvalidArgument,
               "key 'moe_intermediate_size': expected an integer in [1, 262144]");
  // No head_dim: hidden_size / heads is bounded too.
  auto j = llama_json();
  j["hidden_size"] = 65536;
  j["num_attention_heads"] = 2;
  j["num_key_value_heads"] = 2;
  expect_error(j, StatusCode::kInvalidArgument,
               "hidden_size / num_attention_heads = 32768 exceeds the head_dim limit of 1024");
}

// Each size within its bound, the product beyond any machine: refused as a whole, so that
// num_parameters() and the partitioner's int64 byte counts cannot overflow.
TEST(ModelConfigLimits, TotalParameterCountIsBounded) {
  nlohmann::json j = {
      {"model_type", "qwen3_moe"},   {"vocab_size", 4194304},    {"hidden_size", 65536},
      {"intermediate_size", 262144}, {"num_hidden_layers", 512}, {"num_attention_heads", 64},
      {"num_experts", 1024},         {"num_experts_per_tok", 8}, {"moe_intermediate_size", 262144}};
  expect_error(j, StatusCode::kInvalidArgument,
               "the sizes in this config.json add up to 2.7e+16 parameters, more than the limit of "
               "1.76e+13");
  auto big = load_model_config("mixtral-8x7b");  // real models stay far below the limit
  ASSERT_TRUE(big.ok());
  EXPECT_LT(big->num_parameters(), int64_t{1} << 40);
}

// Issue 12, "accepted but wrong": these ran and produced NaN-derived tokens with exit 0.
TEST(ModelConfigLimits, RopeThetaEpsAndPositionsMustBePositive) {
  for (double bad : {-1.0, 0.0}) {
    auto j = llama_json();
    j["rope_theta"] = bad;
    expect_error(j, StatusCode::kInvalidArgument,
                 fmt::format("key 'rope_theta': expected a number > 0, got {}", bad));
    j = llama_json();
    j["rms_norm_eps"] = bad;
    expect_error(j, StatusCode::kInvalidArgument,
                 fmt::format("key 'rms_norm_eps': expected a number > 0, got {}", bad));
    j = llama_json();
    j["rope_parameters"] = {{"rope_theta", bad}, {"rope_type", "default"}};
    expect_error(j, StatusCode::kInvalidArgument,
                 "key 'rope_parameters.rope_theta': expected a number > 0");
    j = llama_json();
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", bad}};
    expect_error(j, StatusCode::kInvalidArgument,
                 "key 'rope_scaling.factor': expected a number > 0");
  }
  for (int64_t bad : {0, -5}) {
    auto j = llama_json();
    j["max_position_embeddings"] = bad;
    expect_error(j, StatusCode::kInvalidArgument,
                 fmt::format("key 'max_position_embeddings': expected an integer in [1, 16777216], "
                             "got number {}",
                             bad));
  }
  auto j = llama_json();
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 4.0},
                       {"high_freq_factor", 4.0}};
  expect_error(j, StatusCode::kInvalidArgument,
               "llama3 RoPE scaling needs high_freq_factor (4) > low_freq_factor (4)");
}

TEST(ModelConfigLimits, OversizedConfigFileIsRefusedBeforeReading) {
  auto dir = std::filesystem::path(::testing::TempDir()) / "huge_config";
  std::filesystem::create_directories(dir);
  {
    std::ofstream out(dir / "config.json");
    out << "{\"pad\": \"" << std::string((16 << 20) + 1, 'x') << "\"}";
  }
  auto c = load_model_config(dir.string());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("larger than the limit of 16777216 bytes"), std::string::npos)
      << c.status().message();
}

// Within the bounds a weight can still exceed the machine: the loaders refuse it with its size
// instead of letting Tensor::empty throw std::bad_alloc.
TEST(ModelConfigLimits, DummyWeightLargerThanTheHostIsAnError) {
  nlohmann::json j = llama_json();
  j["vocab_size"] = 4194304;
  j["hidden_size"] = 65536;
  j["num_attention_heads"] = 64;
  j["num_key_value_heads"] = 64;
  auto c = parse_model_config(j, "big.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  auto source = make_dummy_source(*c, 0);
  auto w = source->read("model.embed_tokens.weight", TensorSlice::whole(), DType::kF32);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(w.status().message().find("dummy weight 'model.embed_tokens.weight': float32 "
                                      "[4194304, 65536] needs 1024.0 GiB, more than this "
                                      "machine's"),
            std::string::npos)
      << w.status().message();
}

}  // namespace
}  // namespace sw::model

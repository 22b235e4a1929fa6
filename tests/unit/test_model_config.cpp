// ModelConfig parsing: every preset and fixture config, family conventions, and errors that
// name the file and key for missing keys, wrong types and unknown model types.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "model/presets.h"
#include "model/weight_catalog.h"

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
               "key 'num_attention_heads': expected an integer, got string");
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
  expect_error(j, StatusCode::kInvalidArgument, "key 'vocab_size': expected a positive integer");
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

}  // namespace
}  // namespace sw::model

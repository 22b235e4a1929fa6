// The fuzzers' seed inputs (fuzz/corpus/, written by fuzz/make_seeds.py and copied from the
// presets and launch configs) are valid inputs of today's parsers, so each fuzzer starts from
// deep inside its format; a wire-format change that forgets the seeds fails here.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "comm/control/message.h"
#include "coordinator/serve_protocol.h"
#include "coordinator/workload.h"
#include "model/model_config.h"
#include "model/safetensors.h"
#include "parallel/cluster_config.h"
#include "worker/step_protocol.h"

namespace sw {
namespace {

namespace fs = std::filesystem;

std::vector<std::pair<std::string, std::string>> seeds(const std::string& harness) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e :
       fs::directory_iterator(fs::path(SHARDWISE_SOURCE_DIR) / "fuzz" / "corpus" / harness)) {
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    out.emplace_back(e.path().filename().string(), ss.str());
  }
  EXPECT_GE(out.size(), 2u) << harness;
  return out;
}

TEST(FuzzSeeds, SafetensorsSeedsParse) {
  for (const auto& [name, bytes] : seeds("safetensors_header")) {
    if (name.ends_with(".json")) {
      auto index = model::parse_safetensors_index(bytes, name);
      EXPECT_TRUE(index.ok()) << name << ": " << index.status().message();
    } else {
      auto header = model::parse_safetensors_header(bytes, name);
      ASSERT_TRUE(header.ok()) << name << ": " << header.status().message();
      EXPECT_FALSE(header->tensors.empty()) << name;
    }
  }
}

TEST(FuzzSeeds, ModelConfigSeedsParse) {
  for (const auto& [name, text] : seeds("model_config")) {
    auto c = model::parse_model_config(nlohmann::json::parse(text), name);
    EXPECT_TRUE(c.ok()) << name << ": " << c.status().message();
  }
}

TEST(FuzzSeeds, ClusterConfigSeedsParse) {
  for (const auto& [name, text] : seeds("cluster_config")) {
    auto c = parallel::parse_cluster_config(text, name);
    EXPECT_TRUE(c.ok()) << name << ": " << c.status().message();
  }
}

TEST(FuzzSeeds, ControlMessageSeedsDecode) {
  for (const auto& [name, bytes] : seeds("control_message")) {
    // The harness reads the first byte as the size limit / 16.
    const size_t limit = static_cast<uint8_t>(bytes[0]) * size_t{16};
    auto m = comm::decode_message(std::string_view(bytes).substr(1), limit);
    EXPECT_TRUE(m.ok()) << name << ": " << m.status().message();
  }
}

TEST(FuzzSeeds, StepProtocolSeedsDecode) {
  for (const auto& [name, bytes] : seeds("step_protocol")) {
    if (name.starts_with("command")) {
      auto c = worker::decode_step_command(bytes);
      ASSERT_TRUE(c.ok()) << name << ": " << c.status().message();
      EXPECT_EQ(worker::encode_step_command(*c), bytes) << name;
    } else if (name == "kv_done") {
      auto d = worker::decode_kv_done(bytes);
      ASSERT_TRUE(d.ok()) << name << ": " << d.status().message();
      EXPECT_EQ(worker::encode_kv_done(*d), bytes) << name;
    } else if (name.starts_with("kv_")) {
      auto k = worker::decode_kv_command(bytes);
      ASSERT_TRUE(k.ok()) << name << ": " << k.status().message();
      EXPECT_EQ(worker::encode_kv_command(*k), bytes) << name;
    } else {
      auto r = worker::decode_step_reply(bytes);
      ASSERT_TRUE(r.ok()) << name << ": " << r.status().message();
      EXPECT_EQ(worker::encode_step_reply(*r), bytes) << name;
    }
  }
}

TEST(FuzzSeeds, ServeMessageSeedsParse) {
  for (const auto& [name, text] : seeds("serve_message")) {
    if (name.starts_with("server_")) {
      auto m = coordinator::serve::parse_server_message(text);
      EXPECT_TRUE(m.ok()) << name << ": " << m.status().message();
    } else {
      coordinator::serve::ProtocolError e;
      auto m = coordinator::serve::parse_client_message(text, &e);
      EXPECT_TRUE(m.ok()) << name << ": " << e.message;
    }
  }
}

TEST(FuzzSeeds, PromptLineSeedsParse) {
  for (const auto& [name, bytes] : seeds("prompt_line")) {
    ASSERT_FALSE(bytes.empty()) << name;
    const int64_t vocab = static_cast<unsigned char>(bytes[0]) + 1;
    const std::string line = bytes.substr(1);
    if (name.starts_with("bench_")) {
      auto w = coordinator::parse_workload_line(line, name, vocab);
      EXPECT_TRUE(w.ok()) << name << ": " << w.status().message();
    } else {
      auto r = coordinator::parse_prompt_line(line, name, coordinator::RequestSpec{});
      ASSERT_TRUE(r.ok()) << name << ": " << r.status().message();
      EXPECT_TRUE(coordinator::validate_request_spec(*r).ok()) << name;
    }
  }
}

}  // namespace
}  // namespace sw

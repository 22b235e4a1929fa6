// libFuzzer harness: the OpenAI request decoder (frontend/openai_protocol.cpp, json_limits.cpp)
// on arbitrary HTTP bodies, through all four parsers (completions, chat, tokenize,
// detokenize). An accepted request must hold the values the engine is promised (lengths >= 1,
// top_p in (0, 1], temperature >= 0, no empty stop string); a refused one gets a 4xx error
// whose JSON parses back; responses built from whatever was accepted are valid JSON.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "frontend/openai_protocol.h"
#include "fuzz/fuzz_check.h"

namespace fe = sw::frontend;

namespace {

void check_error(const fe::ApiError& e) {
  FUZZ_CHECK(e.status >= 400 && e.status < 500);
  FUZZ_CHECK(!e.message.empty());
  auto j = nlohmann::json::parse(fe::encode_error(e), nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(j.is_object() && j["error"]["code"] == e.status);
}

void check_params(const fe::GenerationParams& p) {
  FUZZ_CHECK(!p.max_tokens || *p.max_tokens >= 1);
  FUZZ_CHECK(p.temperature >= 0);
  FUZZ_CHECK(p.top_p > 0 && p.top_p <= 1);
  FUZZ_CHECK(p.top_k >= 0);
  for (const auto& s : p.stop) FUZZ_CHECK(!s.empty());
  for (int32_t id : p.stop_token_ids) FUZZ_CHECK(id >= 0);
  FUZZ_CHECK(!p.include_usage || p.stream);
  // Lengths against a context of 64 tokens.
  auto d = fe::decide_max_tokens(p, 5, 64, 16);
  FUZZ_CHECK(d.error.has_value() || (d.max_new_tokens >= 1 && d.max_new_tokens <= 59));
}

bool is_json(const std::string& s) {
  return !nlohmann::json::parse(s, nullptr, /*allow_exceptions=*/false).is_discarded();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  fe::ProtocolLimits limits;
  limits.max_json_depth = 16;
  const fe::ResponseMeta meta{fe::make_response_id("cmpl-"), 0, "m"};

  auto c = fe::parse_completion_request(body, limits);
  if (c.error) {
    check_error(*c.error);
  } else {
    check_params(c.request.params);
    FUZZ_CHECK(c.request.prompt_is_ids ? !c.request.prompt_ids.empty() : true);
    // Echo what was accepted back through the encoders (text may be any valid UTF-8).
    const std::string& text = c.request.prompt_is_ids ? meta.id : c.request.prompt;
    fe::Finish f{"stop", c.request.params.stop.empty() ? nlohmann::json()
                                                       : nlohmann::json(c.request.params.stop[0])};
    FUZZ_CHECK(is_json(fe::encode_completion(meta, text, f, fe::Usage{1, 2})));
    FUZZ_CHECK(is_json(fe::encode_completion(meta, text, f, fe::Usage{1, 2})));
  }

  auto ch = fe::parse_chat_request(body, limits);
  if (ch.error) {
    check_error(*ch.error);
  } else {
    check_params(ch.request.params);
    FUZZ_CHECK(ch.request.messages.is_array() && !ch.request.messages.empty());
    for (const auto& m : ch.request.messages) {
      FUZZ_CHECK(m.is_object() && m["role"].is_string());
      FUZZ_CHECK(!m.contains("content") || m["content"].is_string() || m["content"].is_null());
    }
    FUZZ_CHECK(!(ch.request.add_generation_prompt && ch.request.continue_final_message));
    const auto& content0 = ch.request.messages[0]["content"];
    const std::string first = content0.is_string() ? content0.get<std::string>() : "";
    FUZZ_CHECK(is_json(
        fe::encode_chat_completion(meta, first, fe::Finish{"length", nullptr}, fe::Usage{3, 4})));
  }

  auto t = fe::parse_tokenize_request(body, limits);
  if (t.error)
    check_error(*t.error);
  else
    FUZZ_CHECK(t.request.is_chat ? !t.request.messages.empty() : true);

  auto d = fe::parse_detokenize_request(body, limits);
  if (d.error) {
    check_error(*d.error);
  } else {
    for (int32_t id : d.request.tokens) FUZZ_CHECK(id >= 0);
    FUZZ_CHECK(is_json(fe::encode_tokenize(d.request.tokens, 64, nullptr)));
  }

  // The model check never refuses an absent model.
  FUZZ_CHECK(!fe::check_model("", {"m"}));
  return 0;
}

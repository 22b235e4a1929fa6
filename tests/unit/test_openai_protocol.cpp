// The OpenAI protocol without sockets: every request field's parsing and validation (errors
// name the field as "param"), the response, chunk and error shapes OpenAI and vLLM document,
// the bounded JSON parser, and the Prometheus text format (checked by a small parser here).
// Add a field: a case in the matching TEST below.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "frontend/json_limits.h"
#include "frontend/openai_protocol.h"
#include "frontend/prometheus.h"

namespace sw::frontend {
namespace {

using nlohmann::json;

ProtocolLimits limits() { return ProtocolLimits{}; }

CompletionParse completion(const json& body) {
  return parse_completion_request(body.dump(), limits());
}
ChatParse chat(const json& body) { return parse_chat_request(body.dump(), limits()); }

// The 400 a completion body gets, as "param: message".
std::string completion_error(const json& body) {
  auto p = completion(body);
  if (!p.error) return "ok";
  EXPECT_EQ(p.error->status, 400);
  return p.error->param;
}
std::string chat_error(const json& body) {
  auto p = chat(body);
  if (!p.error) return "ok";
  EXPECT_EQ(p.error->status, 400);
  return p.error->param;
}

// ---- bounded JSON ----

TEST(JsonLimits, ParsesAndBoundsDepth) {
  auto ok = parse_json_bounded(R"({"a": [1, {"b": null}], "c": "x"})", 3, true);
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  EXPECT_EQ((*ok)["a"][1]["b"], nullptr);
  auto deep = parse_json_bounded(R"({"a": [1, {"b": []}]})", 3, true);
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("deeper than 3"), std::string::npos);
  // A million levels: refused at the bound, no recursion anywhere.
  std::string huge(1000000, '[');
  auto h = parse_json_bounded(huge, 64, false);
  EXPECT_FALSE(h.ok());
  std::string nested = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(parse_json_bounded(nested, 64, false).ok());
  EXPECT_FALSE(parse_json_bounded(nested, 63, false).ok());
}

TEST(JsonLimits, DuplicateKeysBadUtf8AndSyntax) {
  EXPECT_FALSE(parse_json_bounded(R"({"a": 1, "a": 2})", 8, true).ok());
  auto last = parse_json_bounded(R"({"a": 1, "a": 2})", 8, false);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ((*last)["a"], 2);
  EXPECT_FALSE(parse_json_bounded("{\"a\": \"\xff\"}", 8, false).ok());
  auto bad = parse_json_bounded("{\"a\": ", 8, false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("byte"), std::string::npos) << bad.status().message();
  EXPECT_FALSE(parse_json_bounded("", 8, false).ok());
  EXPECT_FALSE(parse_json_bounded("{} {}", 8, false).ok());
  auto scalar = parse_json_bounded("  42 ", 8, false);
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(*scalar, 42);
}

// ---- completions ----

TEST(CompletionRequest, DefaultsAndPromptForms) {
  auto p = completion({{"prompt", "Hello"}});
  ASSERT_FALSE(p.error) << p.error->message;
  const auto& r = p.request;
  EXPECT_EQ(r.prompt, "Hello");
  EXPECT_FALSE(r.prompt_is_ids);
  EXPECT_TRUE(r.add_special_tokens);
  EXPECT_FALSE(r.params.max_tokens.has_value());
  EXPECT_EQ(r.params.temperature, 1.0);
  EXPECT_EQ(r.params.top_p, 1.0);
  EXPECT_EQ(r.params.top_k, 0);
  EXPECT_FALSE(r.params.seed.has_value());
  EXPECT_FALSE(r.params.stream);
  EXPECT_TRUE(r.params.skip_special_tokens);
  EXPECT_EQ(r.params.model, "");

  EXPECT_EQ(completion({{"prompt", {"one"}}}).request.prompt, "one");
  auto ids = completion({{"prompt", {1, 2, 3}}});
  ASSERT_FALSE(ids.error);
  EXPECT_TRUE(ids.request.prompt_is_ids);
  EXPECT_EQ(ids.request.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  auto nested = completion({{"prompt", {{4, 5}}}});
  ASSERT_FALSE(nested.error);
  EXPECT_EQ(nested.request.prompt_ids, (std::vector<int32_t>{4, 5}));

  EXPECT_EQ(completion_error({{"prompt", {"a", "b"}}}), "prompt");
  EXPECT_NE(completion({{"prompt", {"a", "b"}}}).error->message.find("2 prompts"),
            std::string::npos);
  EXPECT_EQ(completion_error({{"prompt", {{1}, {2}}}}), "prompt");
  EXPECT_EQ(completion_error({{"prompt", json::array()}}), "prompt");
  EXPECT_EQ(completion_error({{"prompt", {1, -2}}}), "prompt");
  EXPECT_EQ(completion_error({{"prompt", {1, 2.5}}}), "prompt");
  EXPECT_EQ(completion_error({{"prompt", {1, "x"}}}), "prompt");
  EXPECT_EQ(completion_error({{"prompt", 5}}), "prompt");
  EXPECT_EQ(completion_error({{"model", "m"}}), "prompt");
  EXPECT_EQ(completion_error({{"prompt", nullptr}}), "prompt");
}

TEST(CompletionRequest, EveryFieldIsReadAndChecked) {
  auto p = completion({{"model", "m"},
                       {"prompt", "x"},
                       {"max_tokens", 7},
                       {"temperature", 0},
                       {"top_p", 0.5},
                       {"top_k", 40},
                       {"seed", 1234},
                       {"stop", "\n"},
                       {"stop_token_ids", {7, 9}},
                       {"ignore_eos", true},
                       {"stream", true},
                       {"stream_options", {{"include_usage", true}}},
                       {"user", "u1"},
                       {"add_special_tokens", false},
                       {"skip_special_tokens", false},
                       {"logprobs", nullptr},
                       {"echo", false},
                       {"n", 1},
                       {"presence_penalty", 0},
                       {"some_unknown_field", {{"x", 1}}}});
  ASSERT_FALSE(p.error) << p.error->message;
  const auto& r = p.request;
  EXPECT_EQ(r.params.model, "m");
  EXPECT_EQ(*r.params.max_tokens, 7);
  EXPECT_EQ(r.params.temperature, 0);
  EXPECT_EQ(r.params.top_p, 0.5);
  EXPECT_EQ(r.params.top_k, 40);
  EXPECT_EQ(*r.params.seed, 1234u);
  EXPECT_EQ(r.params.stop, (std::vector<std::string>{"\n"}));
  EXPECT_EQ(r.params.stop_token_ids, (std::vector<int32_t>{7, 9}));
  EXPECT_TRUE(r.params.ignore_eos);
  EXPECT_TRUE(r.params.stream);
  EXPECT_TRUE(r.params.include_usage);
  EXPECT_EQ(r.params.user, "u1");
  EXPECT_FALSE(r.add_special_tokens);
  EXPECT_FALSE(r.params.skip_special_tokens);

  // vLLM's top_k -1 means off; a float with an integral value is an integer.
  EXPECT_EQ(completion({{"prompt", "x"}, {"top_k", -1}}).request.params.top_k, 0);
  EXPECT_EQ(*completion({{"prompt", "x"}, {"max_tokens", 3.0}}).request.params.max_tokens, 3);
  EXPECT_EQ(completion({{"prompt", "x"}, {"stop", {"a", "", "b"}}}).request.params.stop,
            (std::vector<std::string>{"a", "b"}));
  for (auto [key, value] : std::vector<std::pair<std::string, json>>{
           {"max_tokens", 0},
           {"max_tokens", -1},
           {"max_tokens", "5"},
           {"max_tokens", 2.5},
           {"temperature", -0.1},
           {"temperature", "hot"},
           {"top_p", 0},
           {"top_p", 1.5},
           {"top_k", -2},
           {"top_k", 1.5},
           {"seed", "s"},
           {"stop", 3},
           {"stop", {"a", 3}},
           {"stop_token_ids", {1, -1}},
           {"stop_token_ids", "1"},
           {"ignore_eos", "yes"},
           {"stream", 1},
           {"user", 5},
           {"model", 5},
           {"add_special_tokens", "no"},
           {"n", 2},
           {"n", "1"},
           {"best_of", 3},
           {"logprobs", 1},
           {"logprobs", 5},
           {"echo", true},
           {"presence_penalty", 0.5},
           {"frequency_penalty", 1},
           {"repetition_penalty", 1.2},
           {"logit_bias", {{"1", 5}}},
           {"suffix", "x"},
           {"min_tokens", 2},
           {"use_beam_search", true},
           {"response_format", {{"type", "json_object"}}},
       }) {
    json body = {{"prompt", "x"}, {key, value}};
    EXPECT_EQ(completion_error(body), key) << body.dump();
  }
  // logprobs that ask for nothing are fine.
  for (json v : {json(nullptr), json(false), json(0)})
    EXPECT_EQ(completion_error({{"prompt", "x"}, {"logprobs", v}}), "ok") << v.dump();
  // stream_options needs stream, and its own fields are checked.
  EXPECT_EQ(completion_error({{"prompt", "x"}, {"stream_options", {{"include_usage", true}}}}),
            "stream_options");
  EXPECT_EQ(completion_error(
                {{"prompt", "x"}, {"stream", true}, {"stream_options", {{"include_usage", "y"}}}}),
            "stream_options.include_usage");
  // Too many stop strings.
  EXPECT_EQ(completion_error({{"prompt", "x"}, {"stop", json(std::vector<std::string>(65, "s"))}}),
            "stop");
}

TEST(CompletionRequest, BodyErrors) {
  for (std::string body : {"", "not json", "[1, 2]", "\"x\"", "{\"prompt\": \"x\"", "null"}) {
    auto p = parse_completion_request(body, limits());
    ASSERT_TRUE(p.error) << body;
    EXPECT_EQ(p.error->status, 400);
  }
  std::string deep =
      "{\"prompt\": \"x\", \"a\": " + std::string(100, '[') + std::string(100, ']') + "}";
  auto p = parse_completion_request(deep, limits());
  ASSERT_TRUE(p.error);
  EXPECT_NE(p.error->message.find("deeper"), std::string::npos);
}

// ---- chat ----

TEST(ChatRequest, MessagesAndTemplateFields) {
  auto p =
      chat({{"model", "m"},
            {"messages",
             {{{"role", "system"}, {"content", "Be brief."}},
              {{"role", "user"},
               {"content",
                {{{"type", "text"}, {"text", "Hello"}}, {{"type", "text"}, {"text", "there"}}}}},
              {{"role", "assistant"}, {"content", nullptr}, {"tool_calls", json::array()}}}},
            {"max_completion_tokens", 9},
            {"max_tokens", 99},
            {"tools", {{{"type", "function"}}}},
            {"documents", {{{"title", "t"}}}},
            {"chat_template_kwargs", {{"enable_thinking", false}}},
            {"logprobs", false},
            {"top_logprobs", 0}});
  ASSERT_FALSE(p.error) << p.error->message;
  const auto& r = p.request;
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[1]["content"], "Hello\nthere");
  EXPECT_TRUE(r.messages[2]["content"].is_null());
  EXPECT_TRUE(r.messages[2].contains("tool_calls"));
  EXPECT_EQ(*r.params.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_TRUE(r.add_generation_prompt);
  EXPECT_FALSE(r.continue_final_message);
  EXPECT_FALSE(r.add_special_tokens);
  EXPECT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.documents.size(), 1u);
  EXPECT_EQ(r.chat_template_kwargs["enable_thinking"], false);

  auto cont = chat(
      {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"continue_final_message", true}});
  ASSERT_FALSE(cont.error);
  EXPECT_TRUE(cont.request.continue_final_message);
  EXPECT_FALSE(cont.request.add_generation_prompt);
  EXPECT_EQ(*chat({{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"max_tokens", 4}})
                 .request.params.max_tokens,
            4);
}

// Templates show key order (tools | tojson, message.items()), so the chat template gets the
// client's order, which nlohmann::json (sorted keys) would lose; content parts are joined.
TEST(ChatRequest, TemplateInputKeepsTheClientsKeyOrder) {
  const std::string body =
      R"({"model": "m", "tools": [{"type": "function", "function": {"name": "f", )"
      R"("description": "d", "parameters": {"z": 1, "a": 2}}}], "messages": [{"role": "user", )"
      R"("name": "zed", "content": [{"type": "text", "text": "a"}, {"type": "text", )"
      R"("text": "b"}]}], "documents": [{"title": "t", "text": "x"}]})";
  auto p = parse_chat_request(body, limits());
  ASSERT_FALSE(p.error) << p.error->message;
  EXPECT_EQ(p.request.ordered.messages, R"([{"role":"user","name":"zed","content":"a\nb"}])");
  EXPECT_EQ(p.request.ordered.tools,
            R"([{"type":"function","function":{"name":"f","description":"d",)"
            R"("parameters":{"z":1,"a":2}}}])");
  EXPECT_EQ(p.request.ordered.documents, R"([{"title":"t","text":"x"}])");
  auto t = parse_tokenize_request(
      R"({"messages": [{"role": "user", "content": "hi", "a": 1}], "tools": null})", limits());
  ASSERT_FALSE(t.error);
  EXPECT_EQ(t.request.ordered.messages, R"([{"role":"user","content":"hi","a":1}])");
  EXPECT_EQ(t.request.ordered.tools, "");
}

TEST(ChatRequest, Errors) {
  const json msgs = {{{"role", "user"}, {"content", "x"}}};
  EXPECT_EQ(chat_error({{"model", "m"}}), "messages");
  EXPECT_EQ(chat_error({{"messages", json::array()}}), "messages");
  EXPECT_EQ(chat_error({{"messages", "hi"}}), "messages");
  EXPECT_EQ(chat_error({{"messages", {1}}}), "messages[0]");
  EXPECT_EQ(chat_error({{"messages", {{{"content", "x"}}}}}), "messages[0].role");
  EXPECT_EQ(chat_error({{"messages", {{{"role", "user"}, {"content", 5}}}}}),
            "messages[0].content");
  EXPECT_EQ(chat_error({{"messages",
                         {{{"role", "user"},
                           {"content",
                            {{{"type", "text"}, {"text", "a"}},
                             {{"type", "image_url"}, {"image_url", {{"url", "x"}}}}}}}}}}),
            "messages[0].content[1].type");
  EXPECT_EQ(chat_error({{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}}}}}}}}),
            "messages[0].content[0].text");
  EXPECT_EQ(
      chat_error(
          {{"messages", msgs}, {"add_generation_prompt", true}, {"continue_final_message", true}}),
      "continue_final_message");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"logprobs", true}}), "logprobs");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"logprobs", 1}}), "logprobs");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"top_logprobs", 3}}), "top_logprobs");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"max_completion_tokens", 0}}),
            "max_completion_tokens");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"tools", "x"}}), "tools");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"chat_template_kwargs", {1}}}),
            "chat_template_kwargs");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"chat_template", "{{x}}"}}), "chat_template");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"tool_choice", "required"}}), "tool_choice");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"tool_choice", "auto"}}), "ok");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"n", 3}}), "n");
  EXPECT_EQ(chat_error({{"messages", msgs}, {"temperature", -1}}), "temperature");
}

// ---- tokenize / detokenize ----

TEST(TokenizeRequest, PromptAndChatForms) {
  auto p = parse_tokenize_request(R"({"model": "m", "prompt": "hi"})", limits());
  ASSERT_FALSE(p.error);
  EXPECT_FALSE(p.request.is_chat);
  EXPECT_TRUE(p.request.add_special_tokens);
  EXPECT_FALSE(p.request.return_token_strs);
  auto c = parse_tokenize_request(
      R"({"messages": [{"role": "user", "content": "hi"}], "return_token_strs": true})", limits());
  ASSERT_FALSE(c.error);
  EXPECT_TRUE(c.request.is_chat);
  EXPECT_FALSE(c.request.add_special_tokens);  // chat: the template has them
  EXPECT_TRUE(c.request.return_token_strs);
  auto bad = parse_tokenize_request(R"({"prompt": 5})", limits());
  ASSERT_TRUE(bad.error);
  EXPECT_EQ(bad.error->param, "prompt");
  auto none = parse_tokenize_request(R"({})", limits());
  ASSERT_TRUE(none.error);
  EXPECT_EQ(none.error->param, "prompt");

  auto d = parse_detokenize_request(R"({"tokens": [1, 2]})", limits());
  ASSERT_FALSE(d.error);
  EXPECT_EQ(d.request.tokens, (std::vector<int32_t>{1, 2}));
  auto dbad = parse_detokenize_request(R"({"tokens": [1, "2"]})", limits());
  ASSERT_TRUE(dbad.error);
  EXPECT_EQ(dbad.error->param, "tokens");
}

// ---- model and lengths ----

TEST(Protocol, ModelNamesAndLengths) {
  EXPECT_FALSE(check_model("", {"a", "b"}));
  EXPECT_FALSE(check_model("b", {"a", "b"}));
  auto e = check_model("c", {"a", "b"});
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 404);
  EXPECT_EQ(e->type(), "NotFoundError");
  EXPECT_EQ(e->param, "model");

  GenerationParams p;
  auto d = decide_max_tokens(p, 10, 100, 16);  // completions default
  EXPECT_FALSE(d.error);
  EXPECT_EQ(d.max_new_tokens, 16);
  d = decide_max_tokens(p, 95, 100, 16);  // capped by the room left
  EXPECT_EQ(d.max_new_tokens, 5);
  d = decide_max_tokens(p, 10, 100, std::nullopt);  // chat: all the room
  EXPECT_EQ(d.max_new_tokens, 90);
  p.max_tokens = 91;
  d = decide_max_tokens(p, 10, 100, std::nullopt);
  ASSERT_TRUE(d.error);
  EXPECT_EQ(d.error->param, "max_tokens");
  EXPECT_NE(d.error->message.find("maximum context length is 100"), std::string::npos);
  p.max_tokens = 90;
  EXPECT_FALSE(decide_max_tokens(p, 10, 100, std::nullopt).error);
  EXPECT_TRUE(decide_max_tokens(GenerationParams{}, 0, 100, 16).error);
  EXPECT_TRUE(decide_max_tokens(GenerationParams{}, 100, 100, 16).error);
}

// ---- responses ----

TEST(Responses, ErrorObject) {
  auto j = json::parse(encode_error(bad_request("temperature must be >= 0", "temperature")));
  ASSERT_TRUE(j.contains("error"));
  EXPECT_EQ(j["error"]["message"], "temperature must be >= 0");
  EXPECT_EQ(j["error"]["type"], "BadRequestError");
  EXPECT_EQ(j["error"]["param"], "temperature");
  EXPECT_EQ(j["error"]["code"], 400);
  auto n = json::parse(encode_error(ApiError{401, "no key", ""}));
  EXPECT_TRUE(n["error"]["param"].is_null());
  EXPECT_EQ(n["error"]["type"], "AuthenticationError");
  EXPECT_EQ((ApiError{503, "", ""}).type(), "ServiceUnavailableError");
  EXPECT_EQ((ApiError{413, "", ""}).type(), "RequestTooLargeError");
}

ResponseMeta meta() { return ResponseMeta{"cmpl-abc", 1700000000, "tiny"}; }

json sse_json(const std::string& event) {
  EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n");
  return json::parse(event.substr(6, event.size() - 8));
}

TEST(Responses, CompletionShapes) {
  Finish f{"stop", "\n"};
  auto j = json::parse(encode_completion(meta(), "Hi", f, Usage{3, 2}));
  EXPECT_EQ(j["id"], "cmpl-abc");
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "tiny");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["text"], "Hi");
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["choices"][0]["stop_reason"], "\n");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(j["usage"]["completion_tokens"], 2);
  EXPECT_EQ(j["usage"]["total_tokens"], 5);

  auto c = sse_json(encode_completion_chunk(meta(), "a", nullptr, nullptr));
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["choices"][0]["text"], "a");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(c.contains("usage"));
  Finish len{"length", nullptr};
  auto last = sse_json(encode_completion_chunk(meta(), "", &len, nullptr));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(last["choices"][0]["stop_reason"].is_null());
  auto u = sse_json(encode_usage_chunk(meta(), false, Usage{4, 6}));
  EXPECT_TRUE(u["choices"].is_array());
  EXPECT_TRUE(u["choices"].empty());
  EXPECT_EQ(u["usage"]["total_tokens"], 10);
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

TEST(Responses, ChatShapes) {
  ResponseMeta m{"chatcmpl-x", 1, "tiny"};
  Finish f{"length", nullptr};
  auto j = json::parse(encode_chat_completion(m, "Hello", f, Usage{5, 1}));
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["total_tokens"], 6);

  auto role = sse_json(encode_chat_role_chunk(m, nullptr));
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(role["choices"][0]["delta"]["content"], "");
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  auto mid = sse_json(encode_chat_chunk(m, "lo", nullptr, nullptr));
  EXPECT_EQ(mid["choices"][0]["delta"]["content"], "lo");
  EXPECT_FALSE(mid["choices"][0]["delta"].contains("role"));
  Finish stop{"stop", 7};
  auto fin = sse_json(encode_chat_chunk(m, "", &stop, nullptr));
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(fin["choices"][0]["stop_reason"], 7);
  EXPECT_TRUE(fin["choices"][0]["delta"].is_object());
  Usage u{1, 2};
  auto withu = sse_json(encode_chat_chunk(m, "x", nullptr, &u));
  EXPECT_EQ(withu["usage"]["completion_tokens"], 2);
  auto uc = sse_json(encode_usage_chunk(m, true, u));
  EXPECT_EQ(uc["object"], "chat.completion.chunk");
  EXPECT_TRUE(uc["choices"].empty());
  // Bytes that are not UTF-8 never make the encoder throw.
  EXPECT_NO_THROW(encode_chat_chunk(m, "\xff\xfe", nullptr, nullptr));
}

TEST(Responses, ModelsTokenizeDetokenize) {
  auto j = json::parse(encode_models({"a", "b"}, "/models/a", 4096, 5));
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["id"], "a");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][1]["id"], "b");
  EXPECT_EQ(j["data"][0]["max_model_len"], 4096);
  EXPECT_EQ(j["data"][0]["owned_by"], "shardwise");
  auto t = json::parse(encode_tokenize({1, 2, 3}, 100, nullptr));
  EXPECT_EQ(t["count"], 3);
  EXPECT_EQ(t["max_model_len"], 100);
  EXPECT_EQ(t["tokens"], json({1, 2, 3}));
  EXPECT_TRUE(t["token_strs"].is_null());
  std::vector<std::string> strs = {"a", "b", "c"};
  EXPECT_EQ(json::parse(encode_tokenize({1, 2, 3}, 100, &strs))["token_strs"][2], "c");
  EXPECT_EQ(json::parse(encode_detokenize("hey"))["prompt"], "hey");
  const std::string id = make_response_id("cmpl-");
  EXPECT_EQ(id.rfind("cmpl-", 0), 0u);
  EXPECT_EQ(id.size(), 5u + 32u);
  EXPECT_NE(id, make_response_id("cmpl-"));
}

// ---- Prometheus text format ----

// Checks the text exposition format 0.0.4: HELP/TYPE before samples of a family, names and
// labels well-formed, values numbers, histogram buckets cumulative with le and +Inf = _count.
// Returns "" or what is wrong.
std::string check_exposition(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  std::map<std::string, double> last_bucket, inf_bucket, counts;
  if (text.empty() || text.back() != '\n') return "does not end with a newline";
  auto valid_name = [](const std::string& n) {
    if (n.empty()) return false;
    for (size_t i = 0; i < n.size(); ++i) {
      char c = n[i];
      bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':' ||
                (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
      if (!ok) return false;
    }
    return true;
  };
  while (std::getline(in, line)) {
    if (line.empty()) return "empty line";
    if (line[0] == '#') {
      std::istringstream ls(line);
      std::string hash, kind, name, rest;
      ls >> hash >> kind >> name;
      if (!valid_name(name)) return "bad name in " + line;
      if (kind == "HELP") {
        helped.insert(name);
      } else if (kind == "TYPE") {
        ls >> rest;
        if (rest != "counter" && rest != "gauge" && rest != "histogram") return "type " + rest;
        if (types.count(name)) return "TYPE twice for " + name;
        types[name] = rest;
      } else {
        return "comment " + line;
      }
      continue;
    }
    // name{labels} value
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    const std::string name = line.substr(0, i);
    if (!valid_name(name)) return "bad sample name in " + line;
    std::map<std::string, std::string> labels;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find('=', i);
        if (eq == std::string::npos || line[eq + 1] != '"') return "bad label in " + line;
        std::string key = line.substr(i, eq - i);
        if (!valid_name(key)) return "bad label name in " + line;
        size_t j = eq + 2;
        std::string value;
        while (j < line.size() && line[j] != '"') {
          if (line[j] == '\\') {
            if (j + 1 >= line.size()) return "bad escape in " + line;
            const char e = line[j + 1];
            if (e != '\\' && e != '"' && e != 'n') return "bad escape in " + line;
            ++j;
          }
          value += line[j++];
        }
        if (j >= line.size()) return "unterminated label in " + line;
        labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) return "unterminated labels in " + line;
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') return "no value in " + line;
    const std::string value = line.substr(i + 1);
    double v = 0;
    if (value == "+Inf") {
      v = INFINITY;
    } else {
      try {
        size_t used = 0;
        v = std::stod(value, &used);
        if (used != value.size()) return "bad value in " + line;
      } catch (...) {
        return "bad value in " + line;
      }
    }
    // The family: the name itself, or a histogram's base.
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string s = suffix;
      if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0 &&
          types.count(name.substr(0, name.size() - s.size())) &&
          types[name.substr(0, name.size() - s.size())] == "histogram")
        family = name.substr(0, name.size() - s.size());
    }
    if (!types.count(family)) return "sample without TYPE: " + line;
    if (!helped.count(family)) return "sample without HELP: " + line;
    if (types[family] == "histogram") {
      std::string key = family;
      for (const auto& [k, val] : labels)
        if (k != "le") key += "," + k + "=" + val;
      if (name == family + "_bucket") {
        if (!labels.count("le")) return "bucket without le: " + line;
        if (v < last_bucket[key]) return "buckets not cumulative: " + line;
        last_bucket[key] = v;
        if (labels["le"] == "+Inf") inf_bucket[key] = v;
      } else if (name == family + "_count") {
        counts[key] = v;
      } else if (name != family + "_sum") {
        return "histogram sample " + line;
      }
    } else if (types[family] == "counter" && v < 0) {
      return "negative counter " + line;
    }
  }
  for (const auto& [key, c] : counts) {
    if (!inf_bucket.count(key)) return "no +Inf bucket for " + key;
    if (inf_bucket[key] != c) return "+Inf bucket != _count for " + key;
  }
  return "";
}

TEST(Prometheus, RendersValidText) {
  PrometheusRegistry r;
  auto* c = r.counter("shardwise:prompt_tokens_total", "Prompt tokens.", {{"model_name", "m"}});
  c->inc(3);
  c->inc(2);
  auto* g = r.gauge("shardwise:num_requests_running", "Running.", {{"model_name", "m"}});
  g->set(4);
  auto* h = r.histogram("shardwise:e2e_request_latency_seconds", "E2E.", {0.5, 1.0},
                        {{"model_name", "m\"q\\\n"}});
  h->observe(0.2);
  h->observe(0.5);  // le is inclusive
  h->observe(0.7);
  h->observe(9);
  r.counter("shardwise:request_success_total", "Done.",
            {{"finished_reason", "stop"}, {"model_name", "m"}})
      ->inc();
  r.counter("shardwise:request_success_total", "Done.",
            {{"finished_reason", "length"}, {"model_name", "m"}});
  const std::string text = r.render();
  EXPECT_EQ(check_exposition(text), "") << text;
  EXPECT_NE(text.find("# TYPE shardwise:prompt_tokens_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("shardwise:prompt_tokens_total{model_name=\"m\"} 5\n"), std::string::npos);
  EXPECT_NE(text.find("shardwise:num_requests_running{model_name=\"m\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("shardwise:e2e_request_latency_seconds_bucket{model_name=\"m\\\"q\\\\\\n\","
                      "le=\"0.5\"} 2\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("le=\"+Inf\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("_count{model_name=\"m\\\"q\\\\\\n\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("_sum{model_name=\"m\\\"q\\\\\\n\"} 10.4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("finished_reason=\"length\",model_name=\"m\"} 0\n"), std::string::npos);
  // The checker itself catches broken text.
  EXPECT_NE(check_exposition("x 1\n"), "");
  EXPECT_NE(check_exposition("# HELP x h\n# TYPE x counter\nx{a=\"1} 1\n"), "");
  EXPECT_NE(check_exposition("# HELP h h\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                             "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"),
            "");
  EXPECT_EQ(prometheus_number(INFINITY), "+Inf");
  EXPECT_EQ(prometheus_number(0.25), "0.25");
  EXPECT_EQ(prometheus_number(3), "3");
}

// The fuzzer's seeds (fuzz/corpus/openai_request) are bodies some route accepts.
TEST(FuzzSeeds, OpenAiRequestSeedsParse) {
  namespace fs = std::filesystem;
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::path(SHARDWISE_SOURCE_DIR) / "fuzz" / "corpus" /
                                              "openai_request")) {
    std::ifstream in(e.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string body = ss.str();
    const std::string name = e.path().filename().string();
    bool accepted = false;
    if (name.starts_with("completion")) accepted = !completion(json::parse(body)).error;
    if (name.starts_with("chat")) accepted = !chat(json::parse(body)).error;
    if (name.starts_with("tokenize")) accepted = !parse_tokenize_request(body, limits()).error;
    if (name.starts_with("detokenize")) accepted = !parse_detokenize_request(body, limits()).error;
    EXPECT_TRUE(accepted) << name;
    ++n;
  }
  EXPECT_GE(n, 4);
}

}  // namespace
}  // namespace sw::frontend

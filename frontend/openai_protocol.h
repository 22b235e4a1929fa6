// The OpenAI-compatible API as vLLM serves it: request bodies parsed and validated into plain
// structs, responses, SSE chunks and errors encoded — no sockets, engine or tokenizer, so that
// the fuzzing build compiles it from source. Add a request field: a member below, its parsing
// in parse_generation_fields() (or the route's parser), a test in test_openai_protocol.cpp.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sw::frontend {

// An error reply: OpenAI's {"error": {"message", "type", "param", "code"}} with an HTTP status.
// `type` is the name the OpenAI SDK gives the status (BadRequestError, NotFoundError, ...), as
// vLLM reports it; `code` is the status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;  // the request field at fault ("" when none)
  std::string type() const;
};
ApiError bad_request(std::string message, std::string param = "");
std::string encode_error(const ApiError& e);

// Bounds on what one request may carry (HttpServerOptions sets them).
struct ProtocolLimits {
  int max_json_depth = 64;
  int64_t max_stop_strings = 64;
  int64_t max_stop_string_bytes = 1024;
  int64_t max_stop_token_ids = 1024;
  int64_t max_prompt_ids = int64_t{1} << 22;
  int64_t max_messages = 100000;
};

// Fields the two generation routes share. Defaults are OpenAI's and vLLM's.
struct GenerationParams {
  std::string model;                  // "" when absent
  std::optional<int64_t> max_tokens;  // absent: the route's default (completions 16, chat
                                      // max_model_len - prompt)
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;              // 0 (or vLLM's -1): off
  std::optional<uint64_t> seed;   // absent: drawn per request
  std::vector<std::string> stop;  // non-empty strings
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool skip_special_tokens = true;
  bool stream = false;
  bool include_usage = false;           // stream_options.include_usage
  bool continuous_usage_stats = false;  // stream_options.continuous_usage_stats (vLLM)
  std::string user;
};

struct CompletionRequest {
  GenerationParams params;
  bool prompt_is_ids = false;
  std::string prompt;               // !prompt_is_ids
  std::vector<int32_t> prompt_ids;  // prompt_is_ids
  bool add_special_tokens = true;
};

struct ChatTemplateInput {
  std::string messages;
  std::string tools;
  std::string documents;
};

struct ChatRequest {
  GenerationParams params;
  // The messages with text parts joined (content a string or null), other keys as sent.
  nlohmann::json messages = nlohmann::json::array();
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  bool add_special_tokens = false;
  nlohmann::json tools;      // null or list
  nlohmann::json documents;  // null or list
  nlohmann::json chat_template_kwargs = nlohmann::json::object();
  // messages (normalised as above), tools and documents as JSON text in the client's key
  // order, for the chat template ("" when absent): templates show key order (tojson,
  // .items()), which nlohmann::json sorts.
  ChatTemplateInput ordered;
};

// POST /tokenize: a completion-style (prompt) or chat-style (messages) request.
struct TokenizeRequest {
  std::string model;
  bool is_chat = false;
  std::string prompt;                                 // !is_chat
  nlohmann::json messages = nlohmann::json::array();  // is_chat, normalised as ChatRequest's
  bool add_special_tokens = true;                     // default: true (prompt), false (chat)
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  nlohmann::json tools;
  nlohmann::json documents;
  nlohmann::json chat_template_kwargs = nlohmann::json::object();
  ChatTemplateInput ordered;  // as ChatRequest's
  bool return_token_strs = false;
};

struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;
};

// Each parser: the request or the error (never both); `body` is the raw HTTP body.
struct CompletionParse {
  CompletionRequest request;
  std::optional<ApiError> error;
};
struct ChatParse {
  ChatRequest request;
  std::optional<ApiError> error;
};
struct TokenizeParse {
  TokenizeRequest request;
  std::optional<ApiError> error;
};
struct DetokenizeParse {
  DetokenizeRequest request;
  std::optional<ApiError> error;
};
CompletionParse parse_completion_request(std::string_view body, const ProtocolLimits& limits);
ChatParse parse_chat_request(std::string_view body, const ProtocolLimits& limits);
TokenizeParse parse_tokenize_request(std::string_view body, const ProtocolLimits& limits);
DetokenizeParse parse_detokenize_request(std::string_view body, const ProtocolLimits& limits);

// The body's "model" against the served names: "" (absent) or one of them is fine; anything
// else is the 404 vLLM returns.
std::optional<ApiError> check_model(const std::string& requested,
                                    const std::vector<std::string>& served_names);

// The generation length for a prompt of `num_prompt` tokens (vLLM's rules): the request's
// max_tokens, else `default_max` (completions: 16) or, when `default_max` is nullopt (chat),
// max_model_len - num_prompt. Errors: an empty prompt, or prompt + max_tokens beyond
// max_model_len, with vLLM's message.
struct LengthDecision {
  int64_t max_new_tokens = 0;
  std::optional<ApiError> error;
};
LengthDecision decide_max_tokens(const GenerationParams& p, int64_t num_prompt,
                                 int64_t max_model_len, std::optional<int64_t> default_max);

// ---- responses ----

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t total() const { return prompt_tokens + completion_tokens; }
};
nlohmann::ordered_json usage_json(const Usage& u);

// Why generation ended, as a choice reports it: "stop" | "length" | "abort" | "error"; and
// vLLM's stop_reason: the stop string or stop token id that ended it (null for eos/length).
struct Finish {
  std::string reason;
  nlohmann::json stop_reason;  // null, a string or an integer
};

// Identity of one response: its id ("cmpl-..." / "chatcmpl-..."), creation time and model.
struct ResponseMeta {
  std::string id;
  int64_t created = 0;  // unix seconds
  std::string model;
};
std::string make_response_id(std::string_view prefix);  // prefix + 32 random hex digits

// Non-streaming bodies.
std::string encode_completion(const ResponseMeta& m, const std::string& text, const Finish& f,
                              const Usage& u);
std::string encode_chat_completion(const ResponseMeta& m, const std::string& text, const Finish& f,
                                   const Usage& u);

// SSE events: "data: {json}\n\n". `finish` null for a chunk mid-stream; `usage` only with
// continuous_usage_stats (vLLM) or the final usage chunk.
std::string sse_event(const nlohmann::ordered_json& j);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";
std::string encode_completion_chunk(const ResponseMeta& m, const std::string& text,
                                    const Finish* finish, const Usage* usage);
// First chat chunk: role "assistant" and content "".
std::string encode_chat_role_chunk(const ResponseMeta& m, const Usage* usage);
std::string encode_chat_chunk(const ResponseMeta& m, const std::string& text, const Finish* finish,
                              const Usage* usage);
// stream_options.include_usage: choices [] and the usage.
std::string encode_usage_chunk(const ResponseMeta& m, bool chat, const Usage& u);
// An error inside a stream (after the 200 went out): data: {"error": {...}}.
std::string encode_stream_error(const ApiError& e);

std::string encode_models(const std::vector<std::string>& served_names, const std::string& root,
                          int64_t max_model_len, int64_t created);
std::string encode_tokenize(const std::vector<int32_t>& tokens, int64_t max_model_len,
                            const std::vector<std::string>* token_strs);
std::string encode_detokenize(const std::string& prompt);

// JSON text of any value: invalid UTF-8 replaced (never throws).
std::string dump_json(const nlohmann::ordered_json& j);

}  // namespace sw::frontend

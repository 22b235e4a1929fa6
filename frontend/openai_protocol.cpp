// Request parsing and response encoding of the OpenAI-compatible API (see openai_protocol.h).
// Every field is read through Fields, whose errors name the field as OpenAI's "param"; a field
// the engine cannot honour yet is refused unless it carries its neutral value.
#include "frontend/openai_protocol.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include "frontend/json_limits.h"

namespace sw::frontend {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

const char* json_type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unsupported value";
  }
}

// Typed reads of one JSON object's fields; the first error is kept and later reads are no-ops.
class Fields {
 public:
  explicit Fields(const json& obj) : obj_(obj) {}

  bool ok() const { return !error.has_value(); }
  void fail(std::string param, std::string message) {
    if (!error) error = bad_request(std::move(message), std::move(param));
  }
  // The field, or null when absent (OpenAI treats an explicit null as absent).
  const json* get(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  void read_string(const char* key, std::string* out) {
    const json* v = get(key);
    if (!ok() || !v) return;
    if (!v->is_string()) return wrong_type(key, "a string", *v);
    *out = v->get<std::string>();
  }
  void read_bool(const char* key, bool* out) {
    const json* v = get(key);
    if (!ok() || !v) return;
    if (!v->is_boolean()) return wrong_type(key, "a boolean", *v);
    *out = v->get<bool>();
  }
  // An integer in [lo, hi]; a float with an integral value (2.0) is accepted, as pydantic does.
  bool read_int(const char* key, int64_t lo, int64_t hi, int64_t* out) {
    const json* v = get(key);
    if (!ok() || !v) return false;
    int64_t x = 0;
    if (!to_int(*v, &x)) {
      wrong_type(key, "an integer", *v);
      return false;
    }
    if (x < lo || x > hi) {
      fail(key, fmt::format("{} must be in [{}, {}], got {}", key, lo, hi, x));
      return false;
    }
    *out = x;
    return true;
  }
  bool read_number(const char* key, double* out) {
    const json* v = get(key);
    if (!ok() || !v) return false;
    if (!v->is_number() || !std::isfinite(v->get<double>())) {
      wrong_type(key, "a number", *v);
      return false;
    }
    *out = v->get<double>();
    return true;
  }
  void wrong_type(const std::string& key, const char* expected, const json& v) {
    fail(key, fmt::format("{} must be {}, got {}", key, expected, json_type_name(v)));
  }
  static bool to_int(const json& v, int64_t* out) {
    if (v.is_number_integer()) {
      *out = v.get<int64_t>();
      return true;
    }
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
      *out = static_cast<int64_t>(u);
      return true;
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!std::isfinite(d) || d != std::floor(d) || std::abs(d) > 9.0e15) return false;
      *out = static_cast<int64_t>(d);
      return true;
    }
    return false;
  }

  std::optional<ApiError> error;

 private:
  const json& obj_;
};

// Parses the body as a JSON object; on failure the error is set.
json parse_body(std::string_view body, const ProtocolLimits& limits,
                std::optional<ApiError>* error) {
  auto parsed = parse_json_bounded(body, limits.max_json_depth, /*reject_duplicate_keys=*/false);
  if (!parsed.ok()) {
    *error = bad_request(parsed.status().message());
    return json();
  }
  if (!parsed->is_object()) {
    *error = bad_request(
        fmt::format("the request body must be a JSON object, got {}", json_type_name(*parsed)));
    return json();
  }
  return std::move(parsed).value();
}

// A list of token ids, each in [0, int32 max].
bool read_token_list(Fields& f, const json& v, const std::string& param, int64_t max_len,
                     std::vector<int32_t>* out) {
  if (!v.is_array()) {
    f.wrong_type(param, "a list of token ids", v);
    return false;
  }
  if (static_cast<int64_t>(v.size()) > max_len) {
    f.fail(param,
           fmt::format("{} has {} token ids, more than the limit of {}", param, v.size(), max_len));
    return false;
  }
  out->clear();
  out->reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    int64_t x = 0;
    if (!Fields::to_int(v[i], &x) || x < 0 || x > std::numeric_limits<int32_t>::max()) {
      f.fail(param, fmt::format("{}[{}] must be a token id (an integer >= 0), got {}", param, i,
                                v[i].is_number() ? v[i].dump() : json_type_name(v[i])));
      return false;
    }
    out->push_back(static_cast<int32_t>(x));
  }
  return true;
}

// Fields the engine has no support for: accepted only with their neutral value.
void refuse_unsupported(Fields& f, const json& body, bool chat) {
  auto number_is = [&](const char* key, double neutral) {
    const json* v = f.get(key);
    if (!f.ok() || !v) return;
    if (!v->is_number()) return f.wrong_type(key, "a number", *v);
    if (v->get<double>() != neutral)
      f.fail(key, fmt::format("{} is not supported by this server (only {})", key, neutral));
  };
  number_is("presence_penalty", 0);
  number_is("frequency_penalty", 0);
  number_is("repetition_penalty", 1);
  number_is("min_p", 0);
  number_is("length_penalty", 1);
  {
    int64_t n = 1;
    if (f.read_int("n", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                   &n) &&
        n != 1)
      f.fail("n", fmt::format("n must be 1 (one choice per request), got {}", n));
    int64_t best_of = 1;
    if (f.read_int("best_of", std::numeric_limits<int64_t>::min(),
                   std::numeric_limits<int64_t>::max(), &best_of) &&
        best_of != 1)
      f.fail("best_of", "best_of is not supported by this server (only 1)");
    int64_t min_tokens = 0;
    if (f.read_int("min_tokens", std::numeric_limits<int64_t>::min(),
                   std::numeric_limits<int64_t>::max(), &min_tokens) &&
        min_tokens != 0)
      f.fail("min_tokens", "min_tokens is not supported by this server (only 0)");
  }
  bool flag = false;
  f.read_bool("use_beam_search", &flag);
  if (flag) f.fail("use_beam_search", "beam search is not supported by this server");
  // logprobs: completions take an integer, chat a boolean (+ top_logprobs). The engine does
  // not return log-probabilities yet: only "none asked" is accepted.
  if (const json* v = f.get("logprobs"); f.ok() && v) {
    const bool none = (v->is_boolean() && !v->get<bool>()) ||
                      (v->is_number_integer() && v->get<int64_t>() == 0) ||
                      (v->is_number_unsigned() && v->get<uint64_t>() == 0);
    const bool right_type = chat ? v->is_boolean() : (v->is_number() || v->is_boolean());
    if (!right_type)
      f.wrong_type("logprobs", chat ? "a boolean" : "an integer", *v);
    else if (!none)
      f.fail("logprobs", "logprobs are not supported by this server yet");
  }
  if (const json* v = f.get("top_logprobs"); f.ok() && v) {
    int64_t k = 0;
    if (!Fields::to_int(*v, &k))
      f.wrong_type("top_logprobs", "an integer", *v);
    else if (k != 0)
      f.fail("top_logprobs", "logprobs are not supported by this server yet");
  }
  if (const json* v = f.get("prompt_logprobs"); f.ok() && v)
    f.fail("prompt_logprobs", "prompt_logprobs are not supported by this server");
  if (const json* v = f.get("logit_bias"); f.ok() && v) {
    if (!v->is_object())
      f.wrong_type("logit_bias", "an object", *v);
    else if (!v->empty())
      f.fail("logit_bias", "logit_bias is not supported by this server");
  }
  if (const json* v = f.get("response_format"); f.ok() && v) {
    if (!v->is_object()) {
      f.wrong_type("response_format", "an object", *v);
    } else {
      auto t = v->find("type");
      if (t == v->end() || !t->is_string() || *t != "text")
        f.fail("response_format",
               "response_format: only {\"type\": \"text\"} is supported by this server");
    }
  }
  for (const char* key : {"guided_json", "guided_regex", "guided_choice", "guided_grammar",
                          "structured_outputs", "suffix", "lora_request"}) {
    if (f.get(key) && f.ok()) f.fail(key, fmt::format("{} is not supported by this server", key));
  }
  if (!chat) {
    bool echo = false;
    f.read_bool("echo", &echo);
    if (echo) f.fail("echo", "echo is not supported by this server (only false)");
  }
  if (chat) {
    if (const json* v = f.get("tool_choice"); f.ok() && v) {
      if (!(v->is_string() && (*v == "none" || *v == "auto")))
        f.fail("tool_choice",
               "tool_choice: only \"none\" and \"auto\" are supported by this server (no "
               "constrained decoding)");
    }
    bool parallel = true;
    f.read_bool("parallel_tool_calls", &parallel);
    if (f.get("chat_template") && f.ok())
      f.fail("chat_template",
             "a chat_template in the request is not accepted; the server's (--chat-template) "
             "is used");
  }
  (void)body;
}

// stop: a string or a list of strings (empty strings are dropped).
void read_stop(Fields& f, const ProtocolLimits& limits, std::vector<std::string>* out) {
  const json* v = f.get("stop");
  if (!f.ok() || !v) return;
  std::vector<const json*> items;
  if (v->is_string()) {
    items.push_back(v);
  } else if (v->is_array()) {
    if (static_cast<int64_t>(v->size()) > limits.max_stop_strings)
      return f.fail("stop", fmt::format("stop has {} strings, more than the limit of {}", v->size(),
                                        limits.max_stop_strings));
    for (const auto& e : *v) items.push_back(&e);
  } else {
    return f.wrong_type("stop", "a string or a list of strings", *v);
  }
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i]->is_string())
      return f.fail("stop",
                    fmt::format("stop[{}] must be a string, got {}", i, json_type_name(*items[i])));
    std::string s = items[i]->get<std::string>();
    if (static_cast<int64_t>(s.size()) > limits.max_stop_string_bytes)
      return f.fail("stop", fmt::format("a stop string is {} bytes, more than the limit of {}",
                                        s.size(), limits.max_stop_string_bytes));
    if (!s.empty()) out->push_back(std::move(s));
  }
}

void parse_generation_fields(Fields& f, const json& body, const ProtocolLimits& limits, bool chat,
                             GenerationParams* p) {
  f.read_string("model", &p->model);
  const int64_t kMaxInt = std::numeric_limits<int64_t>::max();
  // Chat: max_completion_tokens (OpenAI's current name) wins over the deprecated max_tokens.
  int64_t max_tokens = 0;
  if (chat && f.get("max_completion_tokens")) {
    if (f.read_int("max_completion_tokens", 1, kMaxInt, &max_tokens)) p->max_tokens = max_tokens;
  } else if (f.read_int("max_tokens", 1, kMaxInt, &max_tokens)) {
    p->max_tokens = max_tokens;
  }
  if (f.read_number("temperature", &p->temperature) && p->temperature < 0)
    f.fail("temperature", fmt::format("temperature must be >= 0, got {}", p->temperature));
  if (f.read_number("top_p", &p->top_p) && !(p->top_p > 0 && p->top_p <= 1))
    f.fail("top_p", fmt::format("top_p must be in (0, 1], got {}", p->top_p));
  int64_t top_k = 0;
  if (f.read_int("top_k", -1, std::numeric_limits<int32_t>::max(), &top_k))
    p->top_k = top_k < 0 ? 0 : top_k;  // vLLM: -1 disables
  if (const json* v = f.get("seed"); f.ok() && v) {
    int64_t seed = 0;
    if (v->is_number_unsigned())
      p->seed = v->get<uint64_t>();
    else if (Fields::to_int(*v, &seed))
      p->seed = static_cast<uint64_t>(seed);  // wraps, as torch
    else
      f.wrong_type("seed", "an integer", *v);
  }
  read_stop(f, limits, &p->stop);
  if (const json* v = f.get("stop_token_ids"); f.ok() && v)
    read_token_list(f, *v, "stop_token_ids", limits.max_stop_token_ids, &p->stop_token_ids);
  f.read_bool("ignore_eos", &p->ignore_eos);
  f.read_bool("skip_special_tokens", &p->skip_special_tokens);
  f.read_bool("stream", &p->stream);
  if (const json* v = f.get("stream_options"); f.ok() && v) {
    if (!v->is_object()) {
      f.wrong_type("stream_options", "an object", *v);
    } else if (!p->stream) {
      f.fail("stream_options", "stream_options is only allowed when stream is true");
    } else {
      Fields so(*v);
      so.read_bool("include_usage", &p->include_usage);
      so.read_bool("continuous_usage_stats", &p->continuous_usage_stats);
      if (so.error) f.fail("stream_options." + so.error->param, so.error->message);
    }
  }
  f.read_string("user", &p->user);
  refuse_unsupported(f, body, chat);
}

// OpenAI messages: a non-empty list of objects with a string role and content that is a
// string, null or a list of {"type": "text", "text": ...} parts (joined with "\n", as vLLM's
// "string" content format). Other keys (name, tool_calls, tool_call_id, ...) pass through.
void read_messages(Fields& f, const json& body, const ProtocolLimits& limits, json* out) {
  const json* v = f.get("messages");
  if (!f.ok()) return;
  if (!v) return f.fail("messages", "messages is required");
  if (!v->is_array()) return f.wrong_type("messages", "a list of messages", *v);
  if (v->empty()) return f.fail("messages", "messages must not be empty");
  if (static_cast<int64_t>(v->size()) > limits.max_messages)
    return f.fail("messages", fmt::format("{} messages, more than the limit of {}", v->size(),
                                          limits.max_messages));
  *out = json::array();
  for (size_t i = 0; i < v->size(); ++i) {
    const json& m = (*v)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) return f.wrong_type(where, "an object", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      return f.fail(where + ".role", fmt::format("{}.role must be a string", where));
    json msg = m;
    auto content = m.find("content");
    if (content != m.end() && content->is_array()) {
      std::string text;
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        const std::string pw = fmt::format("{}.content[{}]", where, k);
        if (part.is_string()) {  // a bare string part: accepted, as vLLM does
          if (!text.empty()) text += "\n";
          text += part.get<std::string>();
          continue;
        }
        if (!part.is_object()) return f.wrong_type(pw, "a content part object", part);
        auto type = part.find("type");
        if (type == part.end() || !type->is_string())
          return f.fail(pw + ".type", fmt::format("{}.type must be a string", pw));
        if (*type != "text")
          return f.fail(pw + ".type",
                        fmt::format("{}.type \"{}\" is not supported: this server takes text only",
                                    pw, type->get<std::string>()));
        auto t = part.find("text");
        if (t == part.end() || !t->is_string())
          return f.fail(pw + ".text", fmt::format("{}.text must be a string", pw));
        if (!text.empty()) text += "\n";
        text += t->get<std::string>();
      }
      msg["content"] = text;
    } else if (content != m.end() && !content->is_string() && !content->is_null()) {
      return f.wrong_type(where + ".content", "a string, null or a list of content parts",
                          *content);
    }
    out->push_back(std::move(msg));
  }
  (void)body;
}

// The chat template's inputs from a body that passed parse_body (so its nesting is bounded) in
// the client's key order, with content parts joined as read_messages joins them.
ChatTemplateInput ordered_chat_input(std::string_view body) {
  ChatTemplateInput in;
  const ordered_json o = ordered_json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!o.is_object()) return in;
  if (auto m = o.find("messages"); m != o.end() && m->is_array()) {
    ordered_json messages = ordered_json::array();
    for (ordered_json msg : *m) {
      if (auto c = msg.find("content"); c != msg.end() && c->is_array()) {
        std::string text;
        for (const ordered_json& part : *c) {
          if (!text.empty()) text += "\n";
          text += part.is_string() ? part.get<std::string>() : part.at("text").get<std::string>();
        }
        *c = text;
      }
      messages.push_back(std::move(msg));
    }
    in.messages = dump_json(messages);
  }
  for (auto [key, out] : {std::pair{"tools", &in.tools}, std::pair{"documents", &in.documents}})
    if (auto v = o.find(key); v != o.end() && v->is_array()) *out = dump_json(*v);
  return in;
}

void read_chat_template_fields(Fields& f, bool* add_generation_prompt, bool* continue_final,
                               json* tools, json* documents, json* kwargs) {
  f.read_bool("add_generation_prompt", add_generation_prompt);
  f.read_bool("continue_final_message", continue_final);
  if (f.ok() && *add_generation_prompt && *continue_final && f.get("add_generation_prompt"))
    f.fail("continue_final_message",
           "cannot set both continue_final_message and add_generation_prompt to true");
  if (*continue_final) *add_generation_prompt = false;
  if (const json* v = f.get("tools"); f.ok() && v) {
    if (!v->is_array())
      f.wrong_type("tools", "a list", *v);
    else
      *tools = *v;
  }
  if (const json* v = f.get("documents"); f.ok() && v) {
    if (!v->is_array())
      f.wrong_type("documents", "a list", *v);
    else
      *documents = *v;
  }
  if (const json* v = f.get("chat_template_kwargs"); f.ok() && v) {
    if (!v->is_object())
      f.wrong_type("chat_template_kwargs", "an object", *v);
    else
      *kwargs = *v;
  }
}

ordered_json finish_fields(ordered_json choice, const Finish* f) {
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = f ? ordered_json(f->reason) : ordered_json(nullptr);
  choice["stop_reason"] = f ? ordered_json(f->stop_reason) : ordered_json(nullptr);
  return choice;
}

ordered_json head(const ResponseMeta& m, const char* object) {
  ordered_json j;
  j["id"] = m.id;
  j["object"] = object;
  j["created"] = m.created;
  j["model"] = m.model;
  return j;
}

}  // namespace

// ---- errors ----

std::string ApiError::type() const {
  switch (status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 403: return "PermissionDeniedError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowedError";
    case 408: return "RequestTimeoutError";
    case 413: return "RequestTooLargeError";
    case 422: return "UnprocessableEntityError";
    case 429: return "RateLimitError";
    case 431: return "RequestHeaderFieldsTooLargeError";
    case 503: return "ServiceUnavailableError";
    default: return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

ApiError bad_request(std::string message, std::string param) {
  return ApiError{400, std::move(message), std::move(param)};
}

std::string encode_error(const ApiError& e) {
  ordered_json err;
  err["message"] = e.message;
  err["type"] = e.type();
  err["param"] = e.param.empty() ? ordered_json(nullptr) : ordered_json(e.param);
  err["code"] = e.status;
  ordered_json j;
  j["error"] = std::move(err);
  return dump_json(j);
}

std::string encode_stream_error(const ApiError& e) { return "data: " + encode_error(e) + "\n\n"; }

// ---- requests ----

CompletionParse parse_completion_request(std::string_view body, const ProtocolLimits& limits) {
  CompletionParse out;
  json j = parse_body(body, limits, &out.error);
  if (out.error) return out;
  Fields f(j);
  CompletionRequest& r = out.request;
  parse_generation_fields(f, j, limits, /*chat=*/false, &r.params);
  f.read_bool("add_special_tokens", &r.add_special_tokens);
  const json* p = f.get("prompt");
  if (f.ok() && !p) f.fail("prompt", "prompt is required");
  if (f.ok()) {
    if (p->is_string()) {
      r.prompt = p->get<std::string>();
    } else if (p->is_array() && !p->empty() && (*p)[0].is_string()) {
      if (p->size() != 1)
        f.fail("prompt", fmt::format("prompt is a list of {} prompts; this server takes one "
                                     "prompt per request",
                                     p->size()));
      else
        r.prompt = (*p)[0].get<std::string>();
    } else if (p->is_array() && !p->empty() && (*p)[0].is_array()) {
      if (p->size() != 1)
        f.fail("prompt", fmt::format("prompt is a list of {} token lists; this server takes one "
                                     "prompt per request",
                                     p->size()));
      else if (read_token_list(f, (*p)[0], "prompt", limits.max_prompt_ids, &r.prompt_ids))
        r.prompt_is_ids = true;
    } else if (p->is_array()) {
      if (p->empty())
        f.fail("prompt", "prompt must not be empty");
      else if (read_token_list(f, *p, "prompt", limits.max_prompt_ids, &r.prompt_ids))
        r.prompt_is_ids = true;
    } else {
      f.wrong_type("prompt", "a string, a list of one string or a list of token ids", *p);
    }
  }
  out.error = f.error;
  return out;
}

ChatParse parse_chat_request(std::string_view body, const ProtocolLimits& limits) {
  ChatParse out;
  json j = parse_body(body, limits, &out.error);
  if (out.error) return out;
  Fields f(j);
  ChatRequest& r = out.request;
  parse_generation_fields(f, j, limits, /*chat=*/true, &r.params);
  read_messages(f, j, limits, &r.messages);
  read_chat_template_fields(f, &r.add_generation_prompt, &r.continue_final_message, &r.tools,
                            &r.documents, &r.chat_template_kwargs);
  f.read_bool("add_special_tokens", &r.add_special_tokens);
  out.error = f.error;
  if (!out.error) r.ordered = ordered_chat_input(body);
  return out;
}

TokenizeParse parse_tokenize_request(std::string_view body, const ProtocolLimits& limits) {
  TokenizeParse out;
  json j = parse_body(body, limits, &out.error);
  if (out.error) return out;
  Fields f(j);
  TokenizeRequest& r = out.request;
  f.read_string("model", &r.model);
  r.is_chat = j.contains("messages");
  if (r.is_chat) {
    r.add_special_tokens = false;
    read_messages(f, j, limits, &r.messages);
    read_chat_template_fields(f, &r.add_generation_prompt, &r.continue_final_message, &r.tools,
                              &r.documents, &r.chat_template_kwargs);
    if (f.get("chat_template") && f.ok())
      f.fail("chat_template", "a chat_template in the request is not accepted");
  } else {
    const json* p = f.get("prompt");
    if (f.ok() && !p) f.fail("prompt", "prompt (or messages) is required");
    if (f.ok() && !p->is_string()) f.wrong_type("prompt", "a string", *p);
    if (f.ok()) r.prompt = p->get<std::string>();
  }
  f.read_bool("add_special_tokens", &r.add_special_tokens);
  f.read_bool("return_token_strs", &r.return_token_strs);
  out.error = f.error;
  if (!out.error && r.is_chat) r.ordered = ordered_chat_input(body);
  return out;
}

DetokenizeParse parse_detokenize_request(std::string_view body, const ProtocolLimits& limits) {
  DetokenizeParse out;
  json j = parse_body(body, limits, &out.error);
  if (out.error) return out;
  Fields f(j);
  f.read_string("model", &out.request.model);
  const json* t = f.get("tokens");
  if (f.ok() && !t) f.fail("tokens", "tokens is required");
  if (f.ok()) read_token_list(f, *t, "tokens", limits.max_prompt_ids, &out.request.tokens);
  out.error = f.error;
  return out;
}

std::optional<ApiError> check_model(const std::string& requested,
                                    const std::vector<std::string>& served_names) {
  if (requested.empty()) return std::nullopt;
  for (const auto& n : served_names)
    if (n == requested) return std::nullopt;
  return ApiError{404, fmt::format("The model `{}` does not exist.", requested), "model"};
}

LengthDecision decide_max_tokens(const GenerationParams& p, int64_t num_prompt,
                                 int64_t max_model_len, std::optional<int64_t> default_max) {
  LengthDecision d;
  if (num_prompt <= 0) {
    d.error = bad_request("the prompt is empty (0 tokens)", "prompt");
    return d;
  }
  if (num_prompt >= max_model_len) {
    d.error = bad_request(
        fmt::format("This model's maximum context length is {} tokens. However, your request "
                    "has {} input tokens. Please reduce the length of the input messages.",
                    max_model_len, num_prompt),
        "");
    return d;
  }
  const int64_t room = max_model_len - num_prompt;
  if (p.max_tokens) {
    d.max_new_tokens = *p.max_tokens;
    if (*p.max_tokens > room) {
      d.error = bad_request(
          fmt::format("This model's maximum context length is {} tokens. However, you requested "
                      "{} tokens ({} in the messages, {} in the completion). Please reduce the "
                      "length of the messages or completion.",
                      max_model_len, num_prompt + *p.max_tokens, num_prompt, *p.max_tokens),
          "max_tokens");
    }
    return d;
  }
  d.max_new_tokens = default_max ? std::min(*default_max, room) : room;
  return d;
}

// ---- responses ----

std::string dump_json(const ordered_json& j) {
  return j.dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace);
}

std::string make_response_id(std::string_view prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}{:016x}", prefix, rng(), rng());
}

ordered_json usage_json(const Usage& u) {
  ordered_json j;
  j["prompt_tokens"] = u.prompt_tokens;
  j["total_tokens"] = u.total();
  j["completion_tokens"] = u.completion_tokens;
  j["prompt_tokens_details"] = nullptr;
  return j;
}

std::string encode_completion(const ResponseMeta& m, const std::string& text, const Finish& f,
                              const Usage& u) {
  ordered_json j = head(m, "text_completion");
  ordered_json c;
  c["index"] = 0;
  c["text"] = text;
  j["choices"] = ordered_json::array({finish_fields(std::move(c), &f)});
  j["usage"] = usage_json(u);
  return dump_json(j);
}

std::string encode_chat_completion(const ResponseMeta& m, const std::string& text, const Finish& f,
                                   const Usage& u) {
  ordered_json j = head(m, "chat.completion");
  ordered_json msg;
  msg["role"] = "assistant";
  msg["content"] = text;
  msg["tool_calls"] = ordered_json::array();
  ordered_json c;
  c["index"] = 0;
  c["message"] = std::move(msg);
  j["choices"] = ordered_json::array({finish_fields(std::move(c), &f)});
  j["usage"] = usage_json(u);
  return dump_json(j);
}

std::string sse_event(const ordered_json& j) { return "data: " + dump_json(j) + "\n\n"; }

std::string encode_completion_chunk(const ResponseMeta& m, const std::string& text,
                                    const Finish* finish, const Usage* usage) {
  ordered_json j = head(m, "text_completion");
  ordered_json c;
  c["index"] = 0;
  c["text"] = text;
  j["choices"] = ordered_json::array({finish_fields(std::move(c), finish)});
  if (usage) j["usage"] = usage_json(*usage);
  return sse_event(j);
}

std::string encode_chat_role_chunk(const ResponseMeta& m, const Usage* usage) {
  ordered_json j = head(m, "chat.completion.chunk");
  ordered_json delta;
  delta["role"] = "assistant";
  delta["content"] = "";
  ordered_json c;
  c["index"] = 0;
  c["delta"] = std::move(delta);
  j["choices"] = ordered_json::array({finish_fields(std::move(c), nullptr)});
  if (usage) j["usage"] = usage_json(*usage);
  return sse_event(j);
}

std::string encode_chat_chunk(const ResponseMeta& m, const std::string& text, const Finish* finish,
                              const Usage* usage) {
  ordered_json j = head(m, "chat.completion.chunk");
  ordered_json delta = ordered_json::object();
  if (!text.empty() || !finish) delta["content"] = text;
  ordered_json c;
  c["index"] = 0;
  c["delta"] = std::move(delta);
  j["choices"] = ordered_json::array({finish_fields(std::move(c), finish)});
  if (usage) j["usage"] = usage_json(*usage);
  return sse_event(j);
}

std::string encode_usage_chunk(const ResponseMeta& m, bool chat, const Usage& u) {
  ordered_json j = head(m, chat ? "chat.completion.chunk" : "text_completion");
  j["choices"] = ordered_json::array();
  j["usage"] = usage_json(u);
  return sse_event(j);
}

std::string encode_models(const std::vector<std::string>& served_names, const std::string& root,
                          int64_t max_model_len, int64_t created) {
  ordered_json data = ordered_json::array();
  for (const auto& name : served_names) {
    ordered_json card;
    card["id"] = name;
    card["object"] = "model";
    card["created"] = created;
    card["owned_by"] = "shardwise";
    card["root"] = root;
    card["parent"] = nullptr;
    card["max_model_len"] = max_model_len;
    data.push_back(std::move(card));
  }
  ordered_json j;
  j["object"] = "list";
  j["data"] = std::move(data);
  return dump_json(j);
}

std::string encode_tokenize(const std::vector<int32_t>& tokens, int64_t max_model_len,
                            const std::vector<std::string>* token_strs) {
  ordered_json j;
  j["count"] = tokens.size();
  j["max_model_len"] = max_model_len;
  j["tokens"] = tokens;
  j["token_strs"] = token_strs ? ordered_json(*token_strs) : ordered_json(nullptr);
  return dump_json(j);
}

std::string encode_detokenize(const std::string& prompt) {
  ordered_json j;
  j["prompt"] = prompt;
  return dump_json(j);
}

}  // namespace sw::frontend

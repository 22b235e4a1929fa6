// ChatTemplate: a model's Jinja2 chat template rendered exactly as `transformers`'
// apply_chat_template does — Jinja2's ImmutableSandboxedEnvironment with trim_blocks,
// lstrip_blocks and loop controls, `tojson` (ensure_ascii off), `raise_exception`,
// `strftime_now` — by Jinja2 itself, through an embedded CPython interpreter (Debian
// python3-jinja2), not a hand-written interpreter.
//
// Thread-safe: render() takes the GIL; call it from front-end threads only (never the engine
// thread). The interpreter starts on the first ChatTemplate made and lives for the process.
//
//   SW_ASSIGN_OR_RETURN(auto tpl, ChatTemplate::compile(text, "tokenizer_config.json"));
//   SW_ASSIGN_OR_RETURN(std::string prompt, tpl->render(messages_json, options));
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sw::tokenizer {

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  nlohmann::json tools;      // null or a list, passed through as `tools`
  nlohmann::json documents;  // null or a list, passed through as `documents`
  // The tokenizer's special tokens; "" is a token it does not have (undefined in the template).
  std::string bos_token;
  std::string eos_token;
  // More template variables (OpenAI's chat_template_kwargs, e.g. enable_thinking).
  nlohmann::json extra = nlohmann::json::object();
  // A render still running after this long is stopped with an error (a template that loops
  // for ever would otherwise hold Python's lock, and every other render, with it).
  double timeout_s = 10.0;  // <= 0: no limit
};

class ChatTemplate {
 public:
  // Compiles the template text; a syntax error names `source` and the line.
  static Result<std::unique_ptr<ChatTemplate>> compile(const std::string& text,
                                                       const std::string& source);
  ~ChatTemplate();
  ChatTemplate(const ChatTemplate&) = delete;
  ChatTemplate& operator=(const ChatTemplate&) = delete;

  // `messages`: the OpenAI list of {"role", "content", ...} objects, passed to the template
  // as plain Python dicts/lists/strings after apply_chat_template's own steps (keys whose value
  // is null dropped, reasoning_content also given as `thinking`, continue_final_message's cut
  // after the final message). raise_exception() in the template and any error of rendering
  // are an invalid_argument with the template's message (and line, when known).
  Result<std::string> render(const nlohmann::json& messages,
                             const ChatTemplateOptions& options) const;

  // The same from JSON text, keeping the text's order of object keys: nlohmann::json sorts
  // them, and a template shows the order (`tools | tojson`, `for k, v in x.items()`), so pass
  // a request's own text (or an nlohmann::ordered_json's dump()) to match transformers given
  // that request. `messages_json`: a JSON array; `tools_json` and `documents_json`, when not
  // empty, replace options.tools and options.documents.
  Result<std::string> render_json(std::string_view messages_json,
                                  const ChatTemplateOptions& options,
                                  std::string_view tools_json = {},
                                  std::string_view documents_json = {}) const;

 private:
  struct Impl;
  explicit ChatTemplate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The text of a chat template file (--chat-template): plain Jinja text, or JSON holding the
// template as a string, or an object with "chat_template" (tokenizer_config.json,
// chat_template.json) that is a string or a list of {"name", "template"} (the one named
// `name` is taken). Errors name the file.
Result<std::string> load_chat_template_file(const std::string& path,
                                            const std::string& name = "default");

}  // namespace sw::tokenizer

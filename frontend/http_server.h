// HttpServer: the OpenAI-compatible HTTP/1.1 front end of `serve` (Boost.Beast) in front of an
// EngineLoop — /v1/completions, /v1/chat/completions (JSON or SSE), /v1/models, /tokenize,
// /detokenize, /health, /metrics. I/O threads own the sockets; a small CPU pool parses,
// renders chat templates and tokenizes; the engine thread only schedules. Add a route: a line
// in Session::route() (http_server.cpp) and, when it does CPU work, a job on the CPU pool.
//
//   HttpServerOptions o;  o.port = 0;  o.served_model_names = {"llama"};
//   SW_ASSIGN_OR_RETURN(auto server, HttpServer::start(o, loop, info, tokenizer, chat_template));
//   ... server->port() ...;  server->stop();   // then drain the loop; ~HttpServer closes all
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/engine_loop.h"
#include "coordinator/serve_protocol.h"
#include "frontend/openai_protocol.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace sw::frontend {

// vLLM's flag names where vLLM has one (--host, --port, --api-key, --served-model-name,
// --tokenizer, --chat-template).
struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (HttpServer::port() says which)
  // Bearer key every route but /health requires ("" = none).
  std::string api_key;
  // The names clients may use as "model"; the first is the one reported. Empty: info.model.
  std::vector<std::string> served_model_names;
  std::string tokenizer;      // where the tokenizer came from (the caller loads it)
  std::string chat_template;  // a file, or the template text itself ("": the tokenizer's)

  int io_threads = 2;   // sockets, routing, SSE, incremental detokenization
  int cpu_threads = 2;  // JSON parsing, chat templates, tokenization

  int64_t max_body_bytes = int64_t{16} << 20;    // larger: 413
  int64_t max_header_bytes = int64_t{32} << 10;  // larger: 431
  double request_timeout_s = 30;    // first byte of a request to its last (slower: 408)
  double keep_alive_timeout_s = 5;  // idle between requests (then closed)
  double write_timeout_s = 60;      // a client that does not take its response (then dropped)
  int64_t max_connections = 16384;  // more: 503 and close
  // Unsent SSE bytes of one stream beyond this: the client is too slow, its request aborted.
  int64_t max_pending_stream_bytes = int64_t{8} << 20;
  ProtocolLimits limits;
};

struct HttpServerCounters {
  int64_t connections_accepted = 0;
  int64_t connections_open = 0;
  int64_t requests = 0;           // HTTP requests routed
  int64_t generations_open = 0;   // submitted to the engine and not finished
  int64_t disconnect_aborts = 0;  // requests aborted because their client went away
  int64_t timeouts = 0;           // slow senders (408) and slow readers dropped
  int64_t errors_4xx = 0;
  int64_t errors_5xx = 0;
};

class HttpServer {
 public:
  // Binds host:port, starts the I/O and CPU threads and returns at once. `tokenizer` is
  // required; `chat_template` may be null (chat routes then answer 400). `loop` and `info`
  // must outlive the server. Logs a warning when bound beyond loopback without an api_key.
  static Result<std::unique_ptr<HttpServer>> start(
      HttpServerOptions options, coordinator::EngineLoop& loop,
      const coordinator::serve::ServerInfo& info,
      std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
      std::shared_ptr<const tokenizer::ChatTemplate> chat_template);
  // shutdown(): requests still open are aborted, every connection closed, threads joined.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;  // the bound port
  std::string host() const;
  // Stops accepting and closes idle connections; responses in progress finish, then their
  // connections close. `serve` calls it once the EngineLoop has drained (during the drain new
  // generations get 503s and the open ones stream on).
  void stop();
  // Everything at once: stop(), abort what is open, close every connection, join threads.
  void shutdown();
  HttpServerCounters counters() const;

  struct Impl;

 private:
  explicit HttpServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// The chat template `serve` uses: options.chat_template (a file path, or else the template
// text itself, as vLLM's --chat-template), else the tokenizer's (tokenizer_config.json); null
// when neither has one. A template that does not compile is an error naming its source.
Result<std::shared_ptr<const tokenizer::ChatTemplate>> load_chat_template(
    const std::string& chat_template_option, const tokenizer::Tokenizer& tokenizer);

}  // namespace sw::frontend

// OpenAiTarget: the load generator's RequestTarget (coordinator/serve_client.h) over the
// OpenAI HTTP API — `bench serve --backend openai --base-url URL` — so the same workloads,
// table and JSON measure any OpenAI-compatible server (Shardwise's own front end, vLLM, SGLang).
// One HTTP/1.1 connection per request, streamed (SSE) with stream_options.include_usage and
// continuous_usage_stats, so each chunk's token count is the server's, not a re-tokenization.
// Prompts go as token-id lists to /v1/completions; /v1/chat/completions gets them as text,
// decoded with the client's tokenizer (one user message).
//
// Single-threaded: poll() runs the I/O (Boost.Asio) on the calling thread.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <string>

#include "common/status.h"
#include "coordinator/serve_client.h"
#include "tokenizer/tokenizer.h"

namespace sw::client {

struct OpenAiTargetOptions {
  std::string base_url = "http://127.0.0.1:8000";  // http://HOST:PORT[/prefix]
  std::string endpoint = "/v1/completions";        // or /v1/chat/completions
  std::string model;                               // "": the first of GET /v1/models
  std::string api_key;                             // Bearer, when set
  // A request that got no byte for this long fails, naming the request and the server.
  double request_timeout_s = 600.0;
};

class OpenAiTarget final : public coordinator::RequestTarget {
 public:
  // Checks the URL and asks GET /v1/models for the model name (and that the server answers).
  // `tokenizer` (may be null for /v1/completions) turns prompt ids into chat text.
  static Result<std::unique_ptr<OpenAiTarget>> connect(
      const OpenAiTargetOptions& options, std::shared_ptr<const tokenizer::Tokenizer> tokenizer);
  ~OpenAiTarget() override;

  Status submit(const coordinator::serve::GenerateRequest& r) override;
  Result<std::vector<coordinator::RequestEvent>> poll(double max_wait_s) override;
  Status abort(const std::string& id) override;
  size_t num_open() const override { return open_.size(); }

  const std::string& model() const { return model_; }
  int64_t max_model_len() const { return max_model_len_; }  // from /v1/models (0: not said)

 private:
  struct Impl;
  struct Stream;
  explicit OpenAiTarget(const OpenAiTargetOptions& options);
  void start(const std::shared_ptr<Stream>& s);
  void read_more(const std::shared_ptr<Stream>& s);
  void on_body(const std::shared_ptr<Stream>& s);
  void fail(const std::shared_ptr<Stream>& s, const std::string& why);
  void done(const std::shared_ptr<Stream>& s);
  // The request's last event: the connection closed, the event queued, the request forgotten.
  void end(const std::shared_ptr<Stream>& s, coordinator::RequestEvent last);

  OpenAiTargetOptions options_;
  std::shared_ptr<const tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<Impl> impl_;
  std::string model_;
  int64_t max_model_len_ = 0;
  std::map<std::string, std::shared_ptr<Stream>> open_;  // by request id
  std::deque<coordinator::RequestEvent> pending_;
};

}  // namespace sw::client

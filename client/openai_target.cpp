// The OpenAI HTTP target of the load generator (see openai_target.h): one Beast connection per
// request, its SSE events turned into the same RequestEvents a ServeClient produces.
#include "client/openai_target.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

namespace sw::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using coordinator::Clock;
using coordinator::RequestEvent;
using nlohmann::json;

struct OpenAiTarget::Impl {
  asio::io_context io;
  std::string host, port, prefix;
  tcp::resolver::results_type endpoints;
};

struct OpenAiTarget::Stream {
  explicit Stream(asio::io_context& io) : stream(io) {}
  std::string id;
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  http::request<http::string_body> request;
  std::optional<http::response_parser<http::string_body>> parser;
  size_t consumed = 0;     // body bytes already read as SSE events
  int64_t num_tokens = 0;  // completion tokens reported so far
  int64_t num_prompt = 0;
  std::string finish_reason;  // from the last choice that had one
  bool has_usage = false;     // the server sends usage in chunks (continuous usage stats)
  bool ended = false;
};

namespace {

// "http://host:port/prefix" -> parts; https is not spoken.
Status split_url(const std::string& url, std::string* host, std::string* port,
                 std::string* prefix) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0)
    return invalid_argument("--base-url '{}': expected http://HOST:PORT (https is not supported)",
                            url);
  std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  *prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!prefix->empty() && prefix->back() == '/') prefix->pop_back();
  rest = rest.substr(0, slash);
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || rest.back() == ']') {
    *host = rest;
    *port = "80";
  } else {
    *host = rest.substr(0, colon);
    *port = rest.substr(colon + 1);
  }
  if (!host->empty() && host->front() == '[') *host = host->substr(1, host->size() - 2);
  if (host->empty() || port->empty())
    return invalid_argument("--base-url '{}': expected http://HOST:PORT", url);
  return Status();
}

std::string error_message(const std::string& body, unsigned status) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() &&
      j["error"].contains("message") && j["error"]["message"].is_string())
    return fmt::format("HTTP {}: {}", status, j["error"]["message"].get<std::string>());
  return fmt::format("HTTP {}: {}", status, body.substr(0, 200));
}

}  // namespace

OpenAiTarget::OpenAiTarget(const OpenAiTargetOptions& options)
    : options_(options), impl_(std::make_unique<Impl>()) {}

OpenAiTarget::~OpenAiTarget() {
  for (auto& [id, s] : open_) {
    beast::error_code ec;
    s->stream.socket().close(ec);
  }
}

Result<std::unique_ptr<OpenAiTarget>> OpenAiTarget::connect(
    const OpenAiTargetOptions& options, std::shared_ptr<const tokenizer::Tokenizer> tokenizer) {
  std::unique_ptr<OpenAiTarget> t(new OpenAiTarget(options));
  t->tokenizer_ = std::move(tokenizer);
  Impl& im = *t->impl_;
  SW_RETURN_IF_ERROR(split_url(options.base_url, &im.host, &im.port, &im.prefix));
  if (options.endpoint != "/v1/completions" && options.endpoint != "/v1/chat/completions")
    return invalid_argument("--endpoint '{}': expected /v1/completions or /v1/chat/completions",
                            options.endpoint);
  if (options.endpoint == "/v1/chat/completions" && !t->tokenizer_)
    return invalid_argument("--endpoint /v1/chat/completions sends text: give --tokenizer DIR");
  beast::error_code ec;
  tcp::resolver resolver(im.io);
  im.endpoints = resolver.resolve(im.host, im.port, ec);
  if (ec) return unavailable("--base-url {}: cannot resolve: {}", options.base_url, ec.message());
  // GET /v1/models: the server answers, and names its model. Asynchronous, so that the 10 s
  // bound holds (Beast's blocking calls have no timeouts).
  beast::tcp_stream stream(im.io);
  stream.expires_after(std::chrono::seconds(10));
  http::request<http::empty_body> req{http::verb::get, im.prefix + "/v1/models", 11};
  req.set(http::field::host, im.host);
  if (!options.api_key.empty()) req.set(http::field::authorization, "Bearer " + options.api_key);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  bool finished = false;
  stream.async_connect(im.endpoints, [&](beast::error_code e, const tcp::endpoint&) {
    if (e) {
      ec = e;
      finished = true;
      return;
    }
    http::async_write(stream, req, [&](beast::error_code e2, size_t) {
      if (e2) {
        ec = e2;
        finished = true;
        return;
      }
      http::async_read(stream, buffer, res, [&](beast::error_code e3, size_t) {
        ec = e3;
        finished = true;
      });
    });
  });
  im.io.run_for(std::chrono::seconds(11));
  im.io.restart();
  if (!finished) {
    stream.socket().close(ec);
    im.io.poll();  // let the cancelled handlers run before their captures go
    im.io.restart();
    return unavailable("{}/v1/models: no answer within 10 s", options.base_url);
  }
  if (ec) return unavailable("{}/v1/models: {}", options.base_url, ec.message());
  if (res.result() != http::status::ok)
    return unavailable("{}/v1/models: {}", options.base_url,
                       error_message(res.body(), res.result_int()));
  json models = json::parse(res.body(), nullptr, false);
  if (!models.is_object() || !models.contains("data") || !models["data"].is_array() ||
      models["data"].empty() || !models["data"][0].contains("id"))
    return unavailable("{}/v1/models: no model listed", options.base_url);
  t->model_ = options.model.empty() ? models["data"][0]["id"].get<std::string>() : options.model;
  if (models["data"][0].contains("max_model_len") &&
      models["data"][0]["max_model_len"].is_number_integer())
    t->max_model_len_ = models["data"][0]["max_model_len"].get<int64_t>();
  return t;
}

Status OpenAiTarget::submit(const coordinator::serve::GenerateRequest& r) {
  if (open_.count(r.id)) return invalid_argument("request '{}' is already open", r.id);
  const bool chat = options_.endpoint == "/v1/chat/completions";
  json body = {{"model", model_},
               {"stream", true},
               {"stream_options", {{"include_usage", true}, {"continuous_usage_stats", true}}},
               {"temperature", r.spec.sampling.temperature},
               {"top_p", r.spec.sampling.top_p},
               {"top_k", r.spec.sampling.top_k},
               {"seed", r.spec.sampling.seed},
               {"ignore_eos", r.spec.ignore_eos}};
  if (chat) {
    body["messages"] = json::array(
        {{{"role", "user"}, {"content", tokenizer_->decode(r.spec.prompt_ids, false)}}});
    body["max_completion_tokens"] = r.spec.max_new_tokens;
  } else {
    body["prompt"] = r.spec.prompt_ids;
    body["max_tokens"] = r.spec.max_new_tokens;
  }
  auto s = std::make_shared<Stream>(impl_->io);
  s->id = r.id;
  s->request =
      http::request<http::string_body>{http::verb::post, impl_->prefix + options_.endpoint, 11};
  s->request.set(http::field::host, impl_->host);
  s->request.set(http::field::content_type, "application/json");
  s->request.set(http::field::accept, "text/event-stream");
  if (!options_.api_key.empty())
    s->request.set(http::field::authorization, "Bearer " + options_.api_key);
  s->request.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
  s->request.prepare_payload();
  open_[r.id] = s;
  start(s);
  return Status();
}

void OpenAiTarget::start(const std::shared_ptr<Stream>& s) {
  const auto timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options_.request_timeout_s));
  s->stream.expires_after(timeout);
  s->stream.async_connect(
      impl_->endpoints, [this, s, timeout](beast::error_code ec, const tcp::endpoint&) {
        if (s->ended) return;
        if (ec) return fail(s, fmt::format("connect: {}", ec.message()));
        s->stream.socket().set_option(tcp::no_delay(true), ec);
        s->stream.expires_after(timeout);
        http::async_write(s->stream, s->request, [this, s](beast::error_code ec, size_t) {
          if (s->ended) return;
          if (ec) return fail(s, fmt::format("send: {}", ec.message()));
          s->parser.emplace();
          s->parser->body_limit(boost::none);
          read_more(s);
        });
      });
}

// Reads as the body grows: each read hands the new SSE events over at once. The handler holds
// the stream only until it ends (no self-referencing callback, so nothing outlives it).
void OpenAiTarget::read_more(const std::shared_ptr<Stream>& s) {
  s->stream.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options_.request_timeout_s)));
  http::async_read_some(s->stream, s->buffer, *s->parser, [this, s](beast::error_code ec, size_t) {
    if (s->ended) return;
    const bool eof = ec == http::error::end_of_stream || ec == asio::error::eof;
    if (ec && !eof) return fail(s, fmt::format("receive: {}", ec.message()));
    if (s->parser->is_header_done() && s->parser->get().result() != http::status::ok) {
      if (!s->parser->is_done() && !eof) return read_more(s);
      return fail(s, error_message(s->parser->get().body(), s->parser->get().result_int()));
    }
    on_body(s);
    if (s->ended) return;
    if (s->parser->is_done() || eof) return done(s);
    read_more(s);
  });
}

void OpenAiTarget::on_body(const std::shared_ptr<Stream>& s) {
  const std::string& body = s->parser->get().body();
  for (;;) {
    // Events end with a blank line: "\n\n", or "\r\n\r\n" from servers that use CRLF.
    size_t end = body.find("\n\n", s->consumed), skip = 2;
    if (const size_t crlf = body.find("\r\n\r\n", s->consumed);
        crlf != std::string::npos && crlf < end) {
      end = crlf;
      skip = 4;
    }
    if (end == std::string::npos) return;
    std::string event = body.substr(s->consumed, end - s->consumed);
    std::erase(event, '\r');
    s->consumed = end + skip;
    for (size_t pos = 0; pos < event.size();) {
      size_t eol = event.find('\n', pos);
      if (eol == std::string::npos) eol = event.size();
      std::string line = event.substr(pos, eol - pos);
      pos = eol + 1;
      if (line.rfind("data:", 0) != 0) continue;
      std::string data = line.substr(5);
      if (!data.empty() && data[0] == ' ') data.erase(0, 1);
      if (data == "[DONE]") return done(s);
      json j = json::parse(data, nullptr, false);
      if (!j.is_object()) return fail(s, fmt::format("not a JSON event: {}", data.substr(0, 200)));
      if (j.contains("error"))
        return fail(s, j["error"].is_object() && j["error"].contains("message")
                           ? j["error"]["message"].dump()
                           : j["error"].dump());
      int64_t new_tokens = 0;
      if (j.contains("usage") && j["usage"].is_object()) {
        const json& u = j["usage"];
        if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
          s->num_prompt = u["prompt_tokens"].get<int64_t>();
        if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer()) {
          new_tokens = u["completion_tokens"].get<int64_t>() - s->num_tokens;
          s->has_usage = true;
        }
      }
      if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
        const json& c = j["choices"][0];
        if (c.contains("finish_reason") && c["finish_reason"].is_string())
          s->finish_reason = c["finish_reason"].get<std::string>();
      }
      if (!s->has_usage && j.contains("choices") && j["choices"].is_array() &&
          !j["choices"].empty()) {
        // A server without continuous usage stats: one token per chunk that carries text.
        const json& c = j["choices"][0];
        const json* text = c.contains("text") ? &c["text"]
                           : c.contains("delta")
                               ? (c["delta"].contains("content") ? &c["delta"]["content"] : nullptr)
                               : nullptr;
        if (text && text->is_string() && !text->get_ref<const std::string&>().empty())
          new_tokens = 1;
      }
      if (new_tokens > 0) {
        s->num_tokens += new_tokens;
        RequestEvent e;
        e.kind = RequestEvent::Kind::kTokens;
        e.id = s->id;
        // The ids are the server's; the count is what a benchmark needs.
        e.tokens.assign(static_cast<size_t>(new_tokens), 0);
        e.received = Clock::now();
        pending_.push_back(std::move(e));
      }
    }
  }
}

void OpenAiTarget::fail(const std::shared_ptr<Stream>& s, const std::string& why) {
  RequestEvent e;
  e.kind = RequestEvent::Kind::kError;
  e.error = coordinator::serve::ProtocolError{
      "http_error",
      fmt::format("{}{}: request {}: {}", options_.base_url, options_.endpoint, s->id, why), s->id};
  end(s, std::move(e));
}

void OpenAiTarget::done(const std::shared_ptr<Stream>& s) {
  RequestEvent e;
  e.kind = RequestEvent::Kind::kDone;
  e.summary.finish_reason = s->finish_reason.empty() ? "error" : s->finish_reason;
  if (s->finish_reason.empty()) e.summary.error = "the stream ended without a finish_reason";
  e.summary.num_prompt_tokens = s->num_prompt;
  e.summary.num_output_tokens = s->num_tokens;
  end(s, std::move(e));
}

void OpenAiTarget::end(const std::shared_ptr<Stream>& s, RequestEvent last) {
  if (s->ended) return;
  s->ended = true;
  beast::error_code ec;
  s->stream.socket().close(ec);
  last.id = s->id;
  last.received = Clock::now();
  pending_.push_back(std::move(last));
  open_.erase(s->id);
}

Result<std::vector<RequestEvent>> OpenAiTarget::poll(double max_wait_s) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(std::max(0.0, max_wait_s)));
  asio::io_context& io = impl_->io;
  while (pending_.empty() && Clock::now() < deadline) {
    if (open_.empty()) {  // nothing in flight: nothing can arrive
      std::this_thread::sleep_until(deadline);
      break;
    }
    if (io.stopped()) io.restart();
    io.run_one_until(deadline);
  }
  if (io.stopped()) io.restart();
  io.poll();  // whatever else is ready, without waiting
  std::vector<RequestEvent> out(std::make_move_iterator(pending_.begin()),
                                std::make_move_iterator(pending_.end()));
  pending_.clear();
  return out;
}

Status OpenAiTarget::abort(const std::string& id) {
  auto it = open_.find(id);
  if (it == open_.end()) return Status();
  auto s = it->second;
  s->finish_reason = "abort";
  done(s);  // closing the connection is how an HTTP client aborts
  return Status();
}

}  // namespace sw::client

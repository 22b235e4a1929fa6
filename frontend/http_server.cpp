// The Beast server behind HttpServer (see http_server.h): one Session per connection on its own
// strand; a request is read (with deadlines), routed, parsed and tokenized on the CPU pool,
// submitted to the EngineLoop, and its events are detokenized and written back (JSON or SSE)
// on the session's strand. While a generation runs a read stays pending on the socket, so a
// client that leaves (FIN or reset) aborts its request at once. Add a route: Session::route().
#include "frontend/http_server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <utility>

#include "common/limits.h"
#include "common/logging.h"
#include "common/text_file.h"
#include "frontend/prometheus.h"
#include "tokenizer/detokenizer.h"

namespace sw::frontend {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using coordinator::EngineLoop;
using coordinator::RequestUpdate;
using SteadyClock = std::chrono::steady_clock;

namespace {

// Bodies up to this size are parsed on the CPU pool (a prompt of ~8k ids); larger ones on the
// large-body lane, at most kMaxLargeBodies waiting (more: 503).
constexpr int64_t kInlineBodyBytes = 64 << 10;
constexpr int kMaxLargeBodies = 8;
constexpr const char* kLargeBodiesBusy =
    "too many large request bodies are waiting to be parsed; send this one again later";

double seconds_since(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

// Equal keys, compared in time independent of where they differ.
bool same_key(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

enum class Route {
  kHealth,
  kModels,
  kMetrics,
  kCompletions,
  kChat,
  kTokenize,
  kDetokenize,
  kNotFound,
};

struct RouteInfo {
  Route route;
  http::verb verb;
};

RouteInfo find_route(std::string_view path) {
  static const std::map<std::string_view, RouteInfo> kRoutes = {
      {"/health", {Route::kHealth, http::verb::get}},
      {"/v1/models", {Route::kModels, http::verb::get}},
      {"/metrics", {Route::kMetrics, http::verb::get}},
      {"/v1/completions", {Route::kCompletions, http::verb::post}},
      {"/v1/chat/completions", {Route::kChat, http::verb::post}},
      {"/tokenize", {Route::kTokenize, http::verb::post}},
      {"/detokenize", {Route::kDetokenize, http::verb::post}},
  };
  auto it = kRoutes.find(path);
  if (it == kRoutes.end()) return {Route::kNotFound, http::verb::unknown};
  return it->second;
}

}  // namespace

// ---- shared state of the server ----

// Lets the engine thread post to sessions only while the I/O context exists.
struct SinkGate {
  std::mutex mu;
  bool open = true;
};

class Session;

// The metrics /metrics shows, labelled with the served model's name.
struct ServerMetrics {
  PrometheusRegistry registry;
  PrometheusHistogram* ttft;
  PrometheusHistogram* itl;
  PrometheusHistogram* e2e;
  PrometheusHistogram* queue;
  PrometheusGauge* running;
  PrometheusGauge* waiting;
  PrometheusGauge* kv_usage;
  PrometheusCounter* prompt_tokens;
  PrometheusCounter* generation_tokens;
  PrometheusCounter* preemptions;
  PrometheusCounter* kv_transfers;
  PrometheusCounter* kv_transfer_seconds;
  PrometheusCounter* moe_dropped;
  std::string model;

  explicit ServerMetrics(const std::string& model_name) : model(model_name) {
    const MetricLabels l = {{"model_name", model}};
    ttft = registry.histogram("shardwise:time_to_first_token_seconds",
                              "Histogram of time to first token in seconds.", ttft_buckets(), l);
    itl = registry.histogram("shardwise:inter_token_latency_seconds",
                             "Histogram of inter-token latency in seconds.", inter_token_buckets(),
                             l);
    e2e = registry.histogram("shardwise:e2e_request_latency_seconds",
                             "Histogram of end to end request latency in seconds.",
                             request_latency_buckets(), l);
    queue = registry.histogram("shardwise:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.",
                               request_latency_buckets(), l);
    running = registry.gauge("shardwise:num_requests_running",
                             "Number of requests in model execution batches.", l);
    waiting = registry.gauge("shardwise:num_requests_waiting",
                             "Number of requests waiting to be processed.", l);
    kv_usage = registry.gauge("shardwise:kv_cache_usage_perc",
                              "KV-cache usage. 1 means 100 percent usage.", l);
    prompt_tokens =
        registry.counter("shardwise:prompt_tokens_total", "Number of prefill tokens processed.", l);
    generation_tokens = registry.counter("shardwise:generation_tokens_total",
                                         "Number of generation tokens processed.", l);
    for (const char* reason : {"stop", "length", "abort", "error"}) success(reason);
    preemptions = registry.counter("shardwise:num_preemptions_total",
                                   "Cumulative number of preemption from the engine.", l);
    kv_transfers = registry.counter("shardwise:kv_transfers_total",
                                    "KV-cache transfers from prefill to decode instances.", l);
    kv_transfer_seconds = registry.counter("shardwise:kv_transfer_seconds_total",
                                           "Seconds spent in finished KV-cache transfers.", l);
    moe_dropped = registry.counter("shardwise:moe_tokens_dropped_total",
                                   "MoE token-expert assignments dropped by capacity.", l);
  }
  PrometheusCounter* success(const std::string& reason) {
    return registry.counter("shardwise:request_success_total",
                            "Count of successfully processed requests.",
                            {{"finished_reason", reason}, {"model_name", model}});
  }
  void refresh(const coordinator::EngineSnapshot& s) {
    running->set(static_cast<double>(s.stats.num_running));
    waiting->set(static_cast<double>(s.stats.num_waiting));
    kv_usage->set(s.kv_cache_usage);
    preemptions->set(static_cast<double>(s.stats.num_preemptions));
    kv_transfers->set(static_cast<double>(s.stats.kv_transfers));
    kv_transfer_seconds->set(s.kv_transfer_seconds);
    moe_dropped->set(static_cast<double>(s.stats.moe_dropped));
    for (const char* role : {"prefill", "decode", "mixed"}) {
      auto it = s.instances_alive.find(role);
      registry
          .gauge("shardwise:instances_alive", "Healthy engine instances per role.",
                 {{"model_name", model}, {"role", role}})
          ->set(it == s.instances_alive.end() ? 0 : it->second);
    }
  }
};

struct HttpServer::Impl {
  // Declared first: destroyed after the I/O context (whose pending handlers may hold sessions).
  std::atomic<int64_t> connections_accepted{0}, connections_open{0}, requests{0},
      generations_open{0}, disconnect_aborts{0}, timeouts{0}, errors_4xx{0}, errors_5xx{0};
  std::shared_ptr<SinkGate> gate = std::make_shared<SinkGate>();

  HttpServerOptions options;
  EngineLoop* loop = nullptr;
  const coordinator::serve::ServerInfo* info = nullptr;
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  std::shared_ptr<const tokenizer::ChatTemplate> chat_template;
  std::vector<std::string> served_names;
  int64_t created = 0;
  std::unique_ptr<ServerMetrics> metrics;

  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{asio::make_strand(ioc)};
  std::unique_ptr<asio::thread_pool> cpu;
  // Bodies over kInlineBodyBytes are parsed here instead: one thread at the lowest priority,
  // at most kMaxLargeBodies waiting, so that clients sending large bodies delay neither the
  // others' requests nor the engine.
  std::unique_ptr<asio::thread_pool> cpu_large;
  std::atomic<int> large_pending{0};
  std::vector<std::thread> threads;

  // Runs `job` on the CPU pool that fits a body of `bytes`; false when the large-body lane is
  // full (the caller answers 503).
  template <typename Job>
  bool post_cpu(size_t bytes, Job&& job) {
    if (static_cast<int64_t>(bytes) <= kInlineBodyBytes) {
      asio::post(*cpu, std::forward<Job>(job));
      return true;
    }
    if (large_pending.fetch_add(1) >= kMaxLargeBodies) {
      large_pending.fetch_sub(1);
      return false;
    }
    asio::post(*cpu_large, [this, job = std::forward<Job>(job)]() mutable {
      job();
      large_pending.fetch_sub(1);
    });
    return true;
  }
  int bound_port = 0;

  std::mutex sessions_mu;
  std::map<uint64_t, std::weak_ptr<Session>> sessions;
  uint64_t next_session = 1;
  std::atomic<bool> stopping{false};
  bool shut_down = false;

  void accept();
  void stop();
  void shutdown();
  void forget(uint64_t id) {
    std::lock_guard<std::mutex> lock(sessions_mu);
    sessions.erase(id);
  }
};

// ---- one connection ----

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(HttpServer::Impl& srv, tcp::socket socket, uint64_t id)
      : srv_(srv), socket_(std::move(socket)), timer_(socket_.get_executor()), id_(id) {}

  void start() {
    asio::dispatch(socket_.get_executor(),
                   [self = shared_from_this()] { self->read_first_byte(/*first=*/true); });
  }
  // From another thread: stop() closes an idle connection, shutdown() any.
  void post_close(bool only_idle) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), only_idle] {
      if (only_idle && self->state_ != State::kIdle) {
        self->keep_alive_ = false;  // closes after its response
        return;
      }
      self->close();
    });
  }
  // Over the connection limit: a 503, then closed.
  void refuse(ApiError e) {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this(), e = std::move(e)] {
      self->keep_alive_ = false;
      self->send_error(e, true);
    });
  }
  // From the engine thread (the sink): hands the event to the strand.
  void post_event(RequestUpdate&& e) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), e = std::move(e)]() mutable {
      self->on_event(std::move(e));
    });
  }
  // Shutdown, I/O threads stopped: abort what is open and let go of ourselves.
  void abandon() {
    if (ticket_) srv_.loop->abort(ticket_, "the HTTP server is shutting down");
    ticket_ = 0;
    self_.reset();
  }
  void on_event(RequestUpdate e);

 private:
  // kLinger: the response went out with "Connection: close"; what the client still sends is
  // read and dropped for a moment so that closing does not reset the connection (and lose the
  // response) while its request body is unread.
  enum class State { kIdle, kReading, kProcessing, kGenerating, kWriting, kLinger, kClosed };
  enum class Deadline { kNone, kIdle, kRequest, kWrite };

  // ---- reading ----
  void read_first_byte(bool first);
  void on_read_some(beast::error_code ec, size_t n);
  void read_header();
  void on_header(beast::error_code ec);
  void on_body(beast::error_code ec);
  // A request that could not be read: 413/431 over a limit, a quiet close for a peer that
  // went away, else a 400.
  void fail_read(beast::error_code ec);
  void watch_socket();  // a pending read while a response is being produced

  // ---- routing and work ----
  void route();
  bool authorized() const;
  void run_generation_job(Route route, std::string body);
  void run_tokenize_job(bool detokenize, std::string body);
  void submit(coordinator::RequestSpec spec);

  // ---- writing ----
  void send_error(const ApiError& e, bool close_after = false);
  void send_response(int status, std::string content_type, std::string body,
                     bool close_after = false);
  void begin_stream();
  void stream_write(const std::string& payload);  // one chunk of the SSE body
  void end_stream();
  void queue(std::string bytes);
  void flush();
  void on_written(beast::error_code ec, size_t n);
  void response_done();
  void linger_close();

  void arm(Deadline kind, double seconds);
  void disarm();
  void on_deadline(Deadline kind);
  void peer_gone();
  void close();

  // ---- generation state ----
  // `delta`: the text of the final event's own tokens.
  void finish_generation(const RequestUpdate& e, std::string delta);
  std::string take_text(const std::vector<int32_t>& tokens);

  HttpServer::Impl& srv_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  uint64_t id_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  State state_ = State::kIdle;
  bool reading_ = false;              // an async_read_some is pending
  bool cancel_for_pipeline_ = false;  // that read was cancelled to parse a buffered request
  bool keep_alive_ = true;
  bool peer_gone_ = false;
  std::string out_;      // bytes waiting to be written
  std::string writing_;  // bytes being written
  bool write_pending_ = false;
  bool response_complete_ = false;  // the last byte of the response is queued
  SteadyClock::time_point request_start_;
  std::shared_ptr<Session> self_;  // alive while the engine owes us events

  // The request in progress.
  Route route_ = Route::kNotFound;
  bool chat_ = false;
  GenerationParams params_;
  std::vector<int32_t> prompt_ids_;
  uint64_t ticket_ = 0;
  ResponseMeta meta_;
  std::optional<tokenizer::IncrementalDetokenizer> detok_;
  std::optional<tokenizer::StopStringMatcher> matcher_;
  std::string text_;  // non-streaming: the whole output
  int64_t num_generated_ = 0;
  bool stopped_ = false;        // a stop string or stop token ended it here
  nlohmann::json stop_reason_;  // that string or id
  bool stream_started_ = false;
  bool first_token_seen_ = false;
  SteadyClock::time_point last_token_time_;
};

void Session::arm(Deadline kind, double seconds) {
  ++timer_gen_;
  timer_.expires_after(
      std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(seconds)));
  timer_.async_wait([self = shared_from_this(), gen = timer_gen_, kind](beast::error_code ec) {
    if (ec || gen != self->timer_gen_) return;
    self->on_deadline(kind);
  });
}

void Session::disarm() {
  ++timer_gen_;
  timer_.cancel();
}

void Session::on_deadline(Deadline kind) {
  if (state_ == State::kClosed) return;
  switch (kind) {
    case Deadline::kIdle: close(); return;
    case Deadline::kRequest:
      ++srv_.timeouts;
      // Whatever was being read is abandoned: 408 and close.
      state_ = State::kWriting;
      keep_alive_ = false;
      {
        beast::error_code ignored;
        socket_.cancel(ignored);
      }
      send_error(ApiError{408, "the request was not received in time", ""}, true);
      return;
    case Deadline::kWrite:
      ++srv_.timeouts;
      peer_gone();
      close();
      return;
    case Deadline::kNone: return;
  }
}

void Session::read_first_byte(bool first) {
  state_ = State::kIdle;
  if (srv_.stopping.load()) return close();
  arm(first ? Deadline::kRequest : Deadline::kIdle,
      first ? srv_.options.request_timeout_s : srv_.options.keep_alive_timeout_s);
  if (reading_) {
    // The watch read of the last response is still pending: a request already buffered
    // (pipelined) is parsed once that read is cancelled; otherwise it brings the next one.
    if (buffer_.size() > 0) {
      cancel_for_pipeline_ = true;
      beast::error_code ignored;
      socket_.cancel(ignored);
    }
    return;
  }
  if (buffer_.size() > 0) return read_header();
  reading_ = true;
  socket_.async_read_some(
      buffer_.prepare(4096),
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_read_some(ec, n); });
}

void Session::watch_socket() {
  if (reading_ || peer_gone_ || state_ == State::kClosed) return;
  // Pipelined requests pile up here; past a bound stop reading (and stop watching).
  if (static_cast<int64_t>(buffer_.size()) > srv_.options.max_header_bytes) return;
  reading_ = true;
  socket_.async_read_some(
      buffer_.prepare(4096),
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_read_some(ec, n); });
}

void Session::on_read_some(beast::error_code ec, size_t n) {
  reading_ = false;
  if (state_ == State::kClosed) return;
  if (state_ == State::kLinger) {
    if (ec) return close();
    buffer_.commit(n);
    buffer_.consume(buffer_.size());
    reading_ = true;
    socket_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec2, size_t n2) {
                              self->on_read_some(ec2, n2);
                            });
    return;
  }
  const bool pipelined = std::exchange(cancel_for_pipeline_, false);
  if (ec == asio::error::operation_aborted && pipelined) {
    if (state_ == State::kIdle) read_header();
    return;
  }
  if (ec) {
    if (ec == asio::error::operation_aborted && state_ == State::kWriting) return;  // 408 path
    peer_gone();
    if (state_ == State::kIdle) close();
    return;
  }
  buffer_.commit(n);
  if (state_ == State::kIdle) return read_header();
  watch_socket();  // generating or writing: keep watching for the client leaving
}

void Session::read_header() {
  state_ = State::kReading;
  request_start_ = SteadyClock::now();
  arm(Deadline::kRequest, srv_.options.request_timeout_s);
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(
      std::min<int64_t>(srv_.options.max_header_bytes, std::numeric_limits<uint32_t>::max())));
  parser_->body_limit(static_cast<std::uint64_t>(srv_.options.max_body_bytes));
  http::async_read_header(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
}

void Session::on_header(beast::error_code ec) {
  if (state_ != State::kReading) return;  // timed out meanwhile
  if (ec) return fail_read(ec);
  auto& req = parser_->get();
  ++srv_.requests;
  keep_alive_ = keep_alive_ && req.keep_alive();
  // Refuse before reading a body nobody will use (and before any 100 Continue).
  const std::string_view target(req.target().data(), req.target().size());
  const std::string_view path = target.substr(0, target.find('?'));
  const RouteInfo ri = find_route(path);
  if (ri.route == Route::kNotFound)
    return send_error(ApiError{404, fmt::format("no route {}", printable(path, 200)), ""},
                      !parser_->is_done());
  if (ri.route != Route::kHealth && !authorized())
    return send_error(ApiError{401, "missing or wrong API key (Authorization: Bearer ...)", ""},
                      !parser_->is_done());
  if (req.method() != ri.verb) {
    ApiError e{405, fmt::format("{} takes {}", printable(path, 200), http::to_string(ri.verb)), ""};
    return send_error(e, !parser_->is_done());
  }
  route_ = ri.route;
  if (parser_->is_done()) return route();
  const auto expect = req[http::field::expect];
  if (iequals(std::string_view(expect.data(), expect.size()), "100-continue")) {
    // The client waits for this before sending its body.
    auto msg = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
    asio::async_write(socket_, asio::buffer(*msg),
                      [self = shared_from_this(), msg](beast::error_code ec, size_t) {
                        if (ec) return self->close();
                        http::async_read(
                            self->socket_, self->buffer_, *self->parser_,
                            [self](beast::error_code ec2, size_t) { self->on_body(ec2); });
                      });
    return;
  }
  http::async_read(
      socket_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
}

void Session::fail_read(beast::error_code ec) {
  if (ec == http::error::body_limit)
    return send_error(ApiError{413,
                               fmt::format("the request body is larger than {} bytes",
                                           srv_.options.max_body_bytes),
                               ""},
                      true);
  if (ec == http::error::header_limit)
    return send_error(ApiError{431,
                               fmt::format("the request header is larger than {} bytes",
                                           srv_.options.max_header_bytes),
                               ""},
                      true);
  if (ec == http::error::end_of_stream || ec == asio::error::eof ||
      ec == asio::error::connection_reset || ec == asio::error::operation_aborted)
    return close();
  send_error(bad_request(fmt::format("malformed HTTP request: {}", ec.message())), true);
}

void Session::on_body(beast::error_code ec) {
  if (state_ != State::kReading) return;
  if (ec) return fail_read(ec);
  route();
}

bool Session::authorized() const {
  if (srv_.options.api_key.empty()) return true;
  const auto& req = parser_->get();
  const auto h = req[http::field::authorization];
  const std::string_view v(h.data(), h.size());
  if (v.size() < 7 || !iequals(v.substr(0, 7), "Bearer ")) return false;
  return same_key(v.substr(7), srv_.options.api_key);
}

void Session::route() {
  disarm();
  auto& req = parser_->get();
  keep_alive_ = keep_alive_ && req.keep_alive() && !srv_.stopping.load();
  state_ = State::kProcessing;
  switch (route_) {
    case Route::kHealth: {
      const bool draining = srv_.loop->draining();
      return send_response(draining ? 503 : 200, "", "");
    }
    case Route::kModels:
      return send_response(200, "application/json",
                           encode_models(srv_.served_names, srv_.info->model,
                                         srv_.info->max_model_len, srv_.created));
    case Route::kMetrics:
      srv_.metrics->refresh(srv_.loop->snapshot());
      return send_response(200, PrometheusRegistry::kContentType, srv_.metrics->registry.render());
    case Route::kCompletions:
    case Route::kChat: {
      if (srv_.loop->draining())
        return send_error(ApiError{503, "the server is shutting down", ""});
      if (!srv_.post_cpu(req.body().size(),
                         [self = shared_from_this(), r = route_, body = req.body()]() mutable {
                           self->run_generation_job(r, std::move(body));
                         }))
        return send_error(ApiError{503, kLargeBodiesBusy, ""});
      watch_socket();
      return;
    }
    case Route::kTokenize:
    case Route::kDetokenize:
      if (!srv_.post_cpu(
              req.body().size(),
              [self = shared_from_this(), d = route_ == Route::kDetokenize,
               body = req.body()]() mutable { self->run_tokenize_job(d, std::move(body)); }))
        return send_error(ApiError{503, kLargeBodiesBusy, ""});
      watch_socket();
      return;
    case Route::kNotFound: break;
  }
  send_error(ApiError{404, "no such route", ""});
}

// ---- the CPU pool's jobs (they touch only their inputs and the read-only server state, then
// post the outcome back to the session's strand) ----

namespace {

struct Prepared {
  std::optional<ApiError> error;
  GenerationParams params;
  std::vector<int32_t> prompt_ids;
  coordinator::RequestSpec spec;
};

std::optional<ApiError> check_ids(const std::vector<int32_t>& ids, int64_t vocab,
                                  const char* param) {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= vocab)
      return bad_request(
          fmt::format("{}[{}] = {} is outside the vocabulary [0, {})", param, i, ids[i], vocab),
          param);
  return std::nullopt;
}

Result<std::string> render_chat(const HttpServer::Impl& srv, const ChatTemplateInput& input,
                                bool add_generation_prompt, bool continue_final,
                                const nlohmann::json& kwargs) {
  if (!srv.chat_template)
    return invalid_argument(
        "this model has no chat template: start the server with --chat-template, or use "
        "/v1/completions");
  tokenizer::ChatTemplateOptions o;
  o.add_generation_prompt = add_generation_prompt;
  o.continue_final_message = continue_final;
  o.bos_token = srv.tok->info().bos_token;
  o.eos_token = srv.tok->info().eos_token;
  o.extra = kwargs.is_object() ? kwargs : nlohmann::json::object();
  return srv.chat_template->render_json(input.messages, o, input.tools, input.documents);
}

int64_t vocab_limit(const HttpServer::Impl& srv) {
  int64_t v = srv.info->vocab_size > 0 ? srv.info->vocab_size : srv.tok->vocab_size();
  return v;
}

Prepared prepare_generation(const HttpServer::Impl& srv, Route route, const std::string& body) {
  Prepared p;
  const int64_t max_len = srv.info->max_model_len;
  std::optional<int64_t> default_max;
  if (route == Route::kCompletions) {
    auto parsed = parse_completion_request(body, srv.options.limits);
    if (parsed.error) return Prepared{parsed.error, {}, {}, {}};
    p.params = parsed.request.params;
    if ((p.error = check_model(p.params.model, srv.served_names))) return p;
    if (parsed.request.prompt_is_ids) {
      p.prompt_ids = std::move(parsed.request.prompt_ids);
      if ((p.error = check_ids(p.prompt_ids, vocab_limit(srv), "prompt"))) return p;
    } else {
      p.prompt_ids = srv.tok->encode(parsed.request.prompt, parsed.request.add_special_tokens);
    }
    default_max = 16;
  } else {
    auto parsed = parse_chat_request(body, srv.options.limits);
    if (parsed.error) return Prepared{parsed.error, {}, {}, {}};
    p.params = parsed.request.params;
    if ((p.error = check_model(p.params.model, srv.served_names))) return p;
    const auto& r = parsed.request;
    auto text = render_chat(srv, r.ordered, r.add_generation_prompt, r.continue_final_message,
                            r.chat_template_kwargs);
    if (!text.ok()) {
      p.error = bad_request(text.status().message(), "messages");
      return p;
    }
    p.prompt_ids = srv.tok->encode(*text, r.add_special_tokens);
  }
  auto len =
      decide_max_tokens(p.params, static_cast<int64_t>(p.prompt_ids.size()), max_len, default_max);
  if (len.error) {
    p.error = len.error;
    return p;
  }
  p.spec.prompt_ids = p.prompt_ids;
  p.spec.max_new_tokens = len.max_new_tokens;
  p.spec.ignore_eos = p.params.ignore_eos;
  // generation_config.json's eos ids end generation as the model's own do, unless ignore_eos
  // (as vLLM does: Llama 3 Instruct's <|eot_id|> is only there, not in config.json).
  if (!p.params.ignore_eos)
    for (int32_t id : srv.tok->info().eos_token_ids)
      if (std::find(p.params.stop_token_ids.begin(), p.params.stop_token_ids.end(), id) ==
          p.params.stop_token_ids.end())
        p.params.stop_token_ids.push_back(id);
  p.spec.sampling.temperature = static_cast<float>(p.params.temperature);
  p.spec.sampling.top_p = static_cast<float>(p.params.top_p);
  p.spec.sampling.top_k = static_cast<int32_t>(p.params.top_k);
  if (p.params.seed) {
    p.spec.sampling.seed = *p.params.seed;
  } else {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    p.spec.sampling.seed = rng();
  }
  return p;
}

}  // namespace

void Session::run_generation_job(Route route, std::string body) {
  Prepared p;
  try {
    p = prepare_generation(srv_, route, body);
  } catch (const std::exception& e) {  // a tokenizer or template bug must not end the server
    p.error = ApiError{500, fmt::format("internal error preparing the request: {}", e.what()), ""};
  }
  asio::post(socket_.get_executor(),
             [self = shared_from_this(), route, p = std::move(p)]() mutable {
               if (self->state_ != State::kProcessing) return;  // closed meanwhile
               if (self->peer_gone_) return self->close();
               if (p.error) return self->send_error(*p.error);
               self->chat_ = route == Route::kChat;
               self->params_ = std::move(p.params);
               self->prompt_ids_ = std::move(p.prompt_ids);
               self->submit(std::move(p.spec));
             });
}

void Session::run_tokenize_job(bool detokenize, std::string body) {
  int status = 200;
  std::string out;
  std::optional<ApiError> error;
  try {
    if (detokenize) {
      auto parsed = parse_detokenize_request(body, srv_.options.limits);
      error = parsed.error;
      if (!error) error = check_model(parsed.request.model, srv_.served_names);
      if (!error) error = check_ids(parsed.request.tokens, vocab_limit(srv_), "tokens");
      if (!error) out = encode_detokenize(srv_.tok->decode(parsed.request.tokens, false));
    } else {
      auto parsed = parse_tokenize_request(body, srv_.options.limits);
      error = parsed.error;
      if (!error) error = check_model(parsed.request.model, srv_.served_names);
      if (!error) {
        const auto& r = parsed.request;
        std::vector<int32_t> ids;
        if (r.is_chat) {
          auto text = render_chat(srv_, r.ordered, r.add_generation_prompt,
                                  r.continue_final_message, r.chat_template_kwargs);
          if (!text.ok())
            error = bad_request(text.status().message(), "messages");
          else
            ids = srv_.tok->encode(*text, r.add_special_tokens);
        } else {
          ids = srv_.tok->encode(r.prompt, r.add_special_tokens);
        }
        if (!error) {
          std::vector<std::string> strs;
          if (r.return_token_strs)
            for (int32_t id : ids) strs.push_back(srv_.tok->id_to_token(id).value_or(""));
          out =
              encode_tokenize(ids, srv_.info->max_model_len, r.return_token_strs ? &strs : nullptr);
        }
      }
    }
  } catch (const std::exception& e) {
    error = ApiError{500, fmt::format("internal error: {}", e.what()), ""};
  }
  asio::post(socket_.get_executor(),
             [self = shared_from_this(), status, out = std::move(out), error]() mutable {
               if (self->state_ != State::kProcessing) return;
               if (self->peer_gone_) return self->close();
               if (error) return self->send_error(*error);
               self->send_response(status, "application/json", std::move(out));
             });
}

// ---- generation ----

void Session::submit(coordinator::RequestSpec spec) {
  state_ = State::kGenerating;
  meta_.id = make_response_id(chat_ ? "chatcmpl-" : "cmpl-");
  meta_.created = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  meta_.model = srv_.served_names.front();
  const size_t ctx = std::min<size_t>(prompt_ids_.size(), 8);
  detok_.emplace(*srv_.tok,
                 std::span<const int32_t>(prompt_ids_.data() + prompt_ids_.size() - ctx, ctx),
                 params_.skip_special_tokens);
  matcher_.emplace(params_.stop);
  text_.clear();
  num_generated_ = 0;
  stopped_ = false;
  stop_reason_ = nullptr;
  stream_started_ = false;
  first_token_seen_ = false;
  self_ = shared_from_this();
  ++srv_.generations_open;
  // The sink holds no executor (it may outlive the I/O context), only the gate and the session.
  std::weak_ptr<Session> weak = self_;
  auto gate = srv_.gate;
  ticket_ = srv_.loop->submit(std::move(spec), [gate, weak](RequestUpdate&& e) {
    std::lock_guard<std::mutex> lock(gate->mu);
    if (!gate->open) return;
    if (auto s = weak.lock()) s->post_event(std::move(e));
  });
  watch_socket();
}

std::string Session::take_text(const std::vector<int32_t>& tokens) {
  std::string out;
  if (stopped_) return out;
  for (int32_t t : tokens) {
    ++num_generated_;
    if (std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), t) !=
        params_.stop_token_ids.end()) {
      stopped_ = true;
      stop_reason_ = t;
      break;
    }
    out += matcher_->push(detok_->push(t));
    if (matcher_->stopped()) {
      stopped_ = true;
      stop_reason_ = matcher_->matched();
      break;
    }
  }
  if (stopped_ && ticket_) srv_.loop->abort(ticket_, "stopped by a stop string or token");
  return out;
}

void Session::on_event(RequestUpdate e) {
  if (!ticket_) return;  // abandoned
  if (e.rejected || e.unavailable) {
    // Never ran: an HTTP error (nothing has been sent yet).
    ticket_ = 0;
    --srv_.generations_open;
    self_.reset();
    if (state_ == State::kClosed || peer_gone_) return close();
    if (e.unavailable) return send_error(ApiError{503, e.error, ""});
    return send_error(bad_request(e.error));
  }
  const auto now = SteadyClock::now();
  const int64_t before = num_generated_;
  std::string delta = take_text(e.new_tokens);
  const int64_t counted = num_generated_ - before;
  if (counted > 0) {
    srv_.metrics->generation_tokens->inc(static_cast<double>(counted));
    if (!first_token_seen_) {
      first_token_seen_ = true;
      srv_.metrics->ttft->observe(std::chrono::duration<double>(now - request_start_).count());
      for (int64_t i = 1; i < counted; ++i) srv_.metrics->itl->observe(0);
    } else {
      const double gap = std::chrono::duration<double>(now - last_token_time_).count();
      for (int64_t i = 0; i < counted; ++i)
        srv_.metrics->itl->observe(gap / static_cast<double>(counted));
    }
    last_token_time_ = now;
  }
  if (e.finished) {
    finish_generation(e, std::move(delta));
    return;
  }
  if (state_ == State::kClosed || peer_gone_) return;
  if (params_.stream && !delta.empty()) {
    if (!stream_started_) begin_stream();
    Usage u{static_cast<int64_t>(prompt_ids_.size()), num_generated_};
    const Usage* up = params_.continuous_usage_stats ? &u : nullptr;
    stream_write(chat_ ? encode_chat_chunk(meta_, delta, nullptr, up)
                       : encode_completion_chunk(meta_, delta, nullptr, up));
  } else if (!params_.stream) {
    text_ += delta;
  }
}

void Session::finish_generation(const RequestUpdate& e, std::string delta) {
  ticket_ = 0;
  --srv_.generations_open;
  auto keep = std::move(self_);  // released when this returns
  std::string tail = std::move(delta);
  if (!stopped_) {
    tail += matcher_->push(detok_->flush());
    if (matcher_->stopped()) {
      stopped_ = true;
      stop_reason_ = matcher_->matched();
    } else {
      tail += matcher_->flush();
    }
  }
  Finish finish;
  finish.reason = stopped_ ? "stop" : coordinator::finish_reason_name(e.finish_reason);
  if (finish.reason.empty()) finish.reason = "abort";
  finish.stop_reason = stop_reason_;
  const Usage usage{static_cast<int64_t>(prompt_ids_.size()), num_generated_};
  srv_.metrics->prompt_tokens->inc(static_cast<double>(usage.prompt_tokens));
  srv_.metrics->e2e->observe(seconds_since(request_start_));
  srv_.metrics->queue->observe(e.queue_s);
  srv_.metrics->success(finish.reason)->inc();
  if (state_ == State::kClosed || peer_gone_) return close();
  if (finish.reason == "error") {
    ApiError err{500, e.error.empty() ? "the engine failed this request" : e.error, ""};
    if (!params_.stream || !stream_started_) return send_error(err);
    stream_write(encode_stream_error(err));
    stream_write(std::string(kSseDone));
    return end_stream();
  }
  if (!params_.stream) {
    text_ += tail;
    const std::string body = chat_ ? encode_chat_completion(meta_, text_, finish, usage)
                                   : encode_completion(meta_, text_, finish, usage);
    return send_response(200, "application/json", body);
  }
  if (!stream_started_) begin_stream();
  const Usage* up = params_.continuous_usage_stats ? &usage : nullptr;
  stream_write(chat_ ? encode_chat_chunk(meta_, tail, &finish, up)
                     : encode_completion_chunk(meta_, tail, &finish, up));
  if (params_.include_usage) stream_write(encode_usage_chunk(meta_, chat_, usage));
  stream_write(std::string(kSseDone));
  end_stream();
}

// ---- writing ----

void Session::send_error(const ApiError& e, bool close_after) {
  if (e.status >= 500)
    ++srv_.errors_5xx;
  else
    ++srv_.errors_4xx;
  send_response(e.status, "application/json", encode_error(e), close_after);
}

void Session::send_response(int status, std::string content_type, std::string body,
                            bool close_after) {
  if (state_ == State::kClosed) return;
  if (close_after) keep_alive_ = false;
  if (srv_.stopping.load()) keep_alive_ = false;
  state_ = State::kWriting;
  http::response<http::string_body> res{static_cast<http::status>(status), 11};
  res.set(http::field::server, "shardwise");
  if (!content_type.empty()) res.set(http::field::content_type, content_type);
  if (status == 401) res.set(http::field::www_authenticate, "Bearer");
  res.keep_alive(keep_alive_);
  res.body() = std::move(body);
  res.prepare_payload();
  std::ostringstream os;
  os << res;
  response_complete_ = true;
  queue(os.str());
}

void Session::begin_stream() {
  stream_started_ = true;
  http::response<http::empty_body> res{http::status::ok, 11};
  res.set(http::field::server, "shardwise");
  res.set(http::field::content_type, "text/event-stream; charset=utf-8");
  res.set(http::field::cache_control, "no-cache");
  res.keep_alive(keep_alive_);
  res.chunked(true);
  std::ostringstream os;
  os << res.base();
  queue(os.str());
  if (chat_) {
    Usage u{static_cast<int64_t>(prompt_ids_.size()), 0};
    stream_write(encode_chat_role_chunk(meta_, params_.continuous_usage_stats ? &u : nullptr));
  }
}

void Session::stream_write(const std::string& payload) {
  if (payload.empty()) return;
  queue(fmt::format("{:x}\r\n", payload.size()) + payload + "\r\n");
  if (static_cast<int64_t>(out_.size()) > srv_.options.max_pending_stream_bytes) {
    // The client does not read: give up on it rather than buffer without bound.
    ++srv_.timeouts;
    peer_gone();
    close();
  }
}

void Session::end_stream() {
  state_ = State::kWriting;
  response_complete_ = true;
  queue("0\r\n\r\n");
}

void Session::queue(std::string bytes) {
  if (state_ == State::kClosed) return;
  out_ += bytes;
  flush();
}

void Session::flush() {
  if (write_pending_ || out_.empty() || state_ == State::kClosed) return;
  writing_.swap(out_);
  out_.clear();
  write_pending_ = true;
  // A write timer only while no read deadline runs (reads are done by then).
  if (state_ == State::kGenerating || state_ == State::kWriting)
    arm(Deadline::kWrite, srv_.options.write_timeout_s);
  asio::async_write(
      socket_, asio::buffer(writing_),
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_written(ec, n); });
}

void Session::on_written(beast::error_code ec, size_t) {
  write_pending_ = false;
  writing_.clear();
  if (state_ == State::kClosed) return;
  if (ec) {
    peer_gone();
    return close();
  }
  if (!out_.empty()) return flush();
  disarm();
  if (response_complete_ && state_ == State::kWriting) response_done();
}

void Session::response_done() {
  response_complete_ = false;
  parser_.reset();
  if (!keep_alive_ || peer_gone_) return linger_close();
  read_first_byte(/*first=*/false);
}

void Session::linger_close() {
  if (peer_gone_) return close();
  state_ = State::kLinger;
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  arm(Deadline::kIdle, 2.0);
  if (reading_) return;
  reading_ = true;
  socket_.async_read_some(
      buffer_.prepare(4096),
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_read_some(ec, n); });
}

void Session::peer_gone() {
  if (peer_gone_) return;
  peer_gone_ = true;
  if (ticket_) {
    ++srv_.disconnect_aborts;
    srv_.loop->abort(ticket_, "the client disconnected");
  }
}

void Session::close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  disarm();
  if (ticket_) {
    // The final event still comes (and is dropped); the engine frees the request's blocks.
    srv_.loop->abort(ticket_, "the connection closed");
  }
  beast::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  --srv_.connections_open;
  srv_.forget(id_);
}

// ---- the server ----

void HttpServer::Impl::accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      spdlog::warn("http: accept failed: {}", ec.message());
      // Out of descriptors and the like: try again shortly rather than spin.
      auto t = std::make_shared<asio::steady_timer>(acceptor.get_executor(),
                                                    std::chrono::milliseconds(50));
      t->async_wait([this, t](beast::error_code) {
        if (acceptor.is_open()) accept();
      });
      return;
    }
    ++connections_accepted;
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::shared_ptr<Session> s;
    {
      std::lock_guard<std::mutex> lock(sessions_mu);
      const uint64_t id = next_session++;
      s = std::make_shared<Session>(*this, std::move(socket), id);
      sessions[id] = s;
    }
    ++connections_open;
    if (connections_open.load() > options.max_connections) {
      s->refuse(ApiError{503, "too many connections", ""});
    } else {
      s->start();
    }
    accept();
  });
}

void HttpServer::Impl::stop() {
  if (stopping.exchange(true)) return;
  asio::post(acceptor.get_executor(), [this] {
    beast::error_code ignored;
    acceptor.close(ignored);
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> lock(sessions_mu);
    for (auto& [id, w] : sessions)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->post_close(/*only_idle=*/true);
}

void HttpServer::Impl::shutdown() {
  if (shut_down) return;
  shut_down = true;
  stop();
  {
    std::lock_guard<std::mutex> lock(gate->mu);
    gate->open = false;
  }
  if (cpu) cpu->join();
  if (cpu_large) cpu_large->join();
  work.reset();
  ioc.stop();
  for (auto& t : threads) t.join();
  threads.clear();
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard<std::mutex> lock(sessions_mu);
    for (auto& [id, w] : sessions)
      if (auto s = w.lock()) live.push_back(std::move(s));
    sessions.clear();
  }
  for (auto& s : live) s->abandon();
}

HttpServer::HttpServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { shutdown(); }

void HttpServer::stop() { impl_->stop(); }
void HttpServer::shutdown() { impl_->shutdown(); }
int HttpServer::port() const { return impl_->bound_port; }
std::string HttpServer::host() const { return impl_->options.host; }

HttpServerCounters HttpServer::counters() const {
  HttpServerCounters c;
  c.connections_accepted = impl_->connections_accepted.load();
  c.connections_open = impl_->connections_open.load();
  c.requests = impl_->requests.load();
  c.generations_open = impl_->generations_open.load();
  c.disconnect_aborts = impl_->disconnect_aborts.load();
  c.timeouts = impl_->timeouts.load();
  c.errors_4xx = impl_->errors_4xx.load();
  c.errors_5xx = impl_->errors_5xx.load();
  return c;
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(
    HttpServerOptions options, coordinator::EngineLoop& loop,
    const coordinator::serve::ServerInfo& info,
    std::shared_ptr<const tokenizer::Tokenizer> tokenizer,
    std::shared_ptr<const tokenizer::ChatTemplate> chat_template) {
  if (!tokenizer) return invalid_argument("HttpServer::start: a tokenizer is required");
  if (options.port < 0 || options.port > 65535)
    return invalid_argument("--port must be in [0, 65535], got {}", options.port);
  if (options.io_threads < 1 || options.io_threads > 256)
    return invalid_argument("io_threads must be in [1, 256], got {}", options.io_threads);
  if (options.cpu_threads < 1 || options.cpu_threads > 256)
    return invalid_argument("cpu_threads must be in [1, 256], got {}", options.cpu_threads);
  for (double t :
       {options.request_timeout_s, options.keep_alive_timeout_s, options.write_timeout_s})
    if (!(t > 0 && t <= limits::kMaxTimeoutS))
      return invalid_argument("HTTP timeouts must be in (0, {}] s, got {}", limits::kMaxTimeoutS,
                              t);
  if (options.max_body_bytes < 1 || options.max_header_bytes < 256)
    return invalid_argument("HTTP size limits too small (body {}, header {})",
                            options.max_body_bytes, options.max_header_bytes);
  auto impl = std::make_shared<Impl>();
  impl->options = options;
  impl->loop = &loop;
  impl->info = &info;
  impl->tok = std::move(tokenizer);
  impl->chat_template = std::move(chat_template);
  impl->served_names = options.served_model_names;
  if (impl->served_names.empty()) impl->served_names.push_back(info.model);
  impl->created = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  impl->metrics = std::make_unique<ServerMetrics>(impl->served_names.front());

  beast::error_code ec;
  asio::ip::address addr;
  if (options.host.empty() || options.host == "0.0.0.0") {
    addr = asio::ip::address_v4::any();
  } else if (options.host == "::") {
    addr = asio::ip::address_v6::any();
  } else {
    addr = asio::ip::make_address(options.host, ec);
    if (ec) {
      tcp::resolver resolver(impl->ioc);
      auto results = resolver.resolve(options.host, "", ec);
      if (ec || results.empty())
        return invalid_argument("--host {}: not an address or a name that resolves ({})",
                                options.host, ec.message());
      addr = results.begin()->endpoint().address();
    }
  }
  const tcp::endpoint ep(addr, static_cast<unsigned short>(options.port));
  impl->acceptor.open(ep.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(ep, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return unavailable("cannot listen on {}:{}: {}", options.host, options.port, ec.message());
  impl->bound_port = impl->acceptor.local_endpoint().port();
  if (options.api_key.empty() && !addr.is_loopback() && options.host != "localhost")
    spdlog::warn(
        "http: listening on {}:{} beyond loopback without an API key: anyone who can reach it "
        "can use the model (set --api-key)",
        options.host, impl->bound_port);

  impl->work.emplace(impl->ioc.get_executor());
  impl->cpu = std::make_unique<asio::thread_pool>(options.cpu_threads);
  impl->cpu_large = std::make_unique<asio::thread_pool>(1);
  // Lowest priority for the large-body thread only (Linux nice values are per thread).
  asio::post(*impl->cpu_large,
             [] { (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19); });
  impl->accept();
  for (int i = 0; i < options.io_threads; ++i)
    impl->threads.emplace_back([raw = impl.get()] { raw->ioc.run(); });
  spdlog::info("http: serving {} on http://{}:{}", impl->served_names.front(), options.host,
               impl->bound_port);
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

Result<std::shared_ptr<const tokenizer::ChatTemplate>> load_chat_template(
    const std::string& option, const tokenizer::Tokenizer& tok) {
  std::string text, source;
  if (!option.empty()) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(option, ec)) {
      SW_ASSIGN_OR_RETURN(text, read_text_file(option, int64_t{4} << 20, "chat template"));
      source = option;
    } else if (option.find("{{") != std::string::npos || option.find("{%") != std::string::npos) {
      text = option;
      source = "--chat-template";
    } else {
      return not_found("--chat-template {}: no such file (nor a template text)", option);
    }
  } else {
    text = tok.info().chat_template;
    source = "tokenizer_config.json chat_template";
  }
  if (text.empty()) return std::shared_ptr<const tokenizer::ChatTemplate>();
  SW_ASSIGN_OR_RETURN(auto tpl, tokenizer::ChatTemplate::compile(text, source));
  return std::shared_ptr<const tokenizer::ChatTemplate>(std::move(tpl));
}

}  // namespace sw::frontend

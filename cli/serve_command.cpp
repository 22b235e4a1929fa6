// `shardwise serve`: the engine behind its client endpoints — the OpenAI-compatible HTTP server
// (frontend/http_server: text in, text out, with the model folder's tokenizer and chat
// template) and the ZeroMQ token endpoint (frontend/zmq_server; wire format in
// coordinator/serve_protocol.h), each on its own threads, and the engine loop
// (coordinator/engine_loop) on this one. One process (--model) or a
// cluster under mpirun or srun (--config). SIGINT/SIGTERM to the coordinator (rank 0) stop
// admitting, let open requests finish within --drain-timeout, abort the rest, stop every worker
// and exit 0; a second signal aborts what is open at once.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "cli/engine_args.h"
#include "coordinator/engine_loop.h"
#include "frontend/http_server.h"
#include "frontend/zmq_server.h"

namespace sw::cli {

namespace {

std::atomic<int> g_signals{0};  // 1: drain, 2: abort what is open (EngineLoop::run)

// A drain the server starts itself (a front end failed): at least 1, never counted as one of
// the operator's signals (a later SIGTERM must still drain, not abort).
void begin_internal_drain() {
  int v = g_signals.load();
  while (v < 1 && !g_signals.compare_exchange_weak(v, 1)) {
  }
}

extern "C" void on_stop_signal(int) { g_signals.fetch_add(1); }

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

struct ServeArgs {
  EngineArgs engine;
  coordinator::EngineLoopOptions loop;
  frontend::ZmqServerOptions zmq;
  frontend::HttpServerOptions http;
  bool http_flag_given = false;  // --port/--host/...: HTTP must start (a tokenizer is needed)
  std::string ready_file;
  bool no_moe_metrics = false;
};

// The tokenizer for the HTTP front end: --tokenizer, else the model folder when it has a
// tokenizer.json. Null (no HTTP) when neither, unless an HTTP flag asked for it.
Result<std::shared_ptr<const tokenizer::Tokenizer>> load_tokenizer(
    const ServeArgs& a, const coordinator::serve::ServerInfo& info) {
  std::string dir = a.http.tokenizer;
  if (dir.empty() &&
      std::filesystem::is_regular_file(std::filesystem::path(info.model) / "tokenizer.json"))
    dir = info.model;
  if (dir.empty()) {
    if (a.http_flag_given)
      return invalid_argument(
          "serve: the HTTP front end needs a tokenizer, and model '{}' has no tokenizer.json: "
          "give --tokenizer DIR (a folder with tokenizer.json)",
          info.model);
    spdlog::warn(
        "serve: model '{}' has no tokenizer.json and no --tokenizer was given: the "
        "OpenAI HTTP front end is off; the ZeroMQ token endpoint serves",
        info.model);
    return std::shared_ptr<const tokenizer::Tokenizer>();
  }
  auto tok = tokenizer::Tokenizer::from_folder(dir);
  if (!tok.ok()) return tok.status().with_context(fmt::format("--tokenizer {}", dir));
  return std::shared_ptr<const tokenizer::Tokenizer>(std::move(tok).value());
}

// {"endpoint": ..., "http": ..., "pid": ...}, written whole (rename) once requests are taken.
Status write_ready_file(const std::string& path, const std::string& endpoint,
                        const std::string& http, const coordinator::serve::ServerInfo& info) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) return not_found("--ready-file: cannot write '{}'", tmp);
    nlohmann::json j{{"endpoint", endpoint},
                     {"pid", static_cast<int64_t>(getpid())},
                     {"world_size", info.world_size},
                     {"layout", info.layout()}};
    if (!http.empty()) j["http"] = http;
    out << j.dump() << "\n";
    if (!out) return not_found("--ready-file: cannot write '{}'", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return not_found("--ready-file: cannot rename '{}' to '{}': {}", tmp, path, ec.message());
  return Status();
}

int run_serve(const ServeArgs& a) {
  coordinator::EngineLoop loop(a.loop);
  coordinator::serve::ServerInfo served;  // outlives the HTTP server, which refers to it
  std::unique_ptr<frontend::ZmqServer> server;
  std::unique_ptr<frontend::HttpServer> http;
  std::string http_url;
  EngineRunOptions ro;
  ro.collect_moe_metrics = !a.no_moe_metrics;
  ro.workers_ignore_signals = true;
  ro.prepare = [&](const coordinator::serve::ServerInfo& info, int block_size) -> Result<int64_t> {
    install_stop_handlers();
    // Bound before any weights load: a taken port fails in seconds, on every rank cleanly.
    SW_ASSIGN_OR_RETURN(server, frontend::ZmqServer::bind(a.zmq, info, &loop));
    served = info;
    SW_ASSIGN_OR_RETURN(auto tok, load_tokenizer(a, info));
    if (tok) {
      SW_ASSIGN_OR_RETURN(auto tpl, frontend::load_chat_template(a.http.chat_template, *tok));
      SW_ASSIGN_OR_RETURN(http, frontend::HttpServer::start(a.http, loop, served, tok, tpl));
      const std::string host = http->host();
      http_url = host.find(':') != std::string::npos
                     ? fmt::format("http://[{}]:{}", host, http->port())
                     : fmt::format("http://{}:{}", host, http->port());
    }
    if (!a.engine.config.empty()) return 0;  // the cluster file sizes the cache
    // One process without --num-kv-blocks / --gpu-memory-utilization: room for max_num_seqs
    // sequences of up to 4096 tokens.
    const int64_t len = std::min<int64_t>(info.max_model_len, 4096);
    return static_cast<int64_t>(a.engine.max_num_seqs) * ((len + block_size - 1) / block_size);
  };
  return run_engine(
      a.engine, ro,
      [&](coordinator::Engine& engine, const coordinator::serve::ServerInfo& info) -> Status {
        fmt::print(stderr, "serve: {} ({}) on {} rank(s), {}: requests on {}{}\n", info.model,
                   info.model_type, info.world_size, info.layout(), server->endpoint(),
                   http_url.empty() ? "" : " and " + http_url);
        // The endpoints on their own threads; this thread runs the engine loop. A front end
        // that fails (its socket broke) starts the drain: the engine stops cleanly.
        std::atomic<bool> stop_frontends{false};
        Status zmq_status;
        std::thread zmq_thread([&] {
          zmq_status = server->run(stop_frontends);
          if (!zmq_status.ok()) begin_internal_drain();
        });
        Status st;
        if (!a.ready_file.empty())
          st = write_ready_file(a.ready_file, server->endpoint(), http_url, info);
        if (!st.ok()) begin_internal_drain();
        Status loop_status = loop.run(engine, g_signals);
        // Drained: every request has its final event. Let the front ends send them, then close.
        if (http) {
          http->stop();
          const auto deadline = coordinator::Clock::now() + std::chrono::seconds(5);
          while (http->counters().generations_open > 0 && coordinator::Clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          http->shutdown();
        }
        stop_frontends = true;
        zmq_thread.join();
        if (st.ok()) st = loop_status;
        if (st.ok()) st = zmq_status;
        const auto& c = server->counters();
        fmt::print(stderr,
                   "serve: stopped: {} request(s) accepted, {} completed, {} aborted by "
                   "clients, {} dropped with {} vanished client(s), {} frame(s) refused",
                   c.accepted, c.completed, c.aborted, c.dropped_requests, c.disconnects,
                   c.rejected);
        std::fputc('\n', stderr);
        if (!a.ready_file.empty()) std::remove(a.ready_file.c_str());
        return st;
      });
}

}  // namespace

std::function<int()> add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* s =
      app.add_subcommand("serve",
                         "Serve requests over the OpenAI HTTP API (docs/openai-api.md) and ZeroMQ "
                         "(docs/wire-format.md): one process (--model) or a cluster "
                         "under mpirun/srun (--config)");
  auto flags = std::make_shared<EngineFlags>(
      s, &a->engine,
      "KV cache blocks (0 = on cpu, room for max-num-seqs sequences of up to 4096 tokens)");
  s->add_option("--endpoint", a->zmq.endpoint,
                "Where clients connect: tcp://HOST:PORT (PORT * = any free port; see "
                "--ready-file) or ipc://PATH")
      ->capture_default_str();
  s->add_option("--ready-file", a->ready_file,
                "Once requests are taken, write {\"endpoint\", \"pid\", ...} here as JSON "
                "(removed at exit)");
  s->add_option("--drain-timeout", a->loop.drain_timeout_s,
                "Seconds open requests may run on after SIGINT/SIGTERM before they are aborted")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  s->add_option("--heartbeat-interval", a->zmq.heartbeat_s,
                "Seconds between heartbeats to clients with open requests (how a vanished "
                "client is found)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  s->add_option("--max-frame-bytes", a->zmq.max_frame_bytes,
                "Larger request frames are dropped with their sender's connection, unread")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  s->add_option("--max-open-requests", a->loop.max_open_requests,
                "More open requests get an overloaded error")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  // The OpenAI HTTP front end: vLLM's flag names.
  const std::vector<CLI::Option*> http_flags = {
      s->add_option("--host", a->http.host, "HTTP: address to listen on")->capture_default_str(),
      s->add_option("--port", a->http.port, "HTTP: port (0 = any free port; see --ready-file)")
          ->capture_default_str()
          ->check(CLI::Range(0, 65535)),
      s->add_option("--api-key", a->http.api_key,
                    "HTTP: a Bearer key every route but /health requires"),
      s->add_option("--served-model-name", a->http.served_model_names,
                    "HTTP: the model name(s) clients use; the first is reported (default: the "
                    "model path)"),
      s->add_option("--tokenizer", a->http.tokenizer,
                    "HTTP: folder with tokenizer.json (+ tokenizer_config.json, "
                    "generation_config.json); default: the model folder"),
      s->add_option("--chat-template", a->http.chat_template,
                    "HTTP: a Jinja2 chat template file (or the template text) instead of the "
                    "tokenizer's"),
  };
  s->add_flag("--no-moe-metrics", a->no_moe_metrics,
              "Do not count MoE routing per layer (saves a device sync per MoE layer per step)");
  return [a, flags, http_flags]() {
    if (!flags->check(std::cerr)) return 2;
    for (const CLI::Option* o : http_flags) a->http_flag_given |= o->count() > 0;
    return run_serve(*a);
  };
}

}  // namespace sw::cli

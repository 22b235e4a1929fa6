// `shardwise serve`: the engine behind a ZeroMQ endpoint (coordinator/server; wire format in
// coordinator/serve_protocol.h and README.md). One process (--model) or a cluster under mpirun
// or srun (--config). SIGINT/SIGTERM to the coordinator (rank 0) stop admitting, let open
// requests finish within --drain-timeout, abort the rest, stop every worker and exit 0; a second
// signal aborts what is open at once.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_args.h"
#include "coordinator/server.h"

namespace sw::cli {

namespace {

std::atomic<int> g_signals{0};  // 1: drain, 2: abort what is open (Server::run)

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
  coordinator::ServerOptions server;
  std::string ready_file;
  bool no_moe_metrics = false;
};

// {"endpoint": ..., "pid": ...}, written whole (rename) once requests are taken.
Status write_ready_file(const std::string& path, const std::string& endpoint,
                        const coordinator::serve::ServerInfo& info) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    if (!out) return not_found("--ready-file: cannot write '{}'", tmp);
    out << nlohmann::json{{"endpoint", endpoint},
                          {"pid", static_cast<int64_t>(getpid())},
                          {"world_size", info.world_size},
                          {"layout", info.layout()}}
               .dump()
        << "\n";
    if (!out) return not_found("--ready-file: cannot write '{}'", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return not_found("--ready-file: cannot rename '{}' to '{}': {}", tmp, path, ec.message());
  return Status();
}

int run_serve(const ServeArgs& a) {
  std::unique_ptr<coordinator::Server> server;
  EngineRunOptions ro;
  ro.collect_moe_metrics = !a.no_moe_metrics;
  ro.workers_ignore_signals = true;
  ro.prepare = [&](const coordinator::serve::ServerInfo& info, int block_size) -> Result<int64_t> {
    install_stop_handlers();
    // Bound before any weights load: a taken port fails in seconds, on every rank cleanly.
    SW_ASSIGN_OR_RETURN(server, coordinator::Server::bind(a.server, info));
    if (!a.engine.config.empty()) return 0;  // the cluster file sizes the cache
    // One process without --num-kv-blocks / --gpu-memory-utilization: room for max_num_seqs
    // sequences of up to 4096 tokens.
    const int64_t len = std::min<int64_t>(info.max_model_len, 4096);
    return static_cast<int64_t>(a.engine.max_num_seqs) * ((len + block_size - 1) / block_size);
  };
  return run_engine(
      a.engine, ro,
      [&](coordinator::Engine& engine, const coordinator::serve::ServerInfo& info) -> Status {
        fmt::print(stderr, "serve: {} ({}) on {} rank(s), {}: requests on {}\n", info.model,
                   info.model_type, info.world_size, info.layout(), server->endpoint());
        if (!a.ready_file.empty())
          SW_RETURN_IF_ERROR(write_ready_file(a.ready_file, server->endpoint(), info));
        Status st = server->run(engine, g_signals);
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
  CLI::App* s = app.add_subcommand(
      "serve",
      "Serve requests over ZeroMQ (README: Wire format): one process (--model) or a cluster "
      "under mpirun/srun (--config)");
  auto flags = std::make_shared<EngineFlags>(
      s, &a->engine,
      "KV cache blocks (0 = on cpu, room for max-num-seqs sequences of up to 4096 tokens)");
  s->add_option("--endpoint", a->server.endpoint,
                "Where clients connect: tcp://HOST:PORT (PORT * = any free port; see "
                "--ready-file) or ipc://PATH")
      ->capture_default_str();
  s->add_option("--ready-file", a->ready_file,
                "Once requests are taken, write {\"endpoint\", \"pid\", ...} here as JSON "
                "(removed at exit)");
  s->add_option("--drain-timeout", a->server.drain_timeout_s,
                "Seconds open requests may run on after SIGINT/SIGTERM before they are aborted")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  s->add_option("--heartbeat-interval", a->server.heartbeat_s,
                "Seconds between heartbeats to clients with open requests (how a vanished "
                "client is found)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  s->add_option("--max-frame-bytes", a->server.max_frame_bytes,
                "Larger request frames get a too_large error")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  s->add_option("--max-open-requests", a->server.max_open_requests,
                "More open requests get an overloaded error")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  s->add_flag("--no-moe-metrics", a->no_moe_metrics,
              "Do not count MoE routing per layer (saves a device sync per MoE layer per step)");
  return [a, flags]() {
    if (!flags->check(std::cerr)) return 2;
    return run_serve(*a);
  };
}

}  // namespace sw::cli

// EngineLoop: the Engine on its own thread, fed by front ends on theirs. Front ends (HTTP,
// ZeroMQ) parse, validate and tokenize on their own threads and hand the loop only ready
// requests; the loop thread only schedules. Every output of a request goes to the sink given
// at submit(), called on the engine thread: a sink must only hand the event over (post it to
// an I/O context, push it to a queue) and never block.
//
// Drain (SIGTERM to serve): new submissions are refused with kShuttingDown, open requests may
// finish within the drain timeout, then they are aborted; run() returns once none is open.
//
//   EngineLoop loop(options);
//   std::thread http([&] { ... loop.submit(spec, [](RequestUpdate e) { post(...); }); ... });
//   loop.run(engine, stop_signals);   // on the thread that owns the Engine
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/engine.h"
#include "coordinator/serve_protocol.h"

namespace sw::coordinator {

// What a submitted request produced since its last event. The last event of every request
// has `finished` set and carries its summary; nothing follows it.
struct RequestUpdate {
  uint64_t ticket = 0;  // what submit() returned (a sink may run before submit returns)
  std::vector<int32_t> new_tokens;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;  // finished: length | stop | abort | error
  // Engine::add refused it (never ran): `error` says why and `rejected` is set; front ends
  // answer with a client error (400) rather than a failed generation.
  bool rejected = false;
  // Refused because the loop is draining or full (a 503, not a 400).
  bool unavailable = false;
  std::string error;
  serve::RequestSummary summary;  // finished: lengths, timings, placement
  // finished and not rejected: when it was queued and first scheduled, relative to arrival
  // (the front end's metrics).
  double queue_s = 0;
};
using RequestSink = std::function<void(RequestUpdate&&)>;

// Gauges and counters the front ends report (/metrics, stats); refreshed every loop turn.
struct EngineSnapshot {
  serve::ServerStats stats;
  double kv_cache_usage = 0;  // used / total KV blocks over every instance, 0..1
  int64_t num_open = 0;       // submitted and not yet finished
  bool draining = false;
  // Instances per role that are healthy ("prefill", "decode", "mixed").
  std::map<std::string, int> instances_alive;
  double kv_transfer_seconds = 0;  // summed over finished transfers
};

struct EngineLoopOptions {
  double drain_timeout_s = 30.0;
  int64_t max_open_requests = 1 << 20;  // more: refused as unavailable
  // How long the loop sleeps when the engine has nothing to do (also the longest a stop
  // signal waits to be noticed); a submission wakes it at once.
  double idle_wait_s = 0.05;
};

class EngineLoop {
 public:
  explicit EngineLoop(EngineLoopOptions options = {});
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // ---- any thread ----
  // Queues a ready request; returns its ticket (never 0) at once. Errors (refused by the
  // engine, draining, too many open) arrive as the sink's only event.
  uint64_t submit(RequestSpec spec, RequestSink sink);
  // Ends a request in any state (the client went away); its sink gets a final abort event.
  // Unknown or finished tickets are ignored.
  void abort(uint64_t ticket, std::string why = "aborted by the client");
  EngineSnapshot snapshot() const;
  bool draining() const { return draining_.load(); }

  // ---- the engine thread ----
  // Serves until `stop` >= 1 (drain) and everything open is done; at `stop` >= 2 aborts what
  // is open at once. An error is the engine's (a bug), not a client's.
  Status run(Engine& engine, const std::atomic<int>& stop);
  // One turn: takes submissions and aborts, steps the engine (waiting up to max_wait_s when
  // idle), delivers events, checks the drain deadline.
  Status run_once(Engine& engine, double max_wait_s);
  void begin_drain();
  // Draining, nothing open, nothing in flight: then the loop is closed, and a later submit()
  // is refused at once (its sink called from submit()).
  bool drained(const Engine& engine);
  // The engine's id of an open request (tests), or -1.
  int64_t engine_id(uint64_t ticket) const;

 private:
  struct Pending {
    uint64_t ticket;
    RequestSpec spec;
    RequestSink sink;
  };
  struct Open {
    int64_t engine_id;
    RequestSink sink;
  };
  void take_inbox(Engine& engine);
  void deliver(Engine& engine, const std::vector<RequestOutput>& outputs);
  void finish(Engine& engine, uint64_t ticket, RequestUpdate event);
  void abort_all(Engine& engine, const std::string& why);
  void refresh_snapshot(const Engine& engine);
  // After an engine error: every queued and open request gets its final (error) event and
  // later submissions are refused, so no front end waits for what cannot come.
  void close_with_error(const std::string& why);

  EngineLoopOptions options_;
  std::atomic<uint64_t> next_ticket_{1};

  mutable std::mutex mu_;  // guards the inbox, aborts and the snapshot
  std::condition_variable wake_;
  std::deque<Pending> inbox_;
  std::vector<std::pair<uint64_t, std::string>> aborts_;
  EngineSnapshot snapshot_;
  std::atomic<bool> draining_{false};
  bool closed_ = false;  // run() is over: submissions are refused (guarded by mu_)
  std::string closed_why_;

  // engine thread only
  std::map<uint64_t, Open> open_;             // by ticket
  std::map<int64_t, uint64_t> by_engine_id_;  // engine id -> ticket
  Clock::time_point drain_deadline_;
  double kv_transfer_seconds_ = 0;
};

}  // namespace sw::coordinator

// The engine thread's loop behind every client endpoint (see engine_loop.h): an inbox of ready
// requests and aborts filled by front-end threads, drained once per turn.
#include "coordinator/engine_loop.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <utility>

#include "comm/options.h"
#include "coordinator/serve_protocol.h"

namespace sw::coordinator {

namespace {

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

RequestUpdate refusal(uint64_t ticket, std::string why, bool unavailable) {
  RequestUpdate e;
  e.ticket = ticket;
  e.finished = true;
  e.rejected = !unavailable;
  e.unavailable = unavailable;
  e.finish_reason = FinishReason::kError;
  e.error = std::move(why);
  e.summary.finish_reason = finish_reason_name(FinishReason::kError);
  e.summary.error = e.error;
  return e;
}

}  // namespace

EngineLoop::EngineLoop(EngineLoopOptions options) : options_(std::move(options)) {}

uint64_t EngineLoop::submit(RequestSpec spec, RequestSink sink) {
  const uint64_t ticket = next_ticket_.fetch_add(1);
  std::string why;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) {
      inbox_.push_back(Pending{ticket, std::move(spec), std::move(sink)});
      wake_.notify_one();
      return ticket;
    }
    why = closed_why_;
  }
  // run() has returned: nothing would take it (a front end that checked draining() just before).
  sink(refusal(ticket, why, /*unavailable=*/true));
  return ticket;
}

void EngineLoop::abort(uint64_t ticket, std::string why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.emplace_back(ticket, std::move(why));
  }
  wake_.notify_one();
}

EngineSnapshot EngineLoop::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

void EngineLoop::begin_drain() {
  if (draining_.exchange(true)) return;
  drain_deadline_ = Clock::now() + comm::steady_seconds(options_.drain_timeout_s);
  spdlog::warn("serve: stopping: {} open request(s) get {:.0f} s to finish; new ones are refused",
               open_.size(), options_.drain_timeout_s);
}

bool EngineLoop::drained(const Engine& engine) {
  if (!draining_.load() || !open_.empty() || engine.busy()) return false;
  std::lock_guard<std::mutex> lock(mu_);
  if (!inbox_.empty()) return false;
  // Closed in the same breath as the inbox is seen empty: a later submit() is refused at once.
  closed_ = true;
  closed_why_ = "the server is shutting down";
  return true;
}

void EngineLoop::close_with_error(const std::string& why) {
  std::deque<Pending> inbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    closed_why_ = why;
    inbox.swap(inbox_);
  }
  for (Pending& p : inbox) p.sink(refusal(p.ticket, why, /*unavailable=*/true));
  // The engine is not trusted after an error: every open request just ends, with the reason.
  std::map<uint64_t, Open> open = std::move(open_);
  open_.clear();
  by_engine_id_.clear();
  for (auto& [ticket, o] : open) {
    RequestUpdate e = refusal(ticket, why, /*unavailable=*/false);
    e.rejected = false;
    o.sink(std::move(e));
  }
}

int64_t EngineLoop::engine_id(uint64_t ticket) const {
  auto it = open_.find(ticket);
  return it == open_.end() ? -1 : it->second.engine_id;
}

Status EngineLoop::run(Engine& engine, const std::atomic<int>& stop) {
  bool aborted = false;
  while (!drained(engine)) {
    const int level = stop.load();
    if (level >= 1) begin_drain();
    if (level >= 2 && !aborted) {
      aborted = true;
      abort_all(engine, "server stopped by a second signal");
    }
    if (Status st = run_once(engine, options_.idle_wait_s); !st.ok()) {
      close_with_error(fmt::format("the server stopped on an engine error: {}", st.message()));
      return st;
    }
  }
  refresh_snapshot(engine);
  return Status();
}

Status EngineLoop::run_once(Engine& engine, double max_wait_s) {
  const bool active = engine.has_unfinished() || engine.busy();
  if (!active) {
    // Idle: sleep until a submission (or an abort) arrives, at most max_wait_s. The engine is
    // still stepped below, which keeps remote workers' heartbeats going.
    std::unique_lock<std::mutex> lock(mu_);
    wake_.wait_for(lock, std::chrono::duration<double>(std::max(0.0, max_wait_s)),
                   [&] { return !inbox_.empty() || !aborts_.empty(); });
  }
  take_inbox(engine);
  const bool work = engine.has_unfinished() || engine.busy();
  // A short wait for a step when busy: new submissions are taken again within 2 ms.
  SW_ASSIGN_OR_RETURN(auto outputs, engine.step(work ? 0.002 : 0.0));
  deliver(engine, outputs);
  if (draining_.load() && !open_.empty() && Clock::now() >= drain_deadline_)
    abort_all(engine,
              fmt::format("server shutting down: not finished within the {:.0f} s drain timeout",
                          options_.drain_timeout_s));
  refresh_snapshot(engine);
  return Status();
}

void EngineLoop::take_inbox(Engine& engine) {
  std::deque<Pending> inbox;
  std::vector<std::pair<uint64_t, std::string>> aborts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox.swap(inbox_);
    aborts.swap(aborts_);
  }
  for (Pending& p : inbox) {
    if (draining_.load()) {
      p.sink(refusal(p.ticket, "the server is shutting down", /*unavailable=*/true));
      continue;
    }
    if (static_cast<int64_t>(open_.size()) >= options_.max_open_requests) {
      p.sink(refusal(p.ticket,
                     fmt::format("{} requests are open, the server's limit", open_.size()),
                     /*unavailable=*/true));
      continue;
    }
    auto added = engine.add(std::move(p.spec));
    if (!added.ok()) {
      p.sink(refusal(p.ticket, added.status().message(), /*unavailable=*/false));
      continue;
    }
    by_engine_id_[*added] = p.ticket;
    open_.emplace(p.ticket, Open{*added, std::move(p.sink)});
  }
  // Aborts after submissions: an abort sent right after its submit finds the request open.
  for (auto& [ticket, why] : aborts) {
    auto it = open_.find(ticket);
    if (it == open_.end()) continue;  // finished already, or never existed
    const int64_t eid = it->second.engine_id;
    spdlog::debug("serve: request {} (engine id {}) aborted: {}", ticket, eid, why);
    (void)engine.abort(eid);
    RequestUpdate e;
    e.finished = true;
    e.finish_reason = FinishReason::kAbort;
    e.error = why;
    finish(engine, ticket, std::move(e));
  }
}

void EngineLoop::deliver(Engine& engine, const std::vector<RequestOutput>& outputs) {
  for (const RequestOutput& out : outputs) {
    auto id = by_engine_id_.find(out.id);
    if (id == by_engine_id_.end()) continue;  // aborted and released already
    const uint64_t ticket = id->second;
    RequestUpdate e;
    e.ticket = ticket;
    e.new_tokens = out.new_tokens;
    if (!out.finished()) {
      if (!e.new_tokens.empty()) open_.at(ticket).sink(std::move(e));
      continue;
    }
    e.finished = true;
    e.finish_reason = out.finish_reason;
    e.error = out.error;
    finish(engine, ticket, std::move(e));
  }
}

void EngineLoop::finish(Engine& engine, uint64_t ticket, RequestUpdate event) {
  auto it = open_.find(ticket);
  if (it == open_.end()) return;
  Open o = std::move(it->second);
  open_.erase(it);
  event.ticket = ticket;
  by_engine_id_.erase(o.engine_id);
  if (const Request* r = engine.request(o.engine_id)) {
    event.summary = serve::summarize(*r);
    if (r->admitted != Clock::time_point{})
      event.queue_s = seconds_between(r->arrival, r->admitted);
    kv_transfer_seconds_ += r->kv_transfer_ms / 1000.0;
  }
  if (event.finish_reason == FinishReason::kAbort) event.summary.finish_reason = "abort";
  engine.release(o.engine_id);
  o.sink(std::move(event));
}

void EngineLoop::abort_all(Engine& engine, const std::string& why) {
  spdlog::warn("serve: aborting {} open request(s): {}", open_.size(), why);
  std::vector<uint64_t> tickets;
  for (const auto& [t, o] : open_) tickets.push_back(t);
  for (uint64_t t : tickets) {
    (void)engine.abort(open_.at(t).engine_id);
    RequestUpdate e;
    e.finished = true;
    e.finish_reason = FinishReason::kAbort;
    e.error = why;
    finish(engine, t, std::move(e));
  }
}

void EngineLoop::refresh_snapshot(const Engine& engine) {
  EngineSnapshot s;
  s.stats = serve::engine_stats(engine);
  const Scheduler& sched = engine.scheduler();
  int64_t total = 0, free = 0;
  for (int i = 0; i < sched.num_instances(); ++i) {
    if (!sched.instance_alive(i)) continue;
    ++s.instances_alive[instance_role_name(sched.instance(i).role)];
    const int groups = sched.kv().num_groups(i);
    total += sched.kv().num_blocks(i) * groups;
    free += sched.kv().num_free_blocks(i);
  }
  s.kv_cache_usage = total > 0 ? static_cast<double>(total - free) / static_cast<double>(total) : 0;
  s.num_open = static_cast<int64_t>(open_.size());
  s.draining = draining_.load();
  s.kv_transfer_seconds = kv_transfer_seconds_;
  std::lock_guard<std::mutex> lock(mu_);
  snapshot_ = std::move(s);
}

}  // namespace sw::coordinator

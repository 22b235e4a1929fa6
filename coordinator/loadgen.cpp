// Arrival schedules and the load loop of `shardwise bench` (see loadgen.h).
#include "coordinator/loadgen.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <thread>

namespace sw::coordinator {

namespace {

double since(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

std::vector<double> arrival_offsets(size_t n, double request_rate, double burstiness,
                                    uint64_t seed) {
  std::vector<double> t(n, 0.0);
  if (!(request_rate > 0) || std::isinf(request_rate)) return t;
  std::mt19937_64 rng(seed);
  std::gamma_distribution<double> gap(burstiness, 1.0 / (request_rate * burstiness));
  for (size_t i = 1; i < n; ++i) t[i] = t[i - 1] + gap(rng);
  return t;
}

Result<LoadResult> run_load(RequestTarget& target, const std::vector<WorkloadItem>& workload,
                            const LoadOptions& o,
                            const std::function<void(const LoadProgress&)>& progress) {
  if (!(o.burstiness > 0) || !std::isfinite(o.burstiness))
    return invalid_argument("--burstiness must be a finite number > 0, got {}", o.burstiness);
  if (o.max_concurrency < 0)
    return invalid_argument("--max-concurrency must be >= 0 (0 = no limit), got {}",
                            o.max_concurrency);
  const size_t n = workload.size();
  const std::vector<double> due = arrival_offsets(n, o.request_rate, o.burstiness, o.seed);
  LoadResult result;
  result.records.resize(n);
  std::map<std::string, size_t> index_of;
  size_t next = 0, done = 0;
  int64_t output_tokens = 0;
  const auto start = Clock::now();
  auto last_progress = start - std::chrono::seconds(1);
  Clock::time_point last_event = start;
  auto report = [&](bool force) {
    const auto now = Clock::now();
    if (!progress || (!force && now - last_progress < std::chrono::milliseconds(100))) return;
    last_progress = now;
    progress(LoadProgress{static_cast<int64_t>(done), static_cast<int64_t>(n), output_tokens,
                          since(start, now)});
  };
  bool server_stopping = false;  // a shutting_down reply: the rest are not sent
  while (done < n) {
    auto now = Clock::now();
    if (server_stopping)
      for (; next < n; ++next, ++done) {
        RequestRecord& rec = result.records[next];
        rec.index = next;
        rec.prompt_len = static_cast<int64_t>(workload[next].prompt_ids.size());
        rec.expected_output_len = workload[next].output_len;
        rec.start_s = since(start, now);
        rec.error = fmt::format("{}: not sent: the server is shutting down", serve::kShuttingDown);
      }
    if (done == n) break;
    // Send every request that is due, as far as the concurrency limit lets.
    while (
        next < n && since(start, now) >= due[next] &&
        (o.max_concurrency == 0 || static_cast<int64_t>(target.num_open()) < o.max_concurrency)) {
      const WorkloadItem& w = workload[next];
      serve::GenerateRequest r;
      r.id = std::to_string(next);
      r.spec.prompt_ids = w.prompt_ids;
      r.spec.max_new_tokens = w.output_len;
      r.spec.ignore_eos = o.ignore_eos;
      r.spec.sampling.temperature = o.temperature;
      r.spec.sampling.top_k = o.top_k;
      r.spec.sampling.top_p = o.top_p;
      r.spec.sampling.seed = o.seed + next;
      RequestRecord& rec = result.records[next];
      rec.index = next;
      rec.prompt_len = static_cast<int64_t>(w.prompt_ids.size());
      rec.expected_output_len = w.output_len;
      rec.start_s = since(start, Clock::now());
      index_of[r.id] = next;
      SW_RETURN_IF_ERROR(target.submit(r));
      ++next;
      now = Clock::now();
    }
    // Wait for events until the next request is due (a request held back by the concurrency
    // limit waits for an event).
    double wait = 0.1;
    if (next < n &&
        (o.max_concurrency == 0 || static_cast<int64_t>(target.num_open()) < o.max_concurrency))
      wait = std::clamp(due[next] - since(start, now), 0.0, 0.1);
    SW_ASSIGN_OR_RETURN(auto events, target.poll(wait));
    for (RequestEvent& e : events) {
      auto it = index_of.find(e.id);
      if (it == index_of.end()) {
        if (e.kind == RequestEvent::Kind::kError)
          return unavailable("the server refused a message of the benchmark: {}: {}", e.error.code,
                             e.error.message);
        continue;
      }
      RequestRecord& rec = result.records[it->second];
      const double t = since(start, e.received);
      last_event = std::max(last_event, e.received);
      if (!e.tokens.empty() && e.kind == RequestEvent::Kind::kTokens) {
        if (rec.token_times_s.empty())
          rec.ttft_s = t - rec.start_s;
        else
          rec.itl_s.push_back(t - rec.token_times_s.back());
        rec.token_times_s.push_back(t);
        rec.tokens_per_message.push_back(static_cast<int64_t>(e.tokens.size()));
        rec.output_len += static_cast<int64_t>(e.tokens.size());
        output_tokens += static_cast<int64_t>(e.tokens.size());
        if (o.keep_output_ids)
          rec.output_ids.insert(rec.output_ids.end(), e.tokens.begin(), e.tokens.end());
      }
      if (!e.terminal()) continue;
      rec.e2el_s = t - rec.start_s;
      if (e.kind == RequestEvent::Kind::kError) {
        rec.error = fmt::format("{}: {}", e.error.code, e.error.message);
        server_stopping = server_stopping || e.error.code == serve::kShuttingDown;
      } else {
        rec.server = e.summary;
        rec.success = e.summary.finish_reason == "length" || e.summary.finish_reason == "stop";
        if (!rec.success)
          rec.error = e.summary.error.empty() ? e.summary.finish_reason : e.summary.error;
      }
      index_of.erase(it);
      ++done;
    }
    report(false);
  }
  result.duration_s = since(start, last_event);
  report(true);
  return result;
}

Status EngineTarget::submit(const serve::GenerateRequest& r) {
  auto added = engine_.add(r.spec);
  if (!added.ok()) {
    RequestEvent e;
    e.kind = RequestEvent::Kind::kError;
    e.id = r.id;
    e.error = serve::ProtocolError{serve::kInvalidRequest, added.status().message(), r.id};
    e.received = Clock::now();
    pending_.push_back(std::move(e));
    return Status();
  }
  ids_[*added] = r.id;
  by_id_[r.id] = *added;
  return Status();
}

Result<std::vector<RequestEvent>> EngineTarget::poll(double max_wait_s) {
  std::vector<RequestEvent> events = std::exchange(pending_, {});
  if (!engine_.has_unfinished() && !engine_.busy()) {
    // Idle until the next arrival; a step now keeps the workers' heartbeats going.
    SW_RETURN_IF_ERROR(engine_.step(0.0).status());
    if (events.empty() && max_wait_s > 0)
      std::this_thread::sleep_for(std::chrono::duration<double>(max_wait_s));
    return events;
  }
  SW_ASSIGN_OR_RETURN(auto outputs, engine_.step(events.empty() ? max_wait_s : 0.0));
  const auto now = Clock::now();
  for (const RequestOutput& out : outputs) {
    auto it = ids_.find(out.id);
    if (it == ids_.end()) continue;
    if (!out.new_tokens.empty()) {
      RequestEvent e;
      e.kind = RequestEvent::Kind::kTokens;
      e.id = it->second;
      e.tokens = out.new_tokens;
      e.received = now;
      events.push_back(std::move(e));
    }
    if (!out.finished()) continue;
    RequestEvent e;
    e.kind = RequestEvent::Kind::kDone;
    e.id = it->second;
    e.received = now;
    if (const Request* r = engine_.request(out.id)) e.summary = serve::summarize(*r);
    events.push_back(std::move(e));
    by_id_.erase(it->second);
    engine_.release(out.id);
    ids_.erase(it);
  }
  return events;
}

Status EngineTarget::abort(const std::string& id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return not_found("request '{}' is not open", id);
  const int64_t eid = it->second;
  SW_RETURN_IF_ERROR(engine_.abort(eid));
  RequestEvent e;  // as the server answers an abort: a done message, finish_reason abort
  e.kind = RequestEvent::Kind::kDone;
  e.id = id;
  e.received = Clock::now();
  if (const Request* r = engine_.request(eid)) e.summary = serve::summarize(*r);
  pending_.push_back(std::move(e));
  engine_.release(eid);
  ids_.erase(eid);
  by_id_.erase(it);
  return Status();
}

}  // namespace sw::coordinator

// The serve wire format's views of the engine: a request's done-message summary and the
// engine's counters (kept apart from serve_protocol.cpp, which parses and encodes only and is
// built into the fuzzer without the engine).
#include <chrono>

#include "coordinator/engine.h"
#include "coordinator/serve_protocol.h"

namespace sw::coordinator::serve {

RequestSummary summarize(const Request& r) {
  auto ms = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  RequestSummary s;
  s.finish_reason = finish_reason_name(r.finish_reason);
  s.error = r.error;
  s.num_prompt_tokens = r.num_prompt();
  s.num_output_tokens = static_cast<int64_t>(r.output_ids.size());
  s.num_preemptions = r.num_preemptions;
  s.instance = r.instance;
  s.prefill_instance = r.prefill_instance;
  s.kv_bytes = r.kv_bytes;
  s.kv_transfer_ms = r.kv_transfer_ms;
  if (!r.output_ids.empty()) s.ttft_ms = ms(r.arrival, r.first_token);
  if (is_terminal(r.state)) s.e2el_ms = ms(r.arrival, r.finished);
  return s;
}

ServerStats engine_stats(const Engine& engine) {
  const Scheduler& s = engine.scheduler();
  ServerStats st;
  for (int i = 0; i < s.num_instances(); ++i) {
    st.num_running += s.num_running(i);
    st.num_waiting += s.num_waiting(i);
  }
  st.num_transferring = s.num_transferring();
  st.num_steps = engine.stats().num_steps;
  const SchedulerStats& c = s.stats();
  st.prompt_tokens = c.prompt_tokens;
  st.generated_tokens = c.generated_tokens;
  st.num_preemptions = c.num_preemptions;
  st.kv_transfers = c.kv_transfers;
  st.kv_transfer_failures = c.kv_transfer_failures;
  st.kv_bytes = c.kv_bytes;
  for (const auto& layer : engine.stats().moe_layers) {
    st.moe_assignments += layer.num_assignments;
    st.moe_dropped += layer.num_dropped;
  }
  return st;
}

}  // namespace sw::coordinator::serve

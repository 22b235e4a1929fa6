// The load generator of `shardwise bench`: a workload (coordinator/workload.h), an arrival
// schedule (vLLM's: every request at once for an infinite rate, else gamma
// inter-arrival times with shape = burstiness, 1 = Poisson), and the loop that sends each
// request when it is due (at most max_concurrency open) to a RequestTarget — a ServeClient, or
// an Engine in this process — and records what the client sees: when each token arrived.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/engine.h"
#include "coordinator/serve_client.h"
#include "coordinator/workload.h"

namespace sw::coordinator {

// Send times in seconds from the start: all 0 for an infinite rate; else cumulative gamma
// draws of mean 1 / rate and shape `burstiness` (> 0).
std::vector<double> arrival_offsets(size_t n, double request_rate, double burstiness,
                                    uint64_t seed);

struct LoadOptions {
  double request_rate = 0;  // requests per second; <= 0 or inf: all at once
  double burstiness = 1.0;
  int64_t max_concurrency = 0;  // open requests at most; 0: no limit
  uint64_t seed = 0;            // arrivals; sampling seeds are seed + index
  bool ignore_eos = false;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  bool keep_output_ids = false;  // RequestRecord::output_ids (tests)
};

// What the client saw of one request. Times in seconds; `start_s` from the run's start.
struct RequestRecord {
  size_t index = 0;
  int64_t prompt_len = 0;
  int64_t expected_output_len = 0;  // max_tokens
  int64_t output_len = 0;           // tokens received
  bool success = false;             // finished by length or stop
  std::string error;
  double start_s = 0;
  double ttft_s = 0;
  std::vector<double> itl_s;  // between consecutive token messages (vLLM's ITL: per chunk)
  double e2el_s = 0;
  std::vector<double> token_times_s;  // arrival of each token message, from the run's start
  std::vector<int64_t> tokens_per_message;
  serve::RequestSummary server;  // the done message: instance, KV transfer, preemptions
  std::vector<int32_t> output_ids;
};

struct LoadResult {
  std::vector<RequestRecord> records;  // by workload index
  double duration_s = 0;               // first send to last event
};

struct LoadProgress {
  int64_t done = 0, total = 0, output_tokens = 0;
  double elapsed_s = 0;
};

// Runs the workload against `target`; `progress` (optional) is called at most 10 times a second
// and once at the end. Fails only when the target does (e.g. the server went silent). Once the
// server answers shutting_down, the requests not yet sent fail without being sent.
Result<LoadResult> run_load(RequestTarget& target, const std::vector<WorkloadItem>& workload,
                            const LoadOptions& options,
                            const std::function<void(const LoadProgress&)>& progress = {});

// An Engine in this process as a RequestTarget (bench throughput): submit() adds, poll() steps.
class EngineTarget final : public RequestTarget {
 public:
  explicit EngineTarget(Engine& engine) : engine_(engine) {}
  Status submit(const serve::GenerateRequest& r) override;
  Result<std::vector<RequestEvent>> poll(double max_wait_s) override;
  Status abort(const std::string& id) override;
  size_t num_open() const override { return ids_.size(); }

 private:
  Engine& engine_;
  std::map<int64_t, std::string> ids_;  // engine id -> request id
  std::map<std::string, int64_t> by_id_;
  std::vector<RequestEvent> pending_;  // refusals and aborts, for the next poll()
};

}  // namespace sw::coordinator

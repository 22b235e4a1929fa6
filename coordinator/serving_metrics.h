// Serving metrics of `shardwise bench`, computed as `vllm bench serve` computes them so the two
// can be compared line by line: over successful requests, TTFT (send to first token), TPOT
// ((e2el - ttft) / (output tokens - 1), for requests of more than one token), ITL (between
// consecutive token messages, every request pooled), E2EL; means, medians, population standard
// deviations and linearly interpolated percentiles (numpy's default), in milliseconds; peak
// output token throughput and peak concurrent requests over 1-second buckets from the first
// send; goodput = requests within every given SLO per second. Plus Shardwise's own: layout, KV
// transfer per request, preemptions, MoE drop rate.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/loadgen.h"
#include "coordinator/serve_protocol.h"

namespace sw::coordinator {

struct MetricsOptions {
  std::vector<std::string> selected = {"ttft", "tpot", "itl", "e2el"};  // printed sections
  std::vector<double> percentiles = {99};
  std::map<std::string, double> goodput_slo_ms;  // ttft | tpot | e2el -> limit (ms)
};

// "ttft,tpot" (--percentile-metrics), "50,90,99" (--metric-percentiles), and
// ["ttft:500", "e2el:3000"] (--goodput): errors name the flag and the bad item.
Result<std::vector<std::string>> parse_metric_names(const std::string& text);
Result<std::vector<double>> parse_percentiles(const std::string& text);
Result<std::map<std::string, double>> parse_goodput(const std::vector<std::string>& items);

struct MetricSummary {
  double mean = 0, median = 0, std = 0;                // ms
  std::vector<std::pair<double, double>> percentiles;  // (p, value ms)
  std::vector<double> values_ms;                       // every sample, for JSON and plots
};

struct BenchmarkMetrics {
  int64_t completed = 0, failed = 0;
  int64_t total_input = 0, total_output = 0;  // of successful requests
  double duration_s = 0;
  double request_throughput = 0, output_throughput = 0, total_token_throughput = 0;
  double request_goodput = -1;  // -1: no SLO given
  double max_output_tokens_per_s = 0, max_concurrent_requests = 0;
  std::map<std::string, MetricSummary> metrics;  // ttft, tpot, itl, e2el
};

// numpy.percentile(values, p) with linear interpolation; 0 for no values.
double percentile(std::vector<double> values, double p);

BenchmarkMetrics compute_metrics(const std::vector<RequestRecord>& records, double duration_s,
                                 const MetricsOptions& options);

// What the run was, for the header lines and the JSON.
struct BenchmarkSetup {
  std::string backend = "shardwise";
  std::string mode;  // throughput | serve
  std::string endpoint;
  serve::ServerInfo info;
  int64_t num_prompts = 0;
  double request_rate = 0;  // <= 0 or inf: all at once
  double burstiness = 1.0;
  int64_t max_concurrency = 0;
  std::string dataset;
  uint64_t seed = 0;
};

// Engine counters over the run (stats after minus before) and what the done messages said.
struct ShardwiseMetrics {
  serve::ServerStats stats;  // differences over the run
  int64_t kv_requests = 0;   // requests whose KV moved prefill -> decode
  double mean_kv_bytes = 0, mean_kv_transfer_ms = 0, p99_kv_transfer_ms = 0;
  double moe_drop_rate = -1;  // dropped / routed; -1: not collected or dense model
};
ShardwiseMetrics shardwise_metrics(const std::vector<RequestRecord>& records,
                                   const serve::ServerStats& before,
                                   const serve::ServerStats& after);

// The "Serving Benchmark Result" block, laid out as vllm bench serve prints it, with
// Shardwise's section before the closing line.
std::string format_result_table(const BenchmarkSetup& setup, const BenchmarkMetrics& m,
                                const ShardwiseMetrics& sw, const MetricsOptions& options);
// vLLM's result JSON keys (duration, completed, ..., mean_ttft_ms, p99_ttft_ms, ...) plus
// "shardwise" and "requests" (one record per request).
nlohmann::json result_json(const BenchmarkSetup& setup, const BenchmarkMetrics& m,
                           const ShardwiseMetrics& sw, const MetricsOptions& options,
                           const std::vector<RequestRecord>& records);
// The summary as CSV: a header line and one line of values (the JSON's scalar keys).
std::string result_csv(const nlohmann::json& result);

}  // namespace sw::coordinator

// Serving metrics: vLLM's arithmetic and layout (see serving_metrics.h).
#include "coordinator/serving_metrics.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <numeric>

#include "common/text.h"

namespace sw::coordinator {

namespace {

using nlohmann::json;

struct MetricName {
  const char* key;     // ttft
  const char* upper;   // TTFT
  const char* header;  // Time to First Token
};
constexpr MetricName kMetrics[] = {
    {"ttft", "TTFT", "Time to First Token"},
    {"tpot", "TPOT", "Time per Output Token (excl. 1st token)"},
    {"itl", "ITL", "Inter-token Latency"},
    {"e2el", "E2EL", "End-to-end Latency"},
};

const MetricName* find_metric(const std::string& key) {
  for (const auto& m : kMetrics)
    if (key == m.key) return &m;
  return nullptr;
}

Result<double> parse_number(const std::string& s, const char* flag, const std::string& item) {
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  return invalid_argument("{}: '{}' is not a number", flag, item);
}

// vLLM writes P99 and P99.9: an integral percentile without its decimals.
std::string percentile_word(double p) {
  return p == std::floor(p) ? fmt::format("{}", static_cast<int64_t>(p)) : fmt::format("{}", p);
}

MetricSummary summarize_ms(std::vector<double> seconds, const std::vector<double>& percentiles) {
  MetricSummary s;
  s.values_ms.reserve(seconds.size());
  for (double v : seconds) s.values_ms.push_back(v * 1000.0);
  const auto& v = s.values_ms;
  if (!v.empty()) {
    s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
    double sq = 0;
    for (double x : v) sq += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(sq / static_cast<double>(v.size()));
  }
  s.median = percentile(v, 50);
  for (double p : percentiles) s.percentiles.emplace_back(p, percentile(v, p));
  return s;
}

std::string line(const std::string& label, const std::string& value) {
  return fmt::format("{:<40} {:<10}\n", label, value);
}
std::string fixed2(double v) { return fmt::format("{:.2f}", v); }
// The title centred in 50 columns of `fill` (Python's '{:=^50}': the odd column goes right).
std::string rule(const std::string& title, char fill) {
  const size_t pad = title.size() < 50 ? 50 - title.size() : 0;
  return std::string(pad / 2, fill) + title + std::string(pad - pad / 2, fill) + "\n";
}

}  // namespace

Result<std::vector<std::string>> parse_metric_names(const std::string& text) {
  std::vector<std::string> out;
  for (const std::string& item : split_fields(text, ',')) {
    if (!find_metric(item))
      return invalid_argument("--percentile-metrics: '{}' is not a metric (ttft, tpot, itl, e2el)",
                              item);
    if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
  }
  return out;
}

Result<std::vector<double>> parse_percentiles(const std::string& text) {
  std::vector<double> out;
  for (const std::string& item : split_fields(text, ',')) {
    SW_ASSIGN_OR_RETURN(double p, parse_number(item, "--metric-percentiles", item));
    if (!(p > 0 && p < 100))
      return invalid_argument("--metric-percentiles: {} is not in (0, 100)", item);
    out.push_back(p);
  }
  return out;
}

Result<std::map<std::string, double>> parse_goodput(const std::vector<std::string>& items) {
  std::map<std::string, double> out;
  for (const std::string& item : items) {
    const size_t colon = item.find(':');
    if (colon == std::string::npos)
      return invalid_argument("--goodput: '{}' is not METRIC:MS (e.g. ttft:500)", item);
    const std::string key = item.substr(0, colon);
    if (key != "ttft" && key != "tpot" && key != "e2el")
      return invalid_argument("--goodput: '{}' is not ttft, tpot or e2el (in '{}')", key, item);
    SW_ASSIGN_OR_RETURN(double ms, parse_number(item.substr(colon + 1), "--goodput", item));
    if (ms < 0) return invalid_argument("--goodput: '{}': a limit must be >= 0 ms", item);
    out[key] = ms;
  }
  return out;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double rank = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (rank - static_cast<double>(lo));
}

BenchmarkMetrics compute_metrics(const std::vector<RequestRecord>& records, double duration_s,
                                 const MetricsOptions& options) {
  BenchmarkMetrics m;
  m.duration_s = duration_s;
  std::vector<double> ttfts, tpots, itls, e2els;
  int64_t good = 0;
  double first_start = INFINITY, last_end = 0;
  for (const RequestRecord& r : records) {
    if (!r.success) {
      ++m.failed;
      continue;
    }
    ++m.completed;
    m.total_input += r.prompt_len;
    m.total_output += r.output_len;
    const double tpot =
        r.output_len > 1 ? (r.e2el_s - r.ttft_s) / static_cast<double>(r.output_len - 1) : 0.0;
    if (r.output_len > 1) tpots.push_back(tpot);
    ttfts.push_back(r.ttft_s);
    e2els.push_back(r.e2el_s);
    itls.insert(itls.end(), r.itl_s.begin(), r.itl_s.end());
    bool ok = true;
    for (const auto& [key, ms] : options.goodput_slo_ms) {
      const double v = key == "ttft" ? r.ttft_s : key == "tpot" ? tpot : r.e2el_s;
      ok = ok && v * 1000.0 <= ms;
    }
    good += ok ? 1 : 0;
    first_start = std::min(first_start, r.start_s);
    last_end = std::max(last_end, r.start_s + r.e2el_s);
  }
  if (duration_s > 0) {
    m.request_throughput = m.completed / duration_s;
    m.output_throughput = m.total_output / duration_s;
    m.total_token_throughput = (m.total_input + m.total_output) / duration_s;
    if (!options.goodput_slo_ms.empty()) m.request_goodput = good / duration_s;
  } else if (!options.goodput_slo_ms.empty()) {
    m.request_goodput = 0;
  }
  // Peaks over 1-second buckets counted from the first send.
  if (m.completed > 0) {
    const size_t buckets = static_cast<size_t>(std::ceil(last_end - first_start)) + 1;
    std::vector<double> tokens(buckets, 0.0), concurrent(buckets, 0.0);
    auto bucket = [&](double t) {
      return std::min(buckets - 1, static_cast<size_t>(std::max(0.0, t - first_start)));
    };
    for (const RequestRecord& r : records) {
      if (!r.success) continue;
      for (size_t i = 0; i < r.token_times_s.size(); ++i)
        tokens[bucket(r.token_times_s[i])] +=
            i < r.tokens_per_message.size() ? static_cast<double>(r.tokens_per_message[i]) : 1.0;
      for (size_t s = bucket(r.start_s); s <= bucket(r.start_s + r.e2el_s); ++s) concurrent[s] += 1;
    }
    m.max_output_tokens_per_s = *std::max_element(tokens.begin(), tokens.end());
    m.max_concurrent_requests = *std::max_element(concurrent.begin(), concurrent.end());
  }
  m.metrics["ttft"] = summarize_ms(std::move(ttfts), options.percentiles);
  m.metrics["tpot"] = summarize_ms(std::move(tpots), options.percentiles);
  m.metrics["itl"] = summarize_ms(std::move(itls), options.percentiles);
  m.metrics["e2el"] = summarize_ms(std::move(e2els), options.percentiles);
  return m;
}

ShardwiseMetrics shardwise_metrics(const std::vector<RequestRecord>& records,
                                   const serve::ServerStats& before,
                                   const serve::ServerStats& after) {
  ShardwiseMetrics s;
  s.stats = serve::stats_difference(after, before);
  const serve::ServerStats& d = s.stats;
  std::vector<double> times;
  double bytes = 0;
  for (const RequestRecord& r : records) {
    if (r.server.kv_bytes <= 0) continue;
    ++s.kv_requests;
    bytes += static_cast<double>(r.server.kv_bytes);
    times.push_back(r.server.kv_transfer_ms);
  }
  if (s.kv_requests > 0) {
    s.mean_kv_bytes = bytes / static_cast<double>(s.kv_requests);
    s.mean_kv_transfer_ms =
        std::accumulate(times.begin(), times.end(), 0.0) / static_cast<double>(times.size());
    s.p99_kv_transfer_ms = percentile(times, 99);
  }
  if (d.moe_assignments > 0)
    s.moe_drop_rate = static_cast<double>(d.moe_dropped) / static_cast<double>(d.moe_assignments);
  return s;
}

std::string format_result_table(const BenchmarkSetup& setup, const BenchmarkMetrics& m,
                                const ShardwiseMetrics& sw, const MetricsOptions& options) {
  std::string out = rule(" Serving Benchmark Result ", '=');
  out += line("Successful requests:", std::to_string(m.completed));
  out += line("Failed requests:", std::to_string(m.failed));
  if (setup.max_concurrency > 0)
    out += line("Maximum request concurrency:", std::to_string(setup.max_concurrency));
  if (setup.request_rate > 0 && std::isfinite(setup.request_rate))
    out += line("Request rate configured (RPS):", fixed2(setup.request_rate));
  out += line("Benchmark duration (s):", fixed2(m.duration_s));
  out += line("Total input tokens:", std::to_string(m.total_input));
  out += line("Total generated tokens:", std::to_string(m.total_output));
  out += line("Request throughput (req/s):", fixed2(m.request_throughput));
  if (m.request_goodput >= 0) out += line("Request goodput (req/s):", fixed2(m.request_goodput));
  out += line("Output token throughput (tok/s):", fixed2(m.output_throughput));
  out += line("Peak output token throughput (tok/s):", fixed2(m.max_output_tokens_per_s));
  out += line("Peak concurrent requests:", fixed2(m.max_concurrent_requests));
  out += line("Total Token throughput (tok/s):", fixed2(m.total_token_throughput));
  for (const std::string& key : options.selected) {
    const MetricName* name = find_metric(key);
    const MetricSummary& s = m.metrics.at(key);
    out += rule(name->header, '-');
    out += line(fmt::format("Mean {} (ms):", name->upper), fixed2(s.mean));
    out += line(fmt::format("Median {} (ms):", name->upper), fixed2(s.median));
    for (const auto& [p, v] : s.percentiles)
      out += line(fmt::format("P{} {} (ms):", percentile_word(p), name->upper), fixed2(v));
  }
  out += rule("Shardwise", '-');
  out += line("Layout:", setup.info.layout());
  out += line("Ranks:", std::to_string(setup.info.world_size));
  out += line("Engine steps:", std::to_string(sw.stats.num_steps));
  out += line("Preemptions:", std::to_string(sw.stats.num_preemptions));
  if (setup.info.disaggregated()) {
    out += line("KV transfers (failed):",
                fmt::format("{} ({})", sw.stats.kv_transfers, sw.stats.kv_transfer_failures));
    out += line("Mean KV transfer per request (KiB):", fixed2(sw.mean_kv_bytes / 1024.0));
    out += line("Mean KV transfer time (ms):", fixed2(sw.mean_kv_transfer_ms));
    out += line("P99 KV transfer time (ms):", fixed2(sw.p99_kv_transfer_ms));
  }
  out += line("MoE tokens dropped (%):",
              sw.moe_drop_rate < 0 ? "n/a" : fixed2(100.0 * sw.moe_drop_rate));
  out += std::string(50, '=') + "\n";
  return out;
}

json result_json(const BenchmarkSetup& setup, const BenchmarkMetrics& m, const ShardwiseMetrics& sw,
                 const MetricsOptions& options, const std::vector<RequestRecord>& records) {
  json j;
  const std::time_t now = std::time(nullptr);
  j["date"] = fmt::format("{:%Y%m%d-%H%M%S}", fmt::localtime(now));
  j["backend"] = setup.backend;
  j["mode"] = setup.mode;
  if (!setup.endpoint.empty()) j["endpoint"] = setup.endpoint;
  j["model_id"] = setup.info.model;
  j["dataset_name"] = setup.dataset;
  j["seed"] = setup.seed;
  j["num_prompts"] = setup.num_prompts;
  if (setup.request_rate > 0 && std::isfinite(setup.request_rate))
    j["request_rate"] = setup.request_rate;
  else
    j["request_rate"] = "inf";
  j["burstiness"] = setup.burstiness;
  j["max_concurrency"] = setup.max_concurrency > 0 ? json(setup.max_concurrency) : json(nullptr);
  j["duration"] = m.duration_s;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["total_input_tokens"] = m.total_input;
  j["total_output_tokens"] = m.total_output;
  j["request_throughput"] = m.request_throughput;
  j["request_goodput"] = m.request_goodput >= 0 ? json(m.request_goodput) : json(nullptr);
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  j["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  j["max_concurrent_requests"] = m.max_concurrent_requests;
  json input_lens = json::array(), output_lens = json::array(), ttfts = json::array(),
       itls = json::array(), errors = json::array(), requests = json::array();
  for (const RequestRecord& r : records) {
    input_lens.push_back(r.prompt_len);
    output_lens.push_back(r.success ? r.output_len : 0);
    ttfts.push_back(r.ttft_s);
    itls.push_back(r.itl_s);
    errors.push_back(r.error);
    json rec = {{"index", r.index},
                {"success", r.success},
                {"prompt_len", r.prompt_len},
                {"expected_output_len", r.expected_output_len},
                {"output_len", r.output_len},
                {"start_s", r.start_s},
                {"ttft_s", r.ttft_s},
                {"itl_s", r.itl_s},
                {"e2el_s", r.e2el_s},
                {"finish_reason", r.server.finish_reason},
                {"instance", r.server.instance},
                {"prefill_instance", r.server.prefill_instance},
                {"num_preemptions", r.server.num_preemptions},
                {"kv_bytes", r.server.kv_bytes},
                {"kv_transfer_ms", r.server.kv_transfer_ms}};
    if (!r.error.empty()) rec["error"] = r.error;
    requests.push_back(std::move(rec));
  }
  j["input_lens"] = std::move(input_lens);
  j["output_lens"] = std::move(output_lens);
  j["ttfts"] = std::move(ttfts);
  j["itls"] = std::move(itls);
  j["errors"] = std::move(errors);
  for (const std::string& key : options.selected) {
    const MetricSummary& s = m.metrics.at(key);
    j[fmt::format("mean_{}_ms", key)] = s.mean;
    j[fmt::format("median_{}_ms", key)] = s.median;
    j[fmt::format("std_{}_ms", key)] = s.std;
    for (const auto& [p, v] : s.percentiles)
      j[fmt::format("p{}_{}_ms", percentile_word(p), key)] = v;
  }
  if (!options.goodput_slo_ms.empty()) j["goodput_slo_ms"] = options.goodput_slo_ms;
  j["shardwise"] = {
      {"info", serve::to_json(setup.info)},
      {"stats", serve::to_json(sw.stats)},
      {"kv_requests", sw.kv_requests},
      {"mean_kv_bytes", sw.mean_kv_bytes},
      {"mean_kv_transfer_ms", sw.mean_kv_transfer_ms},
      {"p99_kv_transfer_ms", sw.p99_kv_transfer_ms},
      {"moe_drop_rate", sw.moe_drop_rate >= 0 ? json(sw.moe_drop_rate) : json(nullptr)}};
  j["requests"] = std::move(requests);
  return j;
}

std::string result_csv(const json& result) {
  std::string header, values;
  for (const auto& item : result.items()) {
    const json& v = item.value();
    if (v.is_structured()) continue;
    if (!header.empty()) {
      header += ",";
      values += ",";
    }
    header += item.key();
    if (v.is_string()) {
      std::string s = v.get<std::string>();
      if (s.find_first_of(",\"\n") != std::string::npos) {
        std::string q = "\"";
        for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
        s = q + "\"";
      }
      values += s;
    } else if (!v.is_null()) {
      values += v.dump();
    }
  }
  return header + "\n" + values + "\n";
}

}  // namespace sw::coordinator

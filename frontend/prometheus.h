// A small Prometheus registry: counters, gauges and histograms with labels, rendered in the
// text exposition format (version 0.0.4) that /metrics serves. Add a metric: register it once
// (families are created on first use and keep registration order) and update it from any
// thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace sw::frontend {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class PrometheusCounter {
 public:
  void inc(double v = 1) { value_.fetch_add(v, std::memory_order_relaxed); }
  // For counters mirrored from a source that already counts (the engine's stats).
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class PrometheusGauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void inc(double v = 1) { value_.fetch_add(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class PrometheusHistogram {
 public:
  explicit PrometheusHistogram(std::vector<double> upper_bounds);
  void observe(double v);
  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class PrometheusRegistry {
 public:
  // The metric with this name and label set, made on first use. Names must match
  // [a-zA-Z_:][a-zA-Z0-9_:]*; a name registered with another type is a programming error.
  // Returned pointers live as long as the registry.
  PrometheusCounter* counter(const std::string& name, const std::string& help,
                             const MetricLabels& labels = {});
  PrometheusGauge* gauge(const std::string& name, const std::string& help,
                         const MetricLabels& labels = {});
  PrometheusHistogram* histogram(const std::string& name, const std::string& help,
                                 const std::vector<double>& upper_bounds,
                                 const MetricLabels& labels = {});
  // Every family: # HELP, # TYPE, then its samples (histograms: _bucket{le=...}, _sum, _count).
  std::string render() const;

  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    std::string name, help;
    Type type;
    std::map<MetricLabels, std::unique_ptr<PrometheusCounter>> counters;
    std::map<MetricLabels, std::unique_ptr<PrometheusGauge>> gauges;
    std::map<MetricLabels, std::unique_ptr<PrometheusHistogram>> histograms;
  };
  Family& family(const std::string& name, const std::string& help, Type type);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;  // registration order
  std::map<std::string, Family*> by_name_;
};

// Buckets vLLM uses for the same metrics.
const std::vector<double>& ttft_buckets();             // time_to_first_token_seconds
const std::vector<double>& inter_token_buckets();      // inter_token_latency_seconds
const std::vector<double>& request_latency_buckets();  // e2e and queue time

// A sample value as the text format writes it: "+Inf", "-Inf", "NaN", or the shortest decimal.
std::string prometheus_number(double v);
// A label value with \, " and newline escaped.
std::string prometheus_escape(const std::string& v);

}  // namespace sw::frontend

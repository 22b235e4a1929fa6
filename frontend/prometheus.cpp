// The Prometheus registry and its text rendering (see prometheus.h). Add a metric type: a
// Family member, its accessor and its rendering branch in render().
#include "frontend/prometheus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "common/status.h"

namespace sw::frontend {
namespace {

bool valid_metric_name(const std::string& n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string escape_help(const std::string& h) {
  std::string out;
  for (char c : h) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string label_text(const MetricLabels& labels, const std::string& extra_key = "",
                       const std::string& extra_value = "") {
  if (labels.empty() && extra_key.empty()) return "";
  std::string s = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) s += ",";
    first = false;
    s += k + "=\"" + prometheus_escape(v) + "\"";
  }
  if (!extra_key.empty()) {
    if (!first) s += ",";
    s += extra_key + "=\"" + prometheus_escape(extra_value) + "\"";
  }
  return s + "}";
}

}  // namespace

std::string prometheus_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::abs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

std::string prometheus_escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

PrometheusHistogram::PrometheusHistogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void PrometheusHistogram::observe(double v) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[i];
  sum_ += v;
  ++count_;
}

PrometheusHistogram::Snapshot PrometheusHistogram::snapshot() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t acc = 0;
  for (uint64_t c : counts_) s.cumulative.push_back(acc += c);
  s.sum = sum_;
  s.count = count_;
  return s;
}

PrometheusRegistry::Family& PrometheusRegistry::family(const std::string& name,
                                                       const std::string& help, Type type) {
  SW_CHECK_MSG(valid_metric_name(name), "bad metric name '{}'", name);
  auto it = by_name_.find(name);
  if (it != by_name_.end()) {
    SW_CHECK_MSG(it->second->type == type, "metric '{}' registered with two types", name);
    return *it->second;
  }
  auto f = std::make_unique<Family>();
  f->name = name;
  f->help = help;
  f->type = type;
  Family* raw = f.get();
  families_.push_back(std::move(f));
  by_name_[name] = raw;
  return *raw;
}

PrometheusCounter* PrometheusRegistry::counter(const std::string& name, const std::string& help,
                                               const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = family(name, help, Type::kCounter).counters[labels];
  if (!slot) slot = std::make_unique<PrometheusCounter>();
  return slot.get();
}

PrometheusGauge* PrometheusRegistry::gauge(const std::string& name, const std::string& help,
                                           const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = family(name, help, Type::kGauge).gauges[labels];
  if (!slot) slot = std::make_unique<PrometheusGauge>();
  return slot.get();
}

PrometheusHistogram* PrometheusRegistry::histogram(const std::string& name, const std::string& help,
                                                   const std::vector<double>& upper_bounds,
                                                   const MetricLabels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = family(name, help, Type::kHistogram).histograms[labels];
  if (!slot) slot = std::make_unique<PrometheusHistogram>(upper_bounds);
  return slot.get();
}

std::string PrometheusRegistry::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& f : families_) {
    const char* type = f->type == Type::kCounter ? "counter"
                       : f->type == Type::kGauge ? "gauge"
                                                 : "histogram";
    out +=
        fmt::format("# HELP {} {}\n# TYPE {} {}\n", f->name, escape_help(f->help), f->name, type);
    for (const auto& [labels, c] : f->counters)
      out += fmt::format("{}{} {}\n", f->name, label_text(labels), prometheus_number(c->value()));
    for (const auto& [labels, g] : f->gauges)
      out += fmt::format("{}{} {}\n", f->name, label_text(labels), prometheus_number(g->value()));
    for (const auto& [labels, h] : f->histograms) {
      const auto s = h->snapshot();
      for (size_t i = 0; i <= s.upper_bounds.size(); ++i) {
        const std::string le =
            i < s.upper_bounds.size() ? prometheus_number(s.upper_bounds[i]) : "+Inf";
        out +=
            fmt::format("{}_bucket{} {}\n", f->name, label_text(labels, "le", le), s.cumulative[i]);
      }
      out += fmt::format("{}_sum{} {}\n", f->name, label_text(labels), prometheus_number(s.sum));
      out += fmt::format("{}_count{} {}\n", f->name, label_text(labels), s.count);
    }
  }
  return out;
}

const std::vector<double>& ttft_buckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                        0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                        20.0,  40.0,  80.0, 160., 640., 2560.};
  return b;
}

const std::vector<double>& inter_token_buckets() {
  static const std::vector<double> b = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                        0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
  return b;
}

const std::vector<double>& request_latency_buckets() {
  static const std::vector<double> b = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,
                                        5.0,  10.0, 15.0, 20.0, 30.0, 40.0,  50.0,
                                        60.0, 120., 240., 480., 960., 1920., 7680.};
  return b;
}

}  // namespace sw::frontend

// The benchmark's arithmetic against a hand-computed example (known timestamps in, every
// metric out, worked out in the comments), numpy's percentile definition, the flag parsers'
// errors, and the vllm bench serve layout of the table, JSON and CSV.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <sstream>

#include "coordinator/serving_metrics.h"

namespace sw::coordinator {
namespace {

// A successful request sent at `start` whose token messages arrive at `token_times` (seconds
// from the run's start, one token each) and which ends with the last one.
RequestRecord record(size_t index, int64_t prompt_len, double start,
                     std::vector<double> token_times) {
  RequestRecord r;
  r.index = index;
  r.prompt_len = prompt_len;
  r.success = true;
  r.start_s = start;
  r.output_len = static_cast<int64_t>(token_times.size());
  r.expected_output_len = r.output_len;
  r.ttft_s = token_times.front() - start;
  for (size_t i = 1; i < token_times.size(); ++i)
    r.itl_s.push_back(token_times[i] - token_times[i - 1]);
  r.e2el_s = token_times.back() - start;
  r.token_times_s = token_times;
  r.tokens_per_message.assign(token_times.size(), 1);
  return r;
}

TEST(Percentile, IsNumpysLinearInterpolation) {
  // numpy.percentile([1, 2, 3, 4], p): rank = p/100 * 3.
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 99), 3.97);
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 25), 1.75);
  EXPECT_DOUBLE_EQ(percentile({7}, 90), 7);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0);
}

// Three requests (times in seconds from the first send):
//   A: sent 0.0, tokens at 0.5 1.0 1.5      -> ttft 0.5, itl 0.5 0.5, e2el 1.5, tpot 0.5
//   B: sent 0.2, tokens at 0.7 0.9 1.1 1.3  -> ttft 0.5, itl 0.2 0.2 0.2, e2el 1.1, tpot 0.2
//   C: sent 1.2, token at 2.4 (one token)   -> ttft 1.2, e2el 1.2, no tpot
//   D: failed.
// duration 2.5 s; completed 3, failed 1; input 10 + 20 + 30; output 3 + 4 + 1 = 8.
TEST(ServingMetrics, MatchTheHandComputedExample) {
  std::vector<RequestRecord> rs = {record(0, 10, 0.0, {0.5, 1.0, 1.5}),
                                   record(1, 20, 0.2, {0.7, 0.9, 1.1, 1.3}),
                                   record(2, 30, 1.2, {2.4})};
  RequestRecord failed;
  failed.index = 3;
  failed.prompt_len = 99;
  failed.error = "invalid_request: too long";
  rs.push_back(failed);
  MetricsOptions o;
  o.percentiles = {50, 90, 99};
  o.goodput_slo_ms = {{"ttft", 600}, {"tpot", 300}};
  const BenchmarkMetrics m = compute_metrics(rs, 2.5, o);
  EXPECT_EQ(m.completed, 3);
  EXPECT_EQ(m.failed, 1);
  EXPECT_EQ(m.total_input, 60);  // the failed request's prompt does not count
  EXPECT_EQ(m.total_output, 8);
  EXPECT_DOUBLE_EQ(m.request_throughput, 3 / 2.5);
  EXPECT_DOUBLE_EQ(m.output_throughput, 8 / 2.5);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 68 / 2.5);
  // Good: B only (A's tpot 500 ms > 300; C's ttft 1200 ms > 600).
  EXPECT_DOUBLE_EQ(m.request_goodput, 1 / 2.5);
  const auto& ttft = m.metrics.at("ttft");  // 500 500 1200
  EXPECT_NEAR(ttft.mean, 733.333333, 1e-4);
  EXPECT_NEAR(ttft.median, 500, 1e-9);
  EXPECT_NEAR(ttft.std, std::sqrt((2 * std::pow(233.333333, 2) + std::pow(466.666667, 2)) / 3),
              1e-3);
  EXPECT_NEAR(ttft.percentiles[1].second, 1060, 1e-6);  // rank 1.8: 500 + 0.8 * 700
  const auto& tpot = m.metrics.at("tpot");              // 500, 200
  EXPECT_NEAR(tpot.mean, 350, 1e-9);
  EXPECT_EQ(tpot.values_ms.size(), 2u);
  const auto& itl = m.metrics.at("itl");  // 500 500 200 200 200
  EXPECT_NEAR(itl.mean, 320, 1e-9);
  EXPECT_NEAR(itl.median, 200, 1e-9);
  EXPECT_NEAR(itl.percentiles[2].second, 500, 1e-9);
  const auto& e2el = m.metrics.at("e2el");  // 1500 1100 1200
  EXPECT_NEAR(e2el.mean, 1266.666667, 1e-4);
  EXPECT_NEAR(e2el.median, 1200, 1e-9);
  // Buckets from 0.0: second 0 holds 0.5 0.7 0.9 (3 tokens); second 1 holds 1.0 1.5 1.1 1.3
  // (4); second 2 holds 2.4 (1). Requests active: s0 A B; s1 A B C; s2 C.
  EXPECT_DOUBLE_EQ(m.max_output_tokens_per_s, 4);
  EXPECT_DOUBLE_EQ(m.max_concurrent_requests, 3);
}

TEST(ServingMetrics, NoSuccessfulRequestGivesZerosNotNaNs) {
  RequestRecord failed;
  failed.error = "x";
  const BenchmarkMetrics m = compute_metrics({failed}, 1.0, MetricsOptions{});
  EXPECT_EQ(m.completed, 0);
  EXPECT_EQ(m.failed, 1);
  for (const auto& [k, s] : m.metrics) {
    EXPECT_EQ(s.mean, 0) << k;
    EXPECT_EQ(s.median, 0) << k;
  }
  EXPECT_EQ(m.request_goodput, -1);  // no SLO given
  EXPECT_EQ(m.max_output_tokens_per_s, 0);
}

TEST(ServingMetrics, FlagParsersNameWhatIsWrong) {
  EXPECT_EQ(*parse_metric_names("ttft, e2el,ttft"), (std::vector<std::string>{"ttft", "e2el"}));
  EXPECT_NE(parse_metric_names("ttft,latency").status().message().find("'latency'"),
            std::string::npos);
  EXPECT_EQ(*parse_percentiles("50,99.9"), (std::vector<double>{50, 99.9}));
  EXPECT_FALSE(parse_percentiles("0").ok());
  EXPECT_FALSE(parse_percentiles("100").ok());
  EXPECT_NE(parse_percentiles("9x").status().message().find("9x"), std::string::npos);
  auto g = parse_goodput({"ttft:500", "e2el:2000.5"});
  ASSERT_TRUE(g.ok());
  EXPECT_DOUBLE_EQ(g->at("e2el"), 2000.5);
  EXPECT_FALSE(parse_goodput({"itl:5"}).ok());  // vLLM's goodput knows ttft, tpot, e2el
  EXPECT_FALSE(parse_goodput({"ttft"}).ok());
  EXPECT_FALSE(parse_goodput({"ttft:-1"}).ok());
}

TEST(ServingMetrics, TableReadsLikeVllmBenchServe) {
  std::vector<RequestRecord> rs = {record(0, 10, 0.0, {0.5, 1.0, 1.5})};
  rs[0].server.kv_bytes = 2048;
  rs[0].server.kv_transfer_ms = 4;
  MetricsOptions o;
  o.selected = {"ttft", "itl"};
  o.percentiles = {50, 99.9};
  BenchmarkSetup setup;
  setup.info.pools = {parallel::PoolSpec{parallel::PoolKind::kPrefill, 1, 2, 1, 1},
                      parallel::PoolSpec{parallel::PoolKind::kDecode, 2, 1, 1, 2}};
  setup.info.world_size = 7;
  setup.max_concurrency = 8;
  setup.request_rate = 4;
  serve::ServerStats before, after;
  after.num_preemptions = 5;
  after.kv_transfers = 1;
  after.moe_assignments = 200;
  after.moe_dropped = 3;
  const auto sw = shardwise_metrics(rs, before, after);
  EXPECT_DOUBLE_EQ(sw.moe_drop_rate, 0.015);
  const std::string t = format_result_table(setup, compute_metrics(rs, 2.0, o), sw, o);
  std::vector<std::string> lines;
  std::stringstream ss(t);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  EXPECT_EQ(lines.front(), "============ Serving Benchmark Result ============");
  EXPECT_EQ(lines.back(), std::string(50, '='));
  auto has = [&](const std::string& want) {
    return std::find(lines.begin(), lines.end(), want) != lines.end();
  };
  // Label padded to 40 columns, a space, the value padded to 10.
  EXPECT_TRUE(has("Successful requests:                     1         "));
  EXPECT_TRUE(has("Maximum request concurrency:             8         "));
  EXPECT_TRUE(has("Request rate configured (RPS):           4.00      "));
  EXPECT_TRUE(has("Benchmark duration (s):                  2.00      "));
  EXPECT_TRUE(has("Output token throughput (tok/s):         1.50      "));
  EXPECT_TRUE(has("---------------Time to First Token----------------"));
  EXPECT_TRUE(has("Median TTFT (ms):                        500.00    "));
  EXPECT_TRUE(has("P50 TTFT (ms):                           500.00    "));
  EXPECT_TRUE(has("P99.9 ITL (ms):                          500.00    "));
  EXPECT_TRUE(has("---------------Inter-token Latency----------------"));
  EXPECT_FALSE(has("-----Time per Output Token (excl. 1st token)------"));  // not selected
  EXPECT_TRUE(has("Preemptions:                             5         "));
  EXPECT_TRUE(has("KV transfers (failed):                   1 (0)     "));
  EXPECT_TRUE(has("Mean KV transfer per request (KiB):      2.00      "));
  EXPECT_TRUE(has("MoE tokens dropped (%):                  1.50      "));
  EXPECT_TRUE(has("Ranks:                                   7         "));

  const auto j = result_json(setup, compute_metrics(rs, 2.0, o), sw, o, rs);
  EXPECT_EQ(j["completed"], 1);
  EXPECT_EQ(j["max_concurrency"], 8);
  EXPECT_DOUBLE_EQ(j["p99.9_itl_ms"].get<double>(), 500);
  EXPECT_FALSE(j.contains("mean_tpot_ms"));
  EXPECT_EQ(j["requests"][0]["itl_s"].size(), 2u);
  EXPECT_EQ(j["shardwise"]["stats"]["num_preemptions"], 5);
  const std::string csv = result_csv(j);
  const auto nl = csv.find('\n');
  const std::string header = csv.substr(0, nl), values = csv.substr(nl + 1);
  EXPECT_EQ(std::count(header.begin(), header.end(), ','),
            std::count(values.begin(), values.end(), ','));
  EXPECT_NE(header.find("mean_ttft_ms"), std::string::npos);
  std::set<std::string> columns;
  std::stringstream hs(header);
  for (std::string c; std::getline(hs, c, ',');) columns.insert(c);
  EXPECT_TRUE(columns.count("max_concurrent_requests"));
  EXPECT_FALSE(columns.count("requests"));  // lists stay in the JSON
  EXPECT_FALSE(columns.count("itls"));
}

}  // namespace
}  // namespace sw::coordinator

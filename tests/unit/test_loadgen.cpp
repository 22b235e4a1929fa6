// The benchmark's load generator: vLLM's random dataset (lengths in range, tokens in the
// vocabulary, the shared prefix, the same workload for the same seed), JSONL traces and their
// errors, gamma arrivals (mean and spread against the distribution's), and the load loop over
// an engine of simulated instances: exact output lengths on a fixed seed, tokens equal to the
// reference chain, the concurrency limit held, arrivals respected, failures counted.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "coordinator/loadgen.h"
#include "sim_engine_util.h"

namespace sw::coordinator {
namespace {

TEST(Workload, RandomLengthsTokensAndPrefixFollowTheFlags) {
  WorkloadOptions o;
  o.num_prompts = 400;
  o.random_input_len = 100;
  o.random_output_len = 20;
  o.random_range_ratio = 0.25;
  o.random_prefix_len = 7;
  o.seed = 3;
  auto w = make_workload(o, 50);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  ASSERT_EQ(w->size(), 400u);
  std::set<int64_t> in_lens, out_lens;
  for (const auto& item : *w) {
    const int64_t in = static_cast<int64_t>(item.prompt_ids.size()) - 7;
    EXPECT_GE(in, 75);
    EXPECT_LE(in, 125);
    EXPECT_GE(item.output_len, 15);
    EXPECT_LE(item.output_len, 25);
    in_lens.insert(in);
    out_lens.insert(item.output_len);
    for (int32_t t : item.prompt_ids) {
      EXPECT_GE(t, 0);
      EXPECT_LT(t, 50);
    }
    EXPECT_TRUE(std::equal(item.prompt_ids.begin(), item.prompt_ids.begin() + 7,
                           w->front().prompt_ids.begin()));
  }
  EXPECT_GT(in_lens.size(), 30u);  // spread over the range, not one value
  EXPECT_EQ(*in_lens.begin(), 75);
  EXPECT_EQ(*in_lens.rbegin(), 125);
  // Same seed, same workload; another seed, another.
  auto again = make_workload(o, 50);
  EXPECT_EQ(again->at(123).prompt_ids, w->at(123).prompt_ids);
  o.seed = 4;
  EXPECT_NE(make_workload(o, 50)->at(123).prompt_ids, w->at(123).prompt_ids);
  // No range: every length exact.
  o.random_range_ratio = 0;
  o.random_prefix_len = 0;
  auto exact = make_workload(o, 50);
  ASSERT_TRUE(exact.ok());
  for (const auto& item : *exact) {
    EXPECT_EQ(item.prompt_ids.size(), 100u);
    EXPECT_EQ(item.output_len, 20);
  }
}

TEST(Workload, BadFlagsAreErrorsNamingTheFlag) {
  WorkloadOptions o;
  o.random_range_ratio = 1.0;
  EXPECT_NE(make_workload(o, 10).status().message().find("--random-range-ratio"),
            std::string::npos);
  o = {};
  o.random_input_len = 0;
  EXPECT_NE(make_workload(o, 10).status().message().find("--random-input-len"), std::string::npos);
  o = {};
  o.num_prompts = 0;
  EXPECT_NE(make_workload(o, 10).status().message().find("--num-prompts"), std::string::npos);
  o = {};
  o.dataset = "sharegpt";
  EXPECT_NE(make_workload(o, 10).status().message().find("sharegpt"), std::string::npos);
}

TEST(Workload, JsonlTraceIsReplayedInOrderAndCycled) {
  const auto path = std::filesystem::temp_directory_path() / "shardwise_trace.jsonl";
  {
    std::ofstream out(path);
    out << "{\"prompt_ids\": [1, 2, 3], \"output_len\": 4}\n\n"
        << "{\"prompt_ids\": [9], \"output_len\": 1}\n";
  }
  WorkloadOptions o;
  o.dataset = "jsonl";
  o.dataset_path = path.string();
  o.num_prompts = 5;
  auto w = make_workload(o, 10);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  ASSERT_EQ(w->size(), 5u);
  EXPECT_EQ(w->at(0).prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(w->at(1).output_len, 1);
  EXPECT_EQ(w->at(4).prompt_ids, (std::vector<int32_t>{1, 2, 3}));  // cycled
  struct Bad {
    std::string line, says;
  };
  for (const Bad& b :
       {Bad{"{\"prompt_ids\": [1, 10], \"output_len\": 2}", "outside the vocabulary"},
        Bad{"{\"prompt_ids\": [], \"output_len\": 2}", "empty prompt"},
        Bad{"{\"prompt_ids\": [1], \"output_len\": 0}", "output_len"},
        Bad{"{\"prompt_ids\": [1]}", "output_len"},
        Bad{"{\"prompt_ids\": [1], \"output_len\": 2, \"x\": 1}", "unknown key 'x'"},
        Bad{"[1, 2]", "one JSON object"}}) {
    {
      std::ofstream out(path);
      out << "{\"prompt_ids\": [1], \"output_len\": 1}\n" << b.line << "\n";
    }
    auto r = make_workload(o, 10);
    ASSERT_FALSE(r.ok()) << b.line;
    EXPECT_NE(r.status().message().find(":2:"), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(b.says), std::string::npos) << r.status().message();
  }
  std::filesystem::remove(path);
  o.dataset_path = "/nonexistent/trace.jsonl";
  EXPECT_NE(make_workload(o, 10).status().message().find("/nonexistent/trace.jsonl"),
            std::string::npos);
}

TEST(Arrivals, InfiniteRateSendsEverythingAtOnce) {
  for (double rate : {double(INFINITY), 0.0}) {
    const std::vector<double> t = arrival_offsets(10, rate, 1.0, 1);
    EXPECT_EQ(t, std::vector<double>(10, 0.0)) << rate;
  }
}

// Gamma(k, 1 / (rate k)) gaps: mean 1/rate, variance 1 / (rate^2 k), so the squared coefficient
// of variation is 1/k: 1 for Poisson, 4 for burstiness 0.25, 0.25 for burstiness 4.
TEST(Arrivals, GapsHaveTheRateAndBurstinessAsked) {
  for (double k : {1.0, 0.25, 4.0}) {
    const auto t = arrival_offsets(40001, 20.0, k, 11);
    EXPECT_EQ(t[0], 0.0);
    std::vector<double> gaps;
    for (size_t i = 1; i < t.size(); ++i) gaps.push_back(t[i] - t[i - 1]);
    const double mean = std::accumulate(gaps.begin(), gaps.end(), 0.0) / gaps.size();
    double var = 0;
    for (double g : gaps) var += (g - mean) * (g - mean);
    var /= gaps.size();
    EXPECT_NEAR(mean, 0.05, 0.05 * 0.04) << "burstiness " << k;
    EXPECT_NEAR(var / (mean * mean), 1.0 / k, 0.1 / k) << "burstiness " << k;
  }
  EXPECT_EQ(arrival_offsets(100, 5, 1, 7), arrival_offsets(100, 5, 1, 7));
}

// An engine of one simulated instance with a modelled step time, as the in-process target.
struct SimEngine {
  SimulatedModel model = hashed_model();
  std::unique_ptr<Engine> engine;
  SimEngine(SchedulerOptions so = {}, SimulatedTiming timing = {}) {
    EngineOptions eo;
    eo.scheduler = so;
    engine = std::make_unique<Engine>(fake_model(), eo);
    InstanceSpec s;
    s.num_kv_blocks = 4096;
    s.kv_block_size = 4;
    engine->add_instance(s, std::make_unique<SimulatedExecutor>(1, 4096, 4, model, timing));
  }
};

// Counts how many requests are open at most, as the concurrency limit must hold it.
struct CountingTarget final : RequestTarget {
  RequestTarget& inner;
  size_t most_open = 0;
  explicit CountingTarget(RequestTarget& t) : inner(t) {}
  Status submit(const serve::GenerateRequest& r) override {
    SW_RETURN_IF_ERROR(inner.submit(r));
    most_open = std::max(most_open, inner.num_open());
    return Status();
  }
  Result<std::vector<RequestEvent>> poll(double w) override { return inner.poll(w); }
  Status abort(const std::string& id) override { return inner.abort(id); }
  size_t num_open() const override { return inner.num_open(); }
};

TEST(RunLoad, OutputLengthsAreExactAndTokensEqualTheReference) {
  SimEngine sim;
  WorkloadOptions wo;
  wo.num_prompts = 60;
  wo.random_input_len = 30;
  wo.random_output_len = 12;
  wo.random_range_ratio = 0.5;
  wo.seed = 5;
  auto workload = make_workload(wo, kVocab);
  ASSERT_TRUE(workload.ok());
  // One request no engine can take (longer than max_model_len 4096): a counted failure.
  workload->push_back(WorkloadItem{std::vector<int32_t>(4100, 1), 4});
  EngineTarget engine_target(*sim.engine);
  CountingTarget target(engine_target);
  LoadOptions lo;
  lo.ignore_eos = true;
  lo.max_concurrency = 7;
  lo.keep_output_ids = true;
  int progress_calls = 0;
  LoadProgress last;
  auto result = run_load(target, *workload, lo, [&](const LoadProgress& p) {
    ++progress_calls;
    last = p;
  });
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  EXPECT_LE(target.most_open, 7u);
  EXPECT_EQ(target.most_open, 7u);
  ASSERT_EQ(result->records.size(), workload->size());
  for (size_t i = 0; i + 1 < workload->size(); ++i) {
    const RequestRecord& r = result->records[i];
    const WorkloadItem& w = (*workload)[i];
    ASSERT_TRUE(r.success) << i << ": " << r.error;
    EXPECT_EQ(r.index, i);
    EXPECT_EQ(r.output_len, w.output_len) << i;
    EXPECT_EQ(r.prompt_len, static_cast<int64_t>(w.prompt_ids.size()));
    EXPECT_EQ(r.output_ids, expected_tokens(sim.model, w.prompt_ids, w.output_len)) << i;
    EXPECT_EQ(r.itl_s.size(), static_cast<size_t>(w.output_len - 1));
    EXPECT_GE(r.e2el_s, r.ttft_s);
    EXPECT_EQ(r.server.finish_reason, "length");
  }
  const RequestRecord& failed = result->records.back();
  EXPECT_FALSE(failed.success);
  EXPECT_NE(failed.error.find("invalid_request"), std::string::npos) << failed.error;
  EXPECT_EQ(last.done, static_cast<int64_t>(workload->size()));
  EXPECT_GE(progress_calls, 1);
  EXPECT_FALSE(sim.engine->has_unfinished());
}

TEST(RunLoad, RequestsAreSentNoEarlierThanTheirArrivals) {
  SimEngine sim(SchedulerOptions{}, SimulatedTiming{0.001, 0});
  std::vector<WorkloadItem> w(12, WorkloadItem{{1, 2, 3}, 2});
  LoadOptions lo;
  lo.request_rate = 40;  // mean gap 25 ms: about 0.3 s in all
  lo.seed = 9;
  EngineTarget target(*sim.engine);
  auto result = run_load(target, w, lo);
  ASSERT_TRUE(result.ok());
  const auto due = arrival_offsets(w.size(), 40, 1.0, 9);
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_GE(result->records[i].start_s, due[i]) << i;
    EXPECT_LT(result->records[i].start_s, due[i] + 0.1) << i;
  }
  EXPECT_GE(result->duration_s, due.back());
}

}  // namespace
}  // namespace sw::coordinator

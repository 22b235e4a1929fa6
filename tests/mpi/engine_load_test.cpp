// Requests through a real cluster: `mpirun -np N engine_load_test --config F` starts the
// cluster file's job (coordinator + worker ranks, ZeroMQ control, MPI data plane, KV transfers
// between prefill and decode pools) and on rank 0 sends --requests requests of random lengths
// (some longer than a prefill chunk) arriving over time as a Poisson process. Every request
// must end with exactly the tokens the same request gets from a single-process engine with
// room for everything, streamed once each (none lost or duplicated), and every KV pool must be
// empty at the end. --min-preemptions asks for at least that many preemptions (tight pools);
// --expect-failed N for exactly N requests failed by a KV transfer past its deadline (with
// the config's fault injection and on_transfer_failure: fail), each error naming the ranks
// that did not answer. Exit code 0 on success; the failures are printed otherwise.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <thread>

#include "common/logging.h"
#include "coordinator/cluster_job.h"
#include "coordinator/local_engine.h"

namespace sw {
namespace {

using coordinator::Engine;
using coordinator::RequestSpec;

std::vector<RequestSpec> make_requests(int n, uint64_t seed, int64_t vocab, int max_prompt,
                                       int max_new) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> prompt_len(1, max_prompt), new_len(1, max_new);
  std::uniform_int_distribution<int32_t> token(1, static_cast<int32_t>(vocab - 1));
  std::vector<RequestSpec> out(static_cast<size_t>(n));
  for (RequestSpec& r : out) {
    r.prompt_ids.resize(static_cast<size_t>(prompt_len(rng)));
    for (int32_t& t : r.prompt_ids) t = token(rng);
    r.max_new_tokens = new_len(rng);
    r.ignore_eos = true;  // exact lengths: a lost or extra token shows
  }
  return out;
}

// Greedy outputs of every request from one process with a KV cache that holds them all.
Result<std::vector<std::vector<int32_t>>> reference(const worker::ClusterRuntime& rt,
                                                    const std::vector<RequestSpec>& requests) {
  coordinator::LocalEngineOptions o;
  o.model = rt.cluster.model.path;
  o.load_format = rt.cluster.model.load_format;
  o.dtype = rt.cluster.model.dtype;
  o.dummy_seed = rt.cluster.model.dummy_seed;
  o.threads = 1;
  o.kv_block_size = rt.cluster.runtime.kv_block_size;
  o.engine.scheduler.max_num_seqs = 256;
  o.engine.scheduler.max_num_batched_tokens = 2048;
  int64_t blocks = 0;
  for (const auto& r : requests)
    blocks += (static_cast<int64_t>(r.prompt_ids.size()) + r.max_new_tokens + o.kv_block_size) /
              o.kv_block_size;
  o.num_kv_blocks = blocks;
  SW_ASSIGN_OR_RETURN(auto local, coordinator::LocalEngine::create(o));
  Engine& e = local->engine();
  std::vector<int64_t> ids;
  for (const auto& r : requests) {
    SW_ASSIGN_OR_RETURN(int64_t id, e.add(r));
    ids.push_back(id);
  }
  while (e.has_unfinished()) SW_RETURN_IF_ERROR(e.step().status());
  std::vector<std::vector<int32_t>> out;
  for (int64_t id : ids) out.push_back(e.request(id)->output_ids);
  return out;
}

struct Expectations {
  int64_t min_preemptions = 1;
  int64_t min_decode_preemptions = 0;  // by decode instances running out of blocks
  int failed = 0;
};

Status drive(Engine& engine, const std::vector<RequestSpec>& requests,
             const std::vector<std::vector<int32_t>>& want, double rate, uint64_t seed,
             const Expectations& expect) {
  std::mt19937_64 rng(seed + 1);
  std::exponential_distribution<double> gap(rate);
  const auto t0 = std::chrono::steady_clock::now();
  double next_arrival = 0;
  std::vector<int64_t> ids;
  std::map<int64_t, std::vector<int32_t>> streamed;
  std::map<int64_t, int> ended;
  while (ids.size() < requests.size() || engine.has_unfinished()) {
    const double now = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    while (ids.size() < requests.size() && next_arrival <= now) {
      SW_ASSIGN_OR_RETURN(int64_t id, engine.add(requests[ids.size()]));
      ids.push_back(id);
      next_arrival += gap(rng);
    }
    SW_ASSIGN_OR_RETURN(auto outs, engine.step(0.002));
    for (const auto& o : outs) {
      auto& s = streamed[o.id];
      s.insert(s.end(), o.new_tokens.begin(), o.new_tokens.end());
      if (o.finished()) ++ended[o.id];
    }
  }
  SW_RETURN_IF_ERROR(engine.health());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  int wrong = 0, failed = 0;
  int64_t preemptions = 0, tokens = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const coordinator::Request* r = engine.request(ids[i]);
    std::string why;
    if (r->state == coordinator::RequestState::kFailed && expect.failed > 0 &&
        r->error.find("was not acknowledged within") != std::string::npos &&
        r->error.find("ranks that did not answer: [rank ") != std::string::npos) {
      ++failed;
      std::printf("request %zu failed as expected: %s\n", i, r->error.c_str());
      continue;
    }
    if (r->state != coordinator::RequestState::kFinished)
      why = fmt::format("state {} ({})", coordinator::request_state_name(r->state), r->error);
    else if (r->output_ids != want[i])
      why = fmt::format("tokens [{}] but one process gives [{}]", fmt::join(r->output_ids, " "),
                        fmt::join(want[i], " "));
    else if (streamed[ids[i]] != r->output_ids)
      why = fmt::format("streamed [{}] for output [{}]", fmt::join(streamed[ids[i]], " "),
                        fmt::join(r->output_ids, " "));
    else if (ended[ids[i]] != 1)
      why = fmt::format("reported finished {} times", ended[ids[i]]);
    if (!why.empty() && wrong++ < 10) std::fprintf(stderr, "request %zu: %s\n", i, why.c_str());
    preemptions += r->num_preemptions;
    tokens += static_cast<int64_t>(r->output_ids.size());
  }
  const auto& kv = engine.scheduler().kv();
  const auto& st = engine.scheduler().stats();
  std::printf(
      "engine_load_test: %zu requests, %ld output tokens in %.1f s over %d instance(s), %ld "
      "preemption(s), %ld KV transfer(s) of %.1f MiB, %ld failed transfer(s), %d request(s) "
      "failed, %d wrong\n",
      ids.size(), static_cast<long>(tokens), seconds, kv.num_instances(),
      static_cast<long>(preemptions), static_cast<long>(st.kv_transfers),
      static_cast<double>(st.kv_bytes) / (1 << 20), static_cast<long>(st.kv_transfer_failures),
      failed, wrong);
  if (wrong > 0)
    return internal_error("{} of {} requests did not get their tokens", wrong, ids.size());
  if (failed != expect.failed)
    return internal_error("{} requests failed by a transfer deadline, expected {}", failed,
                          expect.failed);
  if (!kv.all_free() || !kv.check_invariants().ok())
    return internal_error("KV blocks are still held after every request ended");
  int64_t decode_preemptions = 0;
  for (int i = 0; i < engine.scheduler().num_instances(); ++i)
    if (engine.scheduler().instance(i).role == coordinator::InstanceRole::kDecode)
      decode_preemptions += st.preemptions_by_instance[static_cast<size_t>(i)];
  std::printf("engine_load_test: %ld preemption(s) by decode instances\n",
              static_cast<long>(decode_preemptions));
  if (decode_preemptions < expect.min_decode_preemptions)
    return internal_error("{} preemption(s) on decode instances, expected at least {}",
                          decode_preemptions, expect.min_decode_preemptions);
  if (preemptions < expect.min_preemptions)
    return internal_error("{} preemption(s), expected at least {}", preemptions,
                          expect.min_preemptions);
  return Status();
}

}  // namespace
}  // namespace sw

int main(int argc, char** argv) {
  CLI::App app{"1000 requests over time through a cluster with tight KV pools"};
  std::string config;
  int requests = 1000;
  double rate = 250;
  uint64_t seed = 7;
  int max_prompt = 48, max_new = 16;
  sw::Expectations expect;
  app.add_option("--config", config, "Cluster YAML")->required();
  app.add_option("--max-prompt", max_prompt, "Longest prompt")->capture_default_str();
  app.add_option("--max-new", max_new, "Most new tokens of a request")->capture_default_str();
  app.add_option("--min-preemptions", expect.min_preemptions, "Preemptions the run must see")
      ->capture_default_str();
  app.add_option("--min-decode-preemptions", expect.min_decode_preemptions,
                 "Preemptions decode instances must make")
      ->capture_default_str();
  app.add_option("--expect-failed", expect.failed,
                 "Requests that must fail by a transfer deadline (fault injection)")
      ->capture_default_str();
  app.add_option("--requests", requests, "Requests to send")->capture_default_str();
  app.add_option("--rate", rate, "Mean arrivals per second (Poisson)")->capture_default_str();
  app.add_option("--seed", seed, "Seed of lengths, tokens and arrival times")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  sw::init_logging("warn");
  std::vector<sw::coordinator::RequestSpec> specs;
  std::vector<std::vector<int32_t>> want;
  sw::coordinator::ClusterJobOptions jo;
  // The reference runs before the workers connect: once they have, the coordinator must keep
  // answering their heartbeats.
  jo.prepare = [&](const sw::worker::ClusterRuntime& rt) -> sw::Result<int64_t> {
    specs = sw::make_requests(requests, seed, rt.model.vocab_size, max_prompt, max_new);
    SW_ASSIGN_OR_RETURN(want, sw::reference(rt, specs));
    return int64_t{0};
  };
  return sw::coordinator::run_cluster_job(
      config, jo, [&](sw::coordinator::Engine& engine, const sw::worker::ClusterRuntime&) {
        return sw::drive(engine, specs, want, rate, seed, expect);
      });
}

// `shardwise generate`: run a fixed list of prompts through the engine and print tokens (text
// or JSON lines), optionally dumping logits (.npy). One process (--model), a cluster under
// mpirun (--config; cli/engine_args starts either), or a running server (--endpoint: the
// prompts go over the serve wire format and print the same way). This file only feeds and
// prints.
#include <spdlog/spdlog.h>

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/engine_args.h"
#include "cli/prompts.h"
#include "common/npy.h"
#include "coordinator/serve_client.h"

namespace sw::cli {

namespace {

using coordinator::Clock;
using coordinator::RequestSpec;

struct GenerateArgs {
  EngineArgs engine;
  std::string endpoint;  // a running `shardwise serve`: send the prompts there
  bool verbose = false;
  std::string prompt_ids;
  std::string prompts_file;
  int64_t max_new_tokens = 16;
  float temperature = 0.f;
  int top_k = 0;
  float top_p = 1.f;
  uint64_t seed = 0;
  bool ignore_eos = false;
  bool json = false;
  std::string dump_logits;
};

// What one prompt ended with, from the engine's record or a server's messages.
struct Outcome {
  std::vector<int32_t> prompt_ids;
  std::string error;  // rejected, failed or aborted: why
  std::vector<int32_t> output_ids;
  std::string finish_reason;
  int num_preemptions = 0;
  double ttft_ms = 0, total_ms = 0;
  int64_t kv_bytes = 0;
  double kv_transfer_ms = 0, kv_hidden_share = 0;
  const Tensor* logits = nullptr;  // --dump-logits (engine runs only)
};

Result<std::vector<RequestSpec>> build_requests(const GenerateArgs& a) {
  RequestSpec base;
  base.max_new_tokens = a.max_new_tokens;
  base.sampling.temperature = a.temperature;
  base.sampling.top_k = a.top_k;
  base.sampling.top_p = a.top_p;
  base.sampling.seed = a.seed;
  base.ignore_eos = a.ignore_eos;
  base.return_logits = !a.dump_logits.empty();
  if (a.prompt_ids.empty()) return read_prompts_file(a.prompts_file, base);
  SW_ASSIGN_OR_RETURN(base.prompt_ids, parse_token_list(a.prompt_ids, "--prompt-ids"));
  return std::vector<RequestSpec>{base};
}

// KV blocks per dp group that hold every request at once (ones too long for max_len aside).
int64_t kv_blocks_for(const std::vector<RequestSpec>& requests, int block_size, int64_t max_len) {
  int64_t blocks = 0;
  for (const auto& r : requests) {
    const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.max_new_tokens;
    if (r.max_new_tokens < 1 || total > max_len) continue;
    blocks += (total + block_size - 1) / block_size;
  }
  return std::max<int64_t>(blocks, 1);
}

std::string logits_path(const std::string& path, size_t index, size_t count) {
  if (count == 1) return path;
  std::string stem = path, ext;
  if (path.size() > 4 && path.substr(path.size() - 4) == ".npy") {
    stem = path.substr(0, path.size() - 4);
    ext = ".npy";
  }
  return fmt::format("{}_{}{}", stem, index, ext);
}

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Prints one line per prompt; `summary` (engine runs) is logged at the end.
Status emit_results(const GenerateArgs& a, const std::vector<Outcome>& outcomes) {
  std::string first_error;
  size_t num_errors = 0;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    if (!o.error.empty()) {
      const std::string error = fmt::format("request {}: {}", i, o.error);
      if (a.json) {
        std::cout << nlohmann::json{{"index", i},
                                    {"prompt_ids", o.prompt_ids},
                                    {"finish_reason", "error"},
                                    {"error", error}}
                         .dump()
                  << "\n";
      } else {
        std::cout << fmt::format("[{}] error: {}\n", i, error);
      }
      if (num_errors++ == 0) first_error = error;
      continue;
    }
    const double decode_ms = o.total_ms - o.ttft_ms;
    const double decode_tps = o.output_ids.size() > 1 && decode_ms > 0
                                  ? (o.output_ids.size() - 1) * 1000.0 / decode_ms
                                  : 0.0;
    if (a.json) {
      nlohmann::json j = {{"index", i},
                          {"prompt_ids", o.prompt_ids},
                          {"output_ids", o.output_ids},
                          {"finish_reason", o.finish_reason},
                          {"num_preemptions", o.num_preemptions},
                          {"timing",
                           {{"ttft_ms", o.ttft_ms},
                            {"total_ms", o.total_ms},
                            {"decode_tokens_per_s", decode_tps}}}};
      std::cout << j.dump() << "\n";
    } else {
      std::cout << fmt::format(
          "[{}] prompt={} -> output={} ({}, ttft {:.1f} ms, total {:.1f} ms)\n", i,
          fmt::join(o.prompt_ids, ","), fmt::join(o.output_ids, ","), o.finish_reason, o.ttft_ms,
          o.total_ms);
    }
    if (a.verbose && o.kv_bytes > 0)
      std::cerr << fmt::format(
          "request {}: KV transfer {:.1f} KiB in {:.2f} ms, {:.0f}% of it while the prefill "
          "step ran\n",
          i, static_cast<double>(o.kv_bytes) / 1024.0, o.kv_transfer_ms, 100.0 * o.kv_hidden_share);
    if (!a.dump_logits.empty() && o.logits)
      SW_RETURN_IF_ERROR(write_npy(logits_path(a.dump_logits, i, outcomes.size()),
                                   o.logits->data_as<float>(), o.logits->shape()));
  }
  std::cout.flush();
  if (num_errors > 0)
    return invalid_argument("{} of {} request(s) rejected; the first: {}", num_errors,
                            outcomes.size(), first_error);
  return Status();
}

void log_engine_summary(const GenerateArgs& a, const coordinator::Engine& engine,
                        Clock::time_point first) {
  const auto& sched = engine.scheduler().stats();
  const double wall_ms = ms_between(first, Clock::now());
  spdlog::info(
      "{} prompt + {} generated tokens in {} steps, {:.1f} ms ({:.1f} tok/s), {} "
      "preemption(s), {} KV transfer(s) of {:.1f} KiB ({} failed)",
      sched.prompt_tokens, sched.generated_tokens, engine.stats().num_steps, wall_ms,
      wall_ms > 0 ? sched.generated_tokens * 1000.0 / wall_ms : 0.0, sched.num_preemptions,
      sched.kv_transfers, static_cast<double>(sched.kv_bytes) / 1024.0, sched.kv_transfer_failures);
  if (!a.verbose) return;
  const auto& layers = engine.stats().moe_layers;
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& m = layers[l];
    std::cerr << fmt::format(
        "moe layer {}: tokens per expert [{}], dropped {} of {} ({:.1f}%), imbalance {:.2f}\n", l,
        fmt::join(m.tokens_per_expert, " "), m.num_dropped, m.num_assignments,
        m.num_assignments ? 100.0 * m.num_dropped / m.num_assignments : 0.0, m.imbalance);
  }
}

// Adds every request, steps the engine until all have ended, prints.
Status run_requests(const GenerateArgs& a, const std::vector<RequestSpec>& requests,
                    coordinator::Engine& engine) {
  const auto first = Clock::now();
  std::vector<Outcome> outcomes(requests.size());
  std::vector<int64_t> ids(requests.size(), -1);
  for (size_t i = 0; i < requests.size(); ++i) {
    outcomes[i].prompt_ids = requests[i].prompt_ids;
    auto id = engine.add(requests[i]);
    if (!id.ok())
      outcomes[i].error = std::string(id.status().message());
    else
      ids[i] = *id;
  }
  while (engine.has_unfinished()) SW_RETURN_IF_ERROR(engine.step().status());
  for (size_t i = 0; i < requests.size(); ++i) {
    const coordinator::Request* r = ids[i] >= 0 ? engine.request(ids[i]) : nullptr;
    if (!r) continue;
    Outcome& o = outcomes[i];
    if (r->state != coordinator::RequestState::kFinished)
      o.error = r->error.empty() ? coordinator::request_state_name(r->state) : r->error;
    o.output_ids = r->output_ids;
    o.finish_reason = coordinator::finish_reason_name(r->finish_reason);
    o.num_preemptions = r->num_preemptions;
    o.ttft_ms = ms_between(r->arrival, r->first_token);
    o.total_ms = ms_between(r->arrival, r->finished);
    o.kv_bytes = r->kv_bytes;
    o.kv_transfer_ms = r->kv_transfer_ms;
    o.kv_hidden_share = r->kv_hidden_share;
    o.logits = &r->logits;
  }
  Status printed = emit_results(a, outcomes);
  log_engine_summary(a, engine, first);
  if (!engine.health().ok()) return engine.health();
  return printed;
}

// Sends every prompt to a running server and prints what came back, as run_requests does.
Status run_remote(const GenerateArgs& a) {
  if (!a.dump_logits.empty())
    return invalid_argument(
        "--dump-logits needs the engine in this process (--model/--config), "
        "not --endpoint");
  SW_ASSIGN_OR_RETURN(auto requests, build_requests(a));
  SW_ASSIGN_OR_RETURN(auto client, coordinator::ServeClient::connect(a.endpoint));
  std::vector<Outcome> outcomes(requests.size());
  std::map<std::string, size_t> index;
  std::vector<Clock::time_point> sent(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    outcomes[i].prompt_ids = requests[i].prompt_ids;
    coordinator::serve::GenerateRequest g;
    g.id = std::to_string(i);
    g.spec = requests[i];
    sent[i] = Clock::now();
    SW_RETURN_IF_ERROR(client->submit(g));
    index[g.id] = i;
  }
  while (client->num_open() > 0) {
    SW_ASSIGN_OR_RETURN(auto events, client->poll(1.0));
    for (auto& e : events) {
      auto it = index.find(e.id);
      if (it == index.end()) continue;
      Outcome& o = outcomes[it->second];
      using Kind = coordinator::RequestEvent::Kind;
      if (e.kind == Kind::kTokens) {
        if (o.output_ids.empty()) o.ttft_ms = ms_between(sent[it->second], e.received);
        o.output_ids.insert(o.output_ids.end(), e.tokens.begin(), e.tokens.end());
      } else if (e.kind == Kind::kError) {
        o.error = fmt::format("{}: {}", e.error.code, e.error.message);
      } else {
        o.finish_reason = e.summary.finish_reason;
        o.num_preemptions = e.summary.num_preemptions;
        o.total_ms = ms_between(sent[it->second], e.received);
        o.kv_bytes = e.summary.kv_bytes;
        o.kv_transfer_ms = e.summary.kv_transfer_ms;
        if (o.finish_reason != "length" && o.finish_reason != "stop")
          o.error = e.summary.error.empty() ? o.finish_reason : e.summary.error;
      }
    }
  }
  return emit_results(a, outcomes);
}

int run_generate(const GenerateArgs& a) {
  std::vector<RequestSpec> requests;  // read on rank 0 only
  EngineRunOptions ro;
  ro.collect_moe_metrics = a.verbose;
  ro.prepare = [&](const coordinator::serve::ServerInfo& info, int block_size) -> Result<int64_t> {
    SW_ASSIGN_OR_RETURN(requests, build_requests(a));
    // Without a size or a memory share, the cache holds every prompt at once (the plan's
    // estimate can be far more than these prompts use, and the CPU backend zero-fills what
    // it allocates).
    return kv_blocks_for(requests, block_size, info.max_model_len);
  };
  return run_engine(a.engine, ro,
                    [&](coordinator::Engine& engine, const coordinator::serve::ServerInfo&) {
                      return run_requests(a, requests, engine);
                    });
}

}  // namespace

std::function<int()> add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* g = app.add_subcommand(
      "generate",
      "Generate tokens for prompts: one process (--model), partitioned under mpirun (--config), "
      "or sent to a running server (--endpoint)");
  auto flags = std::make_shared<EngineFlags>(
      g, &a->engine, "KV cache blocks (0 = enough for every prompt at once)");
  auto* endpoint = g->add_option("--endpoint", a->endpoint,
                                 "A running `shardwise serve` (tcp://HOST:PORT): send the prompts "
                                 "there instead of starting an engine");
  g->add_flag("--verbose", a->verbose,
              "Print per-layer MoE metrics (tokens per expert, drops, imbalance) and each "
              "request's KV transfer (bytes, time, share during the prefill step)");
  auto* ids =
      g->add_option("--prompt-ids", a->prompt_ids, "Comma-separated prompt token ids, e.g. 1,2,3");
  auto* file = g->add_option("--prompts", a->prompts_file,
                             "JSONL file: one {\"prompt_ids\": [...]} per line");
  ids->excludes(file);
  g->add_option("--max-new-tokens", a->max_new_tokens, "Tokens to generate per prompt")
      ->capture_default_str();
  g->add_option("--temperature", a->temperature, "0 = greedy")->capture_default_str();
  g->add_option("--top-k", a->top_k, "0 = off")->capture_default_str();
  g->add_option("--top-p", a->top_p, "1 = off")->capture_default_str();
  g->add_option("--seed", a->seed, "Sampling seed (per request; reproducible)")
      ->capture_default_str();
  g->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at the model's eos_token_id");
  g->add_flag("--json", a->json, "One JSON object per prompt per line");
  g->add_option("--dump-logits", a->dump_logits,
                "Write float32 logits [prompt + generated - 1, vocab] to this .npy (several "
                "prompts: _<i> appended)");
  return [a, ids, file, flags, endpoint]() {
    if (ids->count() == 0 && file->count() == 0) {
      std::cerr << "error: generate needs --prompt-ids or --prompts\n";
      return 2;
    }
    if (endpoint->count() > 0) {
      if (!a->engine.model.empty() || !a->engine.config.empty()) {
        std::cerr << "error: --endpoint sends the prompts to a running server: it cannot be "
                     "used with --model or --config\n";
        return 2;
      }
      if (const std::string flag = flags->given_engine_flag(); !flag.empty()) {
        std::cerr << "error: --endpoint sends the prompts to a running server, whose engine is "
                     "already set up: "
                  << flag << " cannot be used with it\n";
        return 2;
      }
      Status s = run_remote(*a);
      if (!s.ok()) std::cerr << "error: " << s.message() << "\n";
      return s.ok() ? 0 : 1;
    }
    if (!flags->check(std::cerr)) return 2;
    return run_generate(*a);
  };
}

}  // namespace sw::cli

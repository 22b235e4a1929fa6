// `shardwise bench`: the serving benchmark, with vllm bench serve's flags, metrics and layout.
//   bench throughput (--model M | --config F): the engine in this job, fed by an in-process
//                                              load generator (under mpirun for --config)
//   bench serve --endpoint E:                 the same load against a running `shardwise serve`
//   bench serve --backend openai --base-url U: the same load over the OpenAI HTTP API (ours or
//                                              any server's), streamed
// The workload, arrivals and record keeping are coordinator/loadgen; the arithmetic and the
// table coordinator/serving_metrics. This file parses flags, reports progress, writes the
// JSON / CSV and draws the plot with gnuplot.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cli/commands.h"
#include "cli/engine_args.h"
#include "client/openai_target.h"
#include "coordinator/loadgen.h"
#include "coordinator/serve_client.h"
#include "coordinator/serving_metrics.h"
#include "tokenizer/tokenizer.h"

namespace sw::cli {

namespace {

namespace fs = std::filesystem;
using coordinator::serve::ServerInfo;
using coordinator::serve::ServerStats;

struct BenchArgs {
  EngineArgs engine;     // throughput
  std::string endpoint;  // serve: the ZeroMQ endpoint, or with --backend openai the route
  std::string backend = "shardwise";  // serve: shardwise (ZeroMQ) | openai (HTTP)
  std::string base_url;               // serve --backend openai
  std::string tokenizer;              // serve: its vocabulary draws random prompts; chat text
  std::string model_name;             // serve --backend openai: "model" (default: the server's)
  std::string api_key;
  double server_timeout_s = 60;
  coordinator::WorkloadOptions workload;
  coordinator::LoadOptions load;
  std::string request_rate = "inf";
  std::vector<std::string> goodput;
  std::string percentile_metrics = "ttft,tpot,itl,e2el";
  std::string metric_percentiles = "99";
  bool save_result = false;
  std::string result_dir;
  std::string result_filename;
  std::string csv;
  std::string plot;
  bool no_progress = false;
  bool no_moe_metrics = false;
};

std::string clock_text(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
                   : fmt::format("{:02}:{:02}", t / 60, t % 60);
}

// A progress line on stderr while it runs; nothing when stderr is not a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled && isatty(STDERR_FILENO)) {}
  void update(const coordinator::LoadProgress& p) {
    if (!enabled_) return;
    const double frac = p.total > 0 ? static_cast<double>(p.done) / p.total : 1.0;
    const int width = 30, filled = static_cast<int>(frac * width);
    const double eta = p.done > 0 ? p.elapsed_s * (p.total - p.done) / p.done : NAN;
    std::fprintf(stderr, "\r%3.0f%%|%s%s| %lld/%lld [%s<%s, %.1f tok/s] ", 100.0 * frac,
                 std::string(static_cast<size_t>(filled), '#').c_str(),
                 std::string(static_cast<size_t>(width - filled), ' ').c_str(),
                 static_cast<long long>(p.done), static_cast<long long>(p.total),
                 clock_text(p.elapsed_s).c_str(), clock_text(eta).c_str(),
                 p.elapsed_s > 0 ? p.output_tokens / p.elapsed_s : 0.0);
    if (p.done == p.total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  bool enabled_;
};

// A float as Python prints it (1.0, 0.25), as vLLM's header lines show them.
std::string py_float(double v) {
  std::string s = fmt::format("{}", v);
  return s.find_first_of(".eni") == std::string::npos ? s + ".0" : s;
}

Result<double> parse_rate(const std::string& text) {
  if (text == "inf" || text == "Inf" || text == "INF") return INFINITY;
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && v > 0) return v;
  } catch (const std::exception&) {
  }
  return invalid_argument(
      "--request-rate: expected a number of requests per second > 0 or inf, "
      "got '{}'",
      text);
}

Result<coordinator::MetricsOptions> metrics_options(const BenchArgs& a) {
  coordinator::MetricsOptions m;
  SW_ASSIGN_OR_RETURN(m.selected, coordinator::parse_metric_names(a.percentile_metrics));
  SW_ASSIGN_OR_RETURN(m.percentiles, coordinator::parse_percentiles(a.metric_percentiles));
  SW_ASSIGN_OR_RETURN(m.goodput_slo_ms, coordinator::parse_goodput(a.goodput));
  return m;
}

// The gnuplot data of one latency CDF: sorted values and their cumulative share.
void write_cdf(const fs::path& path, std::vector<double> values) {
  std::sort(values.begin(), values.end());
  std::ofstream out(path);
  for (size_t i = 0; i < values.size(); ++i)
    out << values[i] << " " << static_cast<double>(i + 1) / values.size() << "\n";
}

// TTFT, TPOT and ITL CDFs and output tokens per second over time, in one PNG, by gnuplot.
Status plot(const std::string& png, const coordinator::BenchmarkMetrics& m,
            const std::vector<coordinator::RequestRecord>& records, const std::string& title) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    return not_found(
        "--plot needs gnuplot (Debian: apt-get install gnuplot-nox; launch/setup.sh "
        "installs it)");
  char tmpl[] = "/tmp/shardwise-plot-XXXXXX";
  if (!mkdtemp(tmpl)) return internal_error("--plot: cannot make a temporary folder");
  const fs::path dir(tmpl);
  write_cdf(dir / "ttft.dat", m.metrics.at("ttft").values_ms);
  write_cdf(dir / "tpot.dat", m.metrics.at("tpot").values_ms);
  write_cdf(dir / "itl.dat", m.metrics.at("itl").values_ms);
  {
    std::map<int64_t, double> per_second;
    for (const auto& r : records)
      for (size_t i = 0; i < r.token_times_s.size(); ++i)
        per_second[static_cast<int64_t>(r.token_times_s[i])] +=
            i < r.tokens_per_message.size() ? r.tokens_per_message[i] : 1;
    std::ofstream out(dir / "throughput.dat");
    if (!per_second.empty())
      for (int64_t s = 0; s <= per_second.rbegin()->first; ++s)
        out << s << " " << (per_second.count(s) ? per_second[s] : 0.0) << "\n";
  }
  std::string escaped_title;
  for (char c : title) escaped_title += c == '"' ? '\'' : c;
  std::ofstream script(dir / "plot.gp");
  script << "set terminal pngcairo size 1400,1000 font ',10'\n"
         << "set output '" << fs::absolute(png).string() << "'\n"
         << "set multiplot layout 2,2 title \"" << escaped_title << "\"\n"
         << "set grid\nset key off\nset ylabel 'fraction of samples'\nset yrange [0:1]\n";
  for (auto [file, label] : {std::pair{"ttft", "TTFT (ms)"}, std::pair{"tpot", "TPOT (ms)"},
                             std::pair{"itl", "ITL (ms)"}}) {
    const fs::path data = dir / (std::string(file) + ".dat");
    script << "set title '" << label << " CDF'\nset xlabel '" << label << "'\n";
    if (fs::file_size(data) == 0)
      script << "set label 1 'no samples' at graph 0.4,0.5\nplot 2 with lines\nunset label 1\n";
    else
      script << "plot '" << data.string() << "' using 1:2 with steps lw 2\n";
  }
  script << "set title 'output tokens per second'\nset xlabel 'time from the first send (s)'\n"
         << "set ylabel 'tokens/s'\nset yrange [0:*]\nset xrange [-0.5:*]\n"
         << "set style fill solid 0.5\nset boxwidth 0.9\n";
  if (fs::file_size(dir / "throughput.dat") == 0)
    script << "plot 0 with lines\n";
  else
    script << "plot '" << (dir / "throughput.dat").string() << "' using ($1 + 0.5):2 with boxes\n";
  script << "unset multiplot\n";
  script.close();
  const std::string cmd = fmt::format("gnuplot '{}' 2>'{}'", (dir / "plot.gp").string(),
                                      (dir / "gnuplot.err").string());
  const int rc = std::system(cmd.c_str());
  std::string err;
  {
    std::ifstream e(dir / "gnuplot.err");
    err.assign(std::istreambuf_iterator<char>(e), {});
  }
  fs::remove_all(dir);
  if (rc != 0) return internal_error("--plot: gnuplot failed: {}", err);
  return Status();
}

// Prints the table and writes what was asked for.
Status report(const BenchArgs& a, const coordinator::BenchmarkSetup& setup,
              const coordinator::LoadResult& result, const ServerStats& before,
              const ServerStats& after) {
  SW_ASSIGN_OR_RETURN(auto mo, metrics_options(a));
  const auto m = coordinator::compute_metrics(result.records, result.duration_s, mo);
  const auto swm = coordinator::shardwise_metrics(result.records, before, after);
  std::cout << coordinator::format_result_table(setup, m, swm, mo);
  std::cout.flush();
  for (const auto& r : result.records)
    if (!r.success) {
      spdlog::warn("bench: {} request(s) failed; the first (request {}): {}", m.failed, r.index,
                   r.error);
      break;
    }
  const auto json = coordinator::result_json(setup, m, swm, mo, result.records);
  if (a.save_result || !a.result_filename.empty()) {
    std::string name = a.result_filename;
    if (name.empty())
      name =
          fmt::format("shardwise-{}-{}-{}.json", setup.mode,
                      std::isfinite(setup.request_rate) ? fmt::format("{}qps", setup.request_rate)
                                                        : std::string("infqps"),
                      json["date"].get<std::string>());
    fs::path path = a.result_dir.empty() || fs::path(name).is_absolute()
                        ? fs::path(name)
                        : fs::path(a.result_dir) / name;
    if (path.has_parent_path()) fs::create_directories(path.parent_path());
    std::ofstream out(path);
    out << json.dump(2) << "\n";
    if (!out) return not_found("--result-filename: cannot write '{}'", path.string());
    std::cerr << "bench: results in " << path.string() << "\n";
  }
  if (!a.csv.empty()) {
    std::ofstream out(a.csv);
    out << coordinator::result_csv(json);
    if (!out) return not_found("--csv: cannot write '{}'", a.csv);
  }
  if (!a.plot.empty()) {
    SW_RETURN_IF_ERROR(plot(a.plot, m, result.records,
                            fmt::format("shardwise bench {}: {}, {}", setup.mode, setup.info.model,
                                        setup.info.layout())));
    std::cerr << "bench: plot in " << a.plot << "\n";
  }
  return Status();
}

coordinator::BenchmarkSetup setup_of(const BenchArgs& a, const ServerInfo& info, double rate,
                                     const char* mode) {
  coordinator::BenchmarkSetup s;
  s.mode = mode;
  s.endpoint = a.endpoint;
  s.info = info;
  s.num_prompts = a.workload.num_prompts;
  s.request_rate = rate;
  s.burstiness = a.load.burstiness;
  s.max_concurrency = a.load.max_concurrency;
  s.dataset = a.workload.dataset;
  s.seed = a.workload.seed;
  return s;
}

void log_start(const BenchArgs& a, const ServerInfo& info, double rate) {
  std::cerr << fmt::format(
      "bench: {} ({}) on {} rank(s): {}\n"
      "Traffic request rate: {}\nBurstiness factor: {}{}\nMaximum request concurrency: {}\n",
      info.model, info.model_type, info.world_size, info.layout(),
      std::isfinite(rate) ? py_float(rate) : std::string("inf"), py_float(a.load.burstiness),
      a.load.burstiness == 1.0 ? " (Poisson process)" : " (Gamma distribution)",
      a.load.max_concurrency > 0 ? std::to_string(a.load.max_concurrency) : std::string("None"));
}

// KV blocks per dp group that hold every request of the workload at once.
int64_t workload_blocks(const std::vector<coordinator::WorkloadItem>& w, int block_size) {
  int64_t blocks = 0;
  for (const auto& item : w)
    blocks += (static_cast<int64_t>(item.prompt_ids.size()) + item.output_len + block_size - 1) /
              block_size;
  return std::max<int64_t>(blocks, 1);
}

int run_throughput(BenchArgs a) {
  auto rate = parse_rate(a.request_rate);
  auto mo = metrics_options(a);
  for (const Status& s : {rate.status(), mo.status()})
    if (!s.ok()) {
      std::cerr << "error: " << s.message() << "\n";
      return 2;
    }
  a.load.request_rate = *rate;
  a.load.seed = a.workload.seed;
  std::vector<coordinator::WorkloadItem> workload;  // made on the coordinator
  EngineRunOptions ro;
  ro.collect_moe_metrics = !a.no_moe_metrics;
  ro.workers_ignore_signals = false;
  ro.prepare = [&](const ServerInfo& info, int block_size) -> Result<int64_t> {
    SW_ASSIGN_OR_RETURN(workload, coordinator::make_workload(a.workload, info.vocab_size));
    // Without a size or memory share, the cache holds the whole workload at once (capped by
    // the plan's estimate on a cluster).
    return workload_blocks(workload, block_size);
  };
  return run_engine(a.engine, ro, [&](coordinator::Engine& engine, const ServerInfo& info) {
    log_start(a, info, *rate);
    const ServerStats before = coordinator::serve::engine_stats(engine);
    coordinator::EngineTarget target(engine);
    ProgressBar bar(!a.no_progress);
    SW_ASSIGN_OR_RETURN(auto result, coordinator::run_load(target, workload, a.load,
                                                           [&](const auto& p) { bar.update(p); }));
    const ServerStats after = coordinator::serve::engine_stats(engine);
    return report(a, setup_of(a, info, *rate, "throughput"), result, before, after);
  });
}

// The target `bench serve` drives, and what it says about the server.
struct ServerTarget {
  std::unique_ptr<coordinator::RequestTarget> target;
  coordinator::ServeClient* zmq = nullptr;  // stats before and after (shardwise backend)
  ServerInfo info;
};

Result<ServerTarget> connect_target(const BenchArgs& a,
                                    std::shared_ptr<const tokenizer::Tokenizer> tok) {
  ServerTarget t;
  if (a.backend == "openai") {
    if (a.base_url.empty()) return invalid_argument("--backend openai needs --base-url URL");
    client::OpenAiTargetOptions o;
    o.base_url = a.base_url;
    if (!a.endpoint.empty()) o.endpoint = a.endpoint;
    o.model = a.model_name;
    o.api_key = a.api_key;
    o.request_timeout_s = a.server_timeout_s;
    SW_ASSIGN_OR_RETURN(auto target, client::OpenAiTarget::connect(o, tok));
    t.info.model = target->model();
    t.info.model_type = fmt::format("openai {}", o.endpoint);
    t.info.max_model_len = target->max_model_len();
    t.target = std::move(target);
    return t;
  }
  if (a.backend != "shardwise")
    return invalid_argument("--backend '{}': expected shardwise (ZeroMQ) or openai (HTTP)",
                            a.backend);
  if (a.endpoint.empty()) return invalid_argument("--backend shardwise needs --endpoint tcp://...");
  coordinator::ServeClientOptions co;
  co.server_timeout_s = a.server_timeout_s;
  SW_ASSIGN_OR_RETURN(auto client, coordinator::ServeClient::connect(a.endpoint, co));
  SW_ASSIGN_OR_RETURN(t.info, client->info(a.server_timeout_s));
  t.zmq = client.get();
  t.target = std::move(client);
  return t;
}

Status run_against_server(BenchArgs a) {
  SW_ASSIGN_OR_RETURN(double rate, parse_rate(a.request_rate));
  SW_RETURN_IF_ERROR(metrics_options(a).status());
  a.load.request_rate = rate;
  a.load.seed = a.workload.seed;
  std::shared_ptr<const tokenizer::Tokenizer> tok;
  if (!a.tokenizer.empty()) {
    auto t = tokenizer::Tokenizer::from_folder(a.tokenizer);
    if (!t.ok()) return t.status().with_context("--tokenizer " + a.tokenizer);
    tok = std::move(t).value();
  } else if (a.backend == "openai") {
    return invalid_argument(
        "--backend openai needs --tokenizer DIR: random prompts are drawn from its vocabulary");
  }
  SW_ASSIGN_OR_RETURN(ServerTarget t, connect_target(a, tok));
  // Random prompts draw ids from the tokenizer's vocabulary when there is one (the same
  // workload for both backends), else from the model's.
  int64_t vocab = t.info.vocab_size;
  if (tok) vocab = vocab > 0 ? std::min(vocab, tok->vocab_size()) : tok->vocab_size();
  SW_ASSIGN_OR_RETURN(auto workload, coordinator::make_workload(a.workload, vocab));
  log_start(a, t.info, rate);
  ServerStats before;
  if (t.zmq) {
    SW_ASSIGN_OR_RETURN(before, t.zmq->stats(a.server_timeout_s));
  }
  ProgressBar bar(!a.no_progress);
  SW_ASSIGN_OR_RETURN(auto result, coordinator::run_load(*t.target, workload, a.load,
                                                         [&](const auto& p) { bar.update(p); }));
  ServerStats after = before;
  if (t.zmq) {
    // The server may be gone by now (stopped once the last request ended): the run still
    // counts.
    auto got = t.zmq->stats(std::min(a.server_timeout_s, 5.0));
    if (got.ok())
      after = *got;
    else
      std::cerr << "bench: no engine counters after the run (" << got.status().message()
                << "); the Shardwise lines show none\n";
  }
  auto setup = setup_of(a, t.info, rate, "serve");
  if (a.backend == "openai")
    setup.endpoint = a.base_url + (a.endpoint.empty() ? "/v1/completions" : a.endpoint);
  return report(a, setup, result, before, after);
}

// The load flags, the same on both subcommands (vLLM's names and defaults).
void add_load_flags(CLI::App* b, BenchArgs* a) {
  b->add_option("--dataset-name", a->workload.dataset,
                "random (token ids drawn uniformly) or jsonl (--dataset-path)")
      ->capture_default_str();
  b->add_option("--dataset-path", a->workload.dataset_path,
                "jsonl: one {\"prompt_ids\": [...], \"output_len\": n} per line (cycled when "
                "--num-prompts is larger)");
  b->add_option("--num-prompts", a->workload.num_prompts, "Requests to send")
      ->capture_default_str();
  b->add_option("--random-input-len", a->workload.random_input_len, "Prompt tokens (random)")
      ->capture_default_str();
  b->add_option("--random-output-len", a->workload.random_output_len,
                "max_tokens of each request (random)")
      ->capture_default_str();
  b->add_option("--random-range-ratio", a->workload.random_range_ratio,
                "Lengths uniform in [len * (1 - r), len * (1 + r)], 0 <= r < 1")
      ->capture_default_str();
  b->add_option("--random-prefix-len", a->workload.random_prefix_len,
                "Random tokens shared by every prompt, before its own")
      ->capture_default_str();
  b->add_option("--request-rate", a->request_rate,
                "Requests per second (inf: all at once), arrivals drawn per --burstiness")
      ->capture_default_str();
  b->add_option("--burstiness", a->load.burstiness,
                "Gamma shape of the inter-arrival times: 1 = Poisson, < 1 burstier, > 1 steadier")
      ->capture_default_str();
  b->add_option("--max-concurrency", a->load.max_concurrency,
                "At most this many requests open at once (0 = no limit)")
      ->capture_default_str();
  b->add_option("--seed", a->workload.seed, "Seed of the workload, arrivals and sampling")
      ->capture_default_str();
  b->add_flag("--ignore-eos", a->load.ignore_eos,
              "Generate exactly each request's output length (do not stop at eos)");
  b->add_option("--temperature", a->load.temperature, "0 = greedy")->capture_default_str();
  b->add_option("--top-k", a->load.top_k, "0 = off")->capture_default_str();
  b->add_option("--top-p", a->load.top_p, "1 = off")->capture_default_str();
  b->add_option("--goodput", a->goodput,
                "SLOs a good request meets, e.g. --goodput ttft:500 tpot:50 e2el:3000 (ms); "
                "given again, its items add up (a later limit for the same metric wins)")
      ->expected(1, -1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  b->add_option("--percentile-metrics", a->percentile_metrics,
                "Metrics to print percentiles of: ttft, tpot, itl, e2el (comma-separated)")
      ->capture_default_str();
  b->add_option("--metric-percentiles", a->metric_percentiles,
                "Percentiles to print, comma-separated (e.g. 50,90,99)")
      ->capture_default_str();
  b->add_flag("--save-result", a->save_result, "Write the result JSON");
  b->add_option("--result-dir", a->result_dir, "Folder of the result JSON (default: current)");
  b->add_option("--result-filename", a->result_filename,
                "Name of the result JSON (implies --save-result; default "
                "shardwise-<mode>-<rate>qps-<date>.json)");
  b->add_option("--csv", a->csv, "Write the summary as CSV (a header line and a value line)");
  b->add_option("--plot", a->plot,
                "Draw TTFT / TPOT / ITL CDFs and output tokens per second into this PNG "
                "(needs gnuplot)");
  b->add_flag("--no-progress,--disable-tqdm", a->no_progress,
              "No progress bar (it is shown only when stderr is a terminal)");
}

}  // namespace

std::function<int()> add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* bench = app.add_subcommand(
      "bench", "Serving benchmark (vllm bench serve's flags and metrics): throughput | serve");
  bench->require_subcommand(1);
  // On both subcommands a flag given twice takes its last value (engine flags too), so a
  // script's defaults can be overridden by what follows them.
  bench->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  CLI::App* tp = bench->add_subcommand(
      "throughput",
      "The engine in this job (--model, or --config under mpirun) fed by an in-process load "
      "generator");
  auto flags = std::make_shared<EngineFlags>(
      tp, &a->engine, "KV cache blocks (0 = on cpu, room for the whole workload at once)");
  add_load_flags(tp, a.get());
  tp->add_flag("--no-moe-metrics", a->no_moe_metrics,
               "Do not count MoE routing per layer (saves a device sync per MoE layer per step)");
  CLI::App* sv =
      bench->add_subcommand("serve", "The same load against a running `shardwise serve`");
  sv->add_option("--backend", a->backend,
                 "shardwise (the ZeroMQ token endpoint) or openai (the OpenAI HTTP API, streamed)")
      ->capture_default_str();
  sv->add_option("--endpoint", a->endpoint,
                 "shardwise: the server, e.g. tcp://127.0.0.1:8765; openai: the route, "
                 "/v1/completions (default) or /v1/chat/completions");
  sv->add_option("--base-url", a->base_url, "openai: the server, e.g. http://127.0.0.1:8000");
  sv->add_option("--tokenizer", a->tokenizer,
                 "Folder with tokenizer.json: random prompts draw from its vocabulary (needed by "
                 "--backend openai; chat prompts are its decoded text)");
  sv->add_option("--model", a->model_name, "openai: the request's model (default: the server's)");
  sv->add_option("--api-key", a->api_key, "openai: Bearer key");
  sv->add_option("--server-timeout", a->server_timeout_s,
                 "Seconds without a message from the server (it sends heartbeats) before the "
                 "run fails")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_load_flags(sv, a.get());
  return [a, flags, tp, sv]() {
    if (tp->parsed()) {
      if (!flags->check(std::cerr)) return 2;
      return run_throughput(*a);
    }
    Status s = run_against_server(*a);
    if (!s.ok()) std::cerr << "error: " << s.message() << "\n";
    return s.ok() ? 0 : 1;
  };
}

}  // namespace sw::cli

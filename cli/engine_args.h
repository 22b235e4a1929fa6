// The engine a subcommand drives (generate, serve, bench throughput): one process (--model and
// the engine flags) or a cluster job under mpirun/srun (--config: the cluster file owns the
// model, runtime and scheduler settings, and the flags that would set them are refused, naming
// the key to set instead). One set of flags and one start-up path for every subcommand.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "coordinator/engine.h"
#include "coordinator/serve_protocol.h"

namespace sw::cli {

struct EngineArgs {
  std::string config;  // cluster YAML: run partitioned under mpirun
  std::string model;
  std::string load_format = "auto";
  std::string dtype = "float32";
  std::string device = "cpu";
  uint64_t dummy_seed = 0;
  int64_t num_kv_blocks = 0;
  double gpu_memory_utilization = -1;  // < 0: 0.9 on cuda, off on cpu
  int graph_max_batch = -1;            // < 0: 256 on cuda, 0 (eager) on cpu
  int kv_block_size = 16;
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;
  std::string scheduler_policy = "decode_priority";
  int64_t long_prefill_token_threshold = 0;
  int threads = 0;
};

// The flags of EngineArgs on one subcommand.
class EngineFlags {
 public:
  // `kv_blocks_help`: what --num-kv-blocks 0 means for this subcommand.
  EngineFlags(CLI::App* app, EngineArgs* args, const std::string& kv_blocks_help);
  // False (after printing why) when --model/--config are both missing or a file-owned flag is
  // given with --config.
  bool check(std::ostream& err) const;
  bool cluster() const { return config_->count() > 0; }
  // The first engine flag given on the command line ("" when none): what a client of a
  // running server (generate --endpoint) may not set.
  std::string given_engine_flag() const;

 private:
  EngineArgs* args_;
  CLI::Option* model_ = nullptr;
  CLI::Option* config_ = nullptr;
  // Each flag the cluster file decides, with its key there ("!why": no key, and why).
  std::vector<std::pair<CLI::Option*, const char*>> file_owned_;
};

struct EngineRunOptions {
  bool collect_moe_metrics = false;
  // Before any weights load (on the coordinator only, for a cluster): the engine's model and
  // layout are known. An error ends the run cleanly; a positive result caps the KV blocks per
  // dp group (one process: the cache size unless --num-kv-blocks or --gpu-memory-utilization
  // says otherwise); 0: no cap.
  std::function<Result<int64_t>(const coordinator::serve::ServerInfo&, int kv_block_size)> prepare;
  // Workers of a cluster ignore SIGINT/SIGTERM: the coordinator stops them once it has drained
  // (serve, bench). Otherwise they keep the default handlers.
  bool workers_ignore_signals = false;
};

using EngineDriver =
    std::function<Status(coordinator::Engine&, const coordinator::serve::ServerInfo&)>;

// Builds the engine the args describe, runs `drive` over it (on the coordinator), and returns
// the process exit code; errors are printed once.
int run_engine(const EngineArgs& args, const EngineRunOptions& options, const EngineDriver& drive);

}  // namespace sw::cli

// ClusterConfig: the YAML cluster file (schema v1) as plain structs, validated once. Every
// error names the file, the key path (e.g. pools.decode.tp) and what was expected.
// Add a key: a field here, its parsing and validation in cluster_config.cpp, a line in the
// docs/configuration.md's schema table and in launch/configs/example.yaml.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "comm/options.h"
#include "common/status.h"
#include "kernels/backend.h"
#include "moe/expert_ffn.h"

namespace sw::parallel {

enum class PoolKind { kMixed, kPrefill, kDecode };
const char* pool_kind_name(PoolKind k);
enum class MoeMode {
  kEp,
  kTp
};  // experts whole over the stage's ranks | each expert split over tp

struct PoolSpec {
  PoolKind kind = PoolKind::kMixed;
  int instances = 1;
  int tp = 1;
  int pp = 1;
  int dp = 1;
  MoeMode moe = MoeMode::kEp;
  int ranks_per_instance() const { return tp * pp * dp; }
  int ranks() const { return instances * ranks_per_instance(); }
};
const char* moe_mode_name(MoeMode m);
// "prefill 2 x (tp 2 x pp 1 x dp 1, moe ep)": how plans and the serve API name a pool.
std::string pool_text(const PoolSpec& p);
// {"kind", "instances", "tp", "pp", "dp", "moe"}: the plan JSON's and the serve info's pools.
nlohmann::json pool_to_json(const PoolSpec& p);
// The inverse; unknown kinds or moe modes and counts < 1 are errors naming `where`.
Result<PoolSpec> pool_from_json(const nlohmann::json& j, const std::string& where);

struct ModelSection {
  std::string path;                  // preset name or folder
  std::string load_format = "auto";  // auto | safetensors | dummy
  std::string dtype = "float32";     // float32 | bfloat16 | float16
  uint64_t dummy_seed = 0;
};

struct RuntimeSection {
  std::string device = "cpu";  // cpu | cuda
  int kv_block_size = 16;
  double gpu_memory_utilization = 0.9;
  double device_memory_gib = 0;  // 0: 80 GiB for cuda (H100), 16 GiB for cpu
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;
  int64_t max_model_len = 0;  // 0: the model's max_position_embeddings
  int64_t num_kv_blocks = 0;  // KV blocks per dp group of an instance; 0: from the memory plan
};

struct SchedulerSection {
  std::string policy = "decode_priority";    // decode_priority | fcfs (coordinator/scheduler.h)
  int64_t long_prefill_token_threshold = 0;  // most tokens of one prefill chunk; 0: no cap
};

struct MoeSection {
  std::optional<double> capacity_factor;                          // nullopt: dropless
  kernels::DropPolicy drop_policy = kernels::DropPolicy::kOrder;  // order | priority (max|sum)
  // What priority scores by: router probabilities (V-MoE, default) | combine weights.
  moe::PriorityScore priority_score = moe::PriorityScore::kRouter;
};

// Prefill/decode pools (coordinator/scheduler.h, worker/kv_transfer_agent.h).
struct DisaggregationSection {
  double kv_transfer_timeout_s = 30;              // cluster.kv_transfer_timeout_s
  std::string on_transfer_failure = "recompute";  // recompute | fail
  // Address a rank's KV transport binds and advertises: auto (loopback on one host, a
  // reachable address over several: comm/host_address.h), hostname, or an address.
  std::string kv_host = "auto";
  // curve: KV parts authenticated and encrypted (only the job's ranks send, and only to the
  // rank named); none: in the clear, for a trusted network, ~3x the bandwidth on a CPU core.
  std::string kv_security = "curve";
  // Fault injection, for tests only: transfers to `fault_decode_rank` are dropped or stalled.
  std::string fault_mode = "none";  // none | drop | stall
  int fault_decode_rank = -1;
  double fault_stall_s = 0;
  int fault_count = 0;  // transfers affected (per sending rank); 0: every one
};

struct ClusterConfig {
  std::string source;  // file path, for messages
  ModelSection model;
  RuntimeSection runtime;
  SchedulerSection scheduler;
  comm::CommOptions comm;       // cluster: ranks_per_node, comm_backend, all_to_all, timeout_s, ...
  std::vector<PoolSpec> pools;  // either one kMixed, or kPrefill then kDecode
  MoeSection moe;
  DisaggregationSection disaggregation;
  bool disaggregated() const;  // prefill and decode pools
  int world_size() const;      // 1 (coordinator) + ranks of every pool
};

Result<ClusterConfig> parse_cluster_config(const std::string& yaml_text, const std::string& source);
Result<ClusterConfig> load_cluster_config(const std::string& path);

}  // namespace sw::parallel

// CommOptions: every knob of the communication layer in one plain struct, filled from the
// cluster YAML (a later issue), command-line flags and SHARDWISE_* env overrides.
// Add a knob: a field here, its env name in apply_env_overrides(), a check in validate().
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sw::comm {

// cluster.comm_backend: auto|mpi|nccl (see choose_backend in backend_policy.h).
enum class CommBackend { kAuto, kMpi, kNccl };
// cluster.all_to_all: flat|hierarchical|auto (auto asks the cost model).
enum class AllToAllAlgorithm { kFlat, kHierarchical, kAuto };

// One link class of the alpha-beta model: a message of b bytes costs alpha + b / beta.
struct LinkCost {
  double alpha_s = 0;           // per-message latency, seconds
  double beta_bytes_per_s = 1;  // bandwidth, bytes per second
};

// Where a coordinator binds when cluster.control_endpoint is left empty on one host.
constexpr const char* kLoopbackControlEndpoint = "tcp://127.0.0.1:*";

struct CommOptions {
  CommBackend backend = CommBackend::kAuto;
  AllToAllAlgorithm all_to_all = AllToAllAlgorithm::kAuto;
  double timeout_s = 300;  // deadline of every blocking wait
  int ranks_per_node = 0;  // 0: detect with MPI_COMM_TYPE_SHARED; > 0: emulate nodes
  // Defaults: NVLink 4 inside a node, 400 Gb/s InfiniBand NDR across nodes.
  LinkCost intra_node{3e-6, 150e9};
  LinkCost inter_node{8e-6, 45e9};
  // "" (default): loopback with a free port on one host, an address other hosts can reach
  // over several (comm/host_address.h); or tcp://host:port, tcp://host:*, ipc://path.
  std::string control_endpoint;
  // An interface name or address for the coordinator's (and the KV transports') endpoints when
  // the job spans hosts; "": the address of the host's name.
  std::string control_interface;
  double heartbeat_interval_s = 1.0;
  int heartbeat_miss_count = 3;  // a peer silent for interval * miss_count is lost
  // Largest control message (header + payload). Also set as ZMQ_MAXMSGSIZE on every control
  // socket, so a larger frame drops its connection before it is buffered.
  size_t control_max_message_bytes = size_t{16} << 20;
};

const char* comm_backend_name(CommBackend b);
const char* all_to_all_algorithm_name(AllToAllAlgorithm a);
Result<CommBackend> parse_comm_backend(std::string_view s);
Result<AllToAllAlgorithm> parse_all_to_all_algorithm(std::string_view s);

// Reads SHARDWISE_COMM_BACKEND, SHARDWISE_ALL_TO_ALL, SHARDWISE_COMM_TIMEOUT_S,
// SHARDWISE_RANKS_PER_NODE, SHARDWISE_CONTROL_ENDPOINT, SHARDWISE_CONTROL_INTERFACE,
// SHARDWISE_HEARTBEAT_INTERVAL_S, SHARDWISE_HEARTBEAT_MISS_COUNT over the values in `opts`.
Status apply_env_overrides(CommOptions* opts);
// Errors name the cluster.* key that is wrong. Durations and counts are bounded by
// common/limits.h (timeout_s <= kMaxTimeoutS, heartbeat_interval_s in
// [kMinHeartbeatIntervalS, kMaxHeartbeatIntervalS], interval x miss_count <= kMaxTimeoutS).
Status validate(const CommOptions& opts);
// What a job of `num_processes` separate processes needs on top of validate(): a control
// endpoint other processes can reach (inproc:// works only inside one process).
Status validate_multi_process(const CommOptions& opts, int num_processes);

// Seconds as a steady_clock duration, clamped to [0, limits::kMaxTimeoutS] (NaN: 0). The
// clock counts int64 nanoseconds; an unchecked conversion of 1e10 s wraps to a negative
// duration, and a deadline in the past times out at once.
std::chrono::steady_clock::duration steady_seconds(double s);

}  // namespace sw::comm

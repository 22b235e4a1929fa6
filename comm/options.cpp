// CommOptions parsing, env overrides and validation.
#include "comm/options.h"

#include <utility>

#include "common/env.h"
#include "common/limits.h"

namespace sw::comm {

const char* comm_backend_name(CommBackend b) {
  switch (b) {
    case CommBackend::kAuto: return "auto";
    case CommBackend::kMpi: return "mpi";
    case CommBackend::kNccl: return "nccl";
  }
  return "?";
}

const char* all_to_all_algorithm_name(AllToAllAlgorithm a) {
  switch (a) {
    case AllToAllAlgorithm::kFlat: return "flat";
    case AllToAllAlgorithm::kHierarchical: return "hierarchical";
    case AllToAllAlgorithm::kAuto: return "auto";
  }
  return "?";
}

Result<CommBackend> parse_comm_backend(std::string_view s) {
  if (s == "auto") return CommBackend::kAuto;
  if (s == "mpi") return CommBackend::kMpi;
  if (s == "nccl") return CommBackend::kNccl;
  return invalid_argument("cluster.comm_backend: '{}' is not one of auto|mpi|nccl", s);
}

Result<AllToAllAlgorithm> parse_all_to_all_algorithm(std::string_view s) {
  if (s == "flat") return AllToAllAlgorithm::kFlat;
  if (s == "hierarchical") return AllToAllAlgorithm::kHierarchical;
  if (s == "auto") return AllToAllAlgorithm::kAuto;
  return invalid_argument("cluster.all_to_all: '{}' is not one of flat|hierarchical|auto", s);
}

Status apply_env_overrides(CommOptions* opts) {
  if (auto v = env_override("SHARDWISE_COMM_BACKEND")) {
    SW_ASSIGN_OR_RETURN(opts->backend, parse_comm_backend(*v));
  }
  if (auto v = env_override("SHARDWISE_ALL_TO_ALL")) {
    SW_ASSIGN_OR_RETURN(opts->all_to_all, parse_all_to_all_algorithm(*v));
  }
  SW_ASSIGN_OR_RETURN(auto timeout, env_override_double("SHARDWISE_COMM_TIMEOUT_S"));
  if (timeout) opts->timeout_s = *timeout;
  SW_ASSIGN_OR_RETURN(auto rpn, env_override_int("SHARDWISE_RANKS_PER_NODE"));
  if (rpn) {
    if (*rpn < 0 || *rpn > limits::kMaxWorldSize)
      return invalid_argument(
          "environment variable SHARDWISE_RANKS_PER_NODE={}: expected an integer in [0, {}]", *rpn,
          limits::kMaxWorldSize);
    opts->ranks_per_node = static_cast<int>(*rpn);
  }
  if (auto v = env_override("SHARDWISE_CONTROL_ENDPOINT")) opts->control_endpoint = *v;
  if (auto v = env_override("SHARDWISE_CONTROL_INTERFACE")) opts->control_interface = *v;
  SW_ASSIGN_OR_RETURN(auto hb, env_override_double("SHARDWISE_HEARTBEAT_INTERVAL_S"));
  if (hb) opts->heartbeat_interval_s = *hb;
  SW_ASSIGN_OR_RETURN(auto miss, env_override_int("SHARDWISE_HEARTBEAT_MISS_COUNT"));
  if (miss) {
    if (!std::in_range<int>(*miss))
      return invalid_argument(
          "environment variable SHARDWISE_HEARTBEAT_MISS_COUNT={}: expected an integer >= 1",
          *miss);
    opts->heartbeat_miss_count = static_cast<int>(*miss);
  }
  return validate(*opts);
}

Status validate(const CommOptions& o) {
  if (!(o.timeout_s > 0 && o.timeout_s <= limits::kMaxTimeoutS))
    return invalid_argument("cluster.timeout_s: {} must be in (0, {:g}] seconds", o.timeout_s,
                            limits::kMaxTimeoutS);
  if (o.ranks_per_node < 0 || o.ranks_per_node > limits::kMaxWorldSize)
    return invalid_argument("cluster.ranks_per_node: {} must be in [0, {}] (0 = detect)",
                            o.ranks_per_node, limits::kMaxWorldSize);
  for (const auto& [key, link] :
       {std::pair{"intra_node", o.intra_node}, std::pair{"inter_node", o.inter_node}}) {
    if (!(link.alpha_s >= 0) || !(link.beta_bytes_per_s > 0))
      return invalid_argument("cluster.{}: alpha {} s must be >= 0 and beta {} B/s > 0", key,
                              link.alpha_s, link.beta_bytes_per_s);
  }
  if (!o.control_endpoint.empty() && o.control_endpoint.rfind("tcp://", 0) != 0 &&
      o.control_endpoint.rfind("ipc://", 0) != 0 && o.control_endpoint.rfind("inproc://", 0) != 0)
    return invalid_argument(
        "cluster.control_endpoint: '{}' must start with tcp://, ipc:// or inproc:// (or be left "
        "unset)",
        o.control_endpoint);
  if (o.control_interface.size() > 255 ||
      o.control_interface.find_first_of(" /;*") != std::string::npos)
    return invalid_argument(
        "cluster.control_interface: '{}' must be an interface name or an address (no port)",
        o.control_interface);
  if (!(o.heartbeat_interval_s >= limits::kMinHeartbeatIntervalS &&
        o.heartbeat_interval_s <= limits::kMaxHeartbeatIntervalS))
    return invalid_argument("cluster.heartbeat_interval_s: {} must be in [{:g}, {:g}] seconds",
                            o.heartbeat_interval_s, limits::kMinHeartbeatIntervalS,
                            limits::kMaxHeartbeatIntervalS);
  if (o.heartbeat_miss_count < 1)
    return invalid_argument("cluster.heartbeat_miss_count: {} must be >= 1",
                            o.heartbeat_miss_count);
  if (o.heartbeat_interval_s * o.heartbeat_miss_count > limits::kMaxTimeoutS)
    return invalid_argument(
        "cluster.heartbeat_miss_count: {} heartbeats of {} s make {:g} s before a peer counts as "
        "lost, more than the limit of {:g} s",
        o.heartbeat_miss_count, o.heartbeat_interval_s,
        o.heartbeat_interval_s * o.heartbeat_miss_count, limits::kMaxTimeoutS);
  if (o.control_max_message_bytes < 64 || o.control_max_message_bytes > (size_t{1} << 30))
    return invalid_argument("control_max_message_bytes: {} must be in [64, {}]",
                            o.control_max_message_bytes, size_t{1} << 30);
  return Status();
}

Status validate_multi_process(const CommOptions& o, int num_processes) {
  if (num_processes > 1 && o.control_endpoint.rfind("inproc://", 0) == 0)
    return invalid_argument(
        "cluster.control_endpoint: '{}' only connects threads of one process, but this job runs "
        "{} processes (the coordinator and its workers); use tcp://host:port or ipc://path",
        o.control_endpoint, num_processes);
  return Status();
}

std::chrono::steady_clock::duration steady_seconds(double s) {
  if (!(s > 0)) return std::chrono::steady_clock::duration::zero();
  if (s > limits::kMaxTimeoutS) s = limits::kMaxTimeoutS;
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

}  // namespace sw::comm

// Cluster YAML (schema v1) -> ClusterConfig. A small strict walker over yaml-cpp nodes: every
// mapping lists its allowed keys, so a typo is an error naming the file and dotted key path.
// Add a key: its parse call in the section's function below (and see cluster_config.h).
#include "parallel/cluster_config.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <map>

#include "common/json_fields.h"
#include "common/limits.h"
#include "common/logging.h"
#include "common/text_file.h"

namespace sw::parallel {

const char* pool_kind_name(PoolKind k) {
  switch (k) {
    case PoolKind::kMixed: return "mixed";
    case PoolKind::kPrefill: return "prefill";
    case PoolKind::kDecode: return "decode";
  }
  return "?";
}

const char* moe_mode_name(MoeMode m) { return m == MoeMode::kTp ? "tp" : "ep"; }

std::string pool_text(const PoolSpec& p) {
  return fmt::format("{} {} x (tp {} x pp {} x dp {}, moe {})", pool_kind_name(p.kind), p.instances,
                     p.tp, p.pp, p.dp, moe_mode_name(p.moe));
}

nlohmann::json pool_to_json(const PoolSpec& p) {
  return {{"kind", pool_kind_name(p.kind)},
          {"instances", p.instances},
          {"tp", p.tp},
          {"pp", p.pp},
          {"dp", p.dp},
          {"moe", moe_mode_name(p.moe)}};
}

Result<PoolSpec> pool_from_json(const nlohmann::json& j, const std::string& where) {
  JsonFields f(j, where);
  PoolSpec s;
  SW_ASSIGN_OR_RETURN(std::string kind, f.required<std::string>("kind"));
  if (kind == "mixed")
    s.kind = PoolKind::kMixed;
  else if (kind == "prefill")
    s.kind = PoolKind::kPrefill;
  else if (kind == "decode")
    s.kind = PoolKind::kDecode;
  else
    return invalid_argument("{}: pool kind '{}' is not mixed, prefill or decode", where,
                            printable(kind, 64));
  SW_ASSIGN_OR_RETURN(std::string moe, f.required<std::string>("moe"));
  if (moe != "ep" && moe != "tp")
    return invalid_argument("{}: pool {} moe '{}' is not ep or tp", where, kind,
                            printable(moe, 64));
  s.moe = moe == "tp" ? MoeMode::kTp : MoeMode::kEp;
  const int max = limits::kMaxWorldSize;
  SW_ASSIGN_OR_RETURN(s.instances, f.required_in<int>("instances", 1, max));
  SW_ASSIGN_OR_RETURN(s.tp, f.required_in<int>("tp", 1, max));
  SW_ASSIGN_OR_RETURN(s.pp, f.required_in<int>("pp", 1, max));
  SW_ASSIGN_OR_RETURN(s.dp, f.required_in<int>("dp", 1, max));
  return s;
}

int ClusterConfig::world_size() const {
  int n = 1;
  for (const PoolSpec& p : pools) n += p.ranks();
  return n;
}

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string child_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// How a value reads in an error message: "two", null, a list, a mapping.
std::string describe(const YAML::Node& n) {
  if (!n || n.IsNull()) return "null";
  if (n.IsScalar()) return fmt::format("\"{}\"", n.Scalar());
  if (n.IsSequence()) return "a list";
  return "a mapping";
}

// yaml-cpp 0.7 keeps every pair of a mapping that repeats a key and answers lookups with the
// first, so `tp: 2 ... tp: 8` would silently run with 2. Walks the whole document (aliases
// expanded, at most limits::kMaxYamlNodes nodes) and reports the first repeated key.
Status check_duplicate_keys(const std::string& source, const YAML::Node& node,
                            const std::string& path, int* budget) {
  if (--*budget < 0)
    return invalid_argument(
        "{}: more than {} YAML nodes (counting each use of an alias); a cluster file is small",
        source, limits::kMaxYamlNodes);
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i)
      SW_RETURN_IF_ERROR(
          check_duplicate_keys(source, node[i], fmt::format("{}[{}]", path, i), budget));
  } else if (node.IsMap()) {
    std::map<std::string, int> seen;  // scalar key -> its line
    for (const auto& kv : node) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : describe(kv.first);
      const std::string key_path = child_path(path, key);
      if (kv.first.IsScalar()) {
        auto [it, first] = seen.emplace(key, kv.first.Mark().line);
        if (!first)
          return invalid_argument(
              "{}: key '{}': duplicate key (first at line {}, again at line {})", source, key_path,
              it->second + 1, kv.first.Mark().line + 1);
      }
      SW_RETURN_IF_ERROR(check_duplicate_keys(source, kv.second, key_path, budget));
    }
  }
  return Status();
}

// One mapping of the file: knows its path and allowed keys, parses typed values.
class Section {
 public:
  Section(const std::string& source, YAML::Node node, std::string path)
      : source_(source), node_(std::move(node)), path_(std::move(path)) {}

  Status error(const std::string& key, const std::string& what) const {
    return invalid_argument("{}: key '{}': {}", source_, child_path(path_, key), what);
  }

  // The node must be a mapping (or null/absent: an empty section) with only `allowed` keys.
  Status check_keys(const std::vector<std::string>& allowed) const {
    if (!node_ || node_.IsNull()) return Status();
    if (!node_.IsMap()) {
      std::string where = path_.empty() ? "the document" : fmt::format("key '{}'", path_);
      return invalid_argument("{}: {}: expected a mapping with keys {}, got {}", source_, where,
                              join(allowed), describe(node_));
    }
    for (const auto& kv : node_) {
      std::string key = kv.first.IsScalar() ? kv.first.Scalar() : describe(kv.first);
      bool known = false;
      for (const std::string& a : allowed) known = known || a == key;
      if (!known) return error(key, fmt::format("unknown key (expected {})", join(allowed)));
    }
    return Status();
  }

  bool has(const std::string& key) const { return node_ && node_.IsMap() && node_[key]; }
  // The value of a key, or a null node when absent (check has() to tell absent from null).
  YAML::Node child(const std::string& key) const { return has(key) ? node_[key] : YAML::Node(); }
  Section section(const std::string& key) const {
    return Section(source_, child(key), child_path(path_, key));
  }

  // Integers in [min, max] (max also clipped to T's range); absent keys leave *out unchanged.
  template <typename T>
  Status integer(const std::string& key, T* out, int64_t min, int64_t max,
                 const std::string& expected) const {
    if (!has(key)) return Status();
    YAML::Node v = child(key);
    int64_t x = 0;
    if (!v.IsScalar() || !parse_int(v.Scalar(), &x) || x < min || x > max || !std::in_range<T>(x))
      return error(key, fmt::format("expected {}, got {}", expected, describe(v)));
    *out = static_cast<T>(x);
    return Status();
  }
  Status int_in(const std::string& key, int* out, int min, int max) const {
    return integer(key, out, min, max, fmt::format("an integer in [{}, {}]", min, max));
  }
  Status int_in(const std::string& key, int64_t* out, int64_t min, int64_t max) const {
    return integer(key, out, min, max, fmt::format("an integer in [{}, {}]", min, max));
  }

  // Numbers; `ok` says whether the value is in range, `expected` says what is.
  template <typename Pred>
  Status number(const std::string& key, double* out, Pred ok, const std::string& expected) const {
    if (!has(key)) return Status();
    YAML::Node v = child(key);
    double x = 0;
    if (!v.IsScalar() || !parse_double(v.Scalar(), &x) || !ok(x))
      return error(key, fmt::format("expected {}, got {}", expected, describe(v)));
    *out = x;
    return Status();
  }

  Status string(const std::string& key, std::string* out) const {
    if (!has(key)) return Status();
    YAML::Node v = child(key);
    if (!v.IsScalar() || v.IsNull() || v.Scalar().empty())
      return error(key, fmt::format("expected a string, got {}", describe(v)));
    *out = v.Scalar();
    return Status();
  }

  Status choice(const std::string& key, std::string* out,
                const std::vector<std::string>& options) const {
    if (!has(key)) return Status();
    YAML::Node v = child(key);
    bool known = false;
    if (v.IsScalar())
      for (const std::string& o : options) known = known || o == v.Scalar();
    if (!known)
      return error(key, fmt::format("expected one of {}, got {}", join(options), describe(v)));
    *out = v.Scalar();
    return Status();
  }

  const std::string& path() const { return path_; }
  const std::string& source() const { return source_; }

 private:
  static bool parse_int(const std::string& s, int64_t* out) {
    const char* b = s.data();
    const char* e = s.data() + s.size();
    if (b != e && *b == '+') ++b;
    auto r = std::from_chars(b, e, *out);
    return r.ec == std::errc() && r.ptr == e && b != e;
  }
  static bool parse_double(const std::string& s, double* out) {
    if (s.empty()) return false;
    char* end = nullptr;
    *out = std::strtod(s.c_str(), &end);
    return end == s.c_str() + s.size() && std::isfinite(*out);
  }

  const std::string& source_;
  YAML::Node node_;
  std::string path_;
};

Status parse_model(const Section& s, ModelSection* m) {
  SW_RETURN_IF_ERROR(s.check_keys({"path", "load_format", "dtype", "dummy_seed"}));
  if (!s.has("path")) return s.error("path", "required: a preset name or a model folder");
  SW_RETURN_IF_ERROR(s.string("path", &m->path));
  SW_RETURN_IF_ERROR(s.choice("load_format", &m->load_format, {"auto", "safetensors", "dummy"}));
  SW_RETURN_IF_ERROR(s.choice("dtype", &m->dtype, {"float32", "bfloat16", "float16"}));
  return s.integer("dummy_seed", &m->dummy_seed, 0, std::numeric_limits<int64_t>::max(),
                   "an integer >= 0");
}

Status parse_runtime(const Section& s, RuntimeSection* r) {
  SW_RETURN_IF_ERROR(
      s.check_keys({"device", "kv_block_size", "gpu_memory_utilization", "device_memory_gib",
                    "max_num_seqs", "max_num_batched_tokens", "max_model_len", "num_kv_blocks"}));
  SW_RETURN_IF_ERROR(s.choice("device", &r->device, {"cpu", "cuda"}));
  SW_RETURN_IF_ERROR(s.int_in("kv_block_size", &r->kv_block_size, 1, limits::kMaxKvBlockSize));
  SW_RETURN_IF_ERROR(s.number(
      "gpu_memory_utilization", &r->gpu_memory_utilization,
      [](double x) { return x > 0 && x <= 1; }, "a number in (0, 1]"));
  SW_RETURN_IF_ERROR(s.number(
      "device_memory_gib", &r->device_memory_gib,
      [](double x) { return x >= 0 && x <= limits::kMaxDeviceMemoryGib; },
      fmt::format("a number of GiB in [0, {:g}] (0: 80 for cuda, 16 for cpu)",
                  limits::kMaxDeviceMemoryGib)));
  SW_RETURN_IF_ERROR(s.int_in("max_num_seqs", &r->max_num_seqs, 1, limits::kMaxNumSeqs));
  SW_RETURN_IF_ERROR(s.int_in("max_num_batched_tokens", &r->max_num_batched_tokens, 1,
                              limits::kMaxNumBatchedTokens));
  SW_RETURN_IF_ERROR(s.integer(
      "num_kv_blocks", &r->num_kv_blocks, 0, limits::kMaxKvBlocks,
      fmt::format("an integer in [0, {}] (0: what the memory plan leaves)", limits::kMaxKvBlocks)));
  return s.integer("max_model_len", &r->max_model_len, 0, limits::kMaxPositionEmbeddings,
                   fmt::format("an integer in [0, {}] (0: the model's max_position_embeddings)",
                               limits::kMaxPositionEmbeddings));
}

Status parse_scheduler(const Section& s, SchedulerSection* sch) {
  SW_RETURN_IF_ERROR(s.check_keys({"policy", "long_prefill_token_threshold"}));
  SW_RETURN_IF_ERROR(
      s.integer("long_prefill_token_threshold", &sch->long_prefill_token_threshold, 0,
                limits::kMaxNumBatchedTokens,
                fmt::format("an integer in [0, {}] (0: no cap)", limits::kMaxNumBatchedTokens)));
  return s.choice("policy", &sch->policy, {"decode_priority", "fcfs"});
}

Status parse_disaggregation(const Section& s, DisaggregationSection* d) {
  SW_RETURN_IF_ERROR(
      s.check_keys({"on_transfer_failure", "kv_host", "kv_security", "fault_injection"}));
  SW_RETURN_IF_ERROR(
      s.choice("on_transfer_failure", &d->on_transfer_failure, {"recompute", "fail"}));
  SW_RETURN_IF_ERROR(s.choice("kv_security", &d->kv_security, {"curve", "none"}));
  SW_RETURN_IF_ERROR(s.string("kv_host", &d->kv_host));
  if (d->kv_host.empty() || d->kv_host.find_first_of(" :/") != std::string::npos)
    return s.error("kv_host", fmt::format("expected auto, hostname, or an address or host name "
                                          "without port, got \"{}\"",
                                          d->kv_host));
  const Section f = s.section("fault_injection");
  SW_RETURN_IF_ERROR(f.check_keys({"mode", "decode_rank", "stall_s", "count"}));
  SW_RETURN_IF_ERROR(f.integer("count", &d->fault_count, 0, 1 << 30,
                               "an integer >= 0 (0: every transfer to that rank)"));
  SW_RETURN_IF_ERROR(f.choice("mode", &d->fault_mode, {"none", "drop", "stall"}));
  SW_RETURN_IF_ERROR(f.integer("decode_rank", &d->fault_decode_rank, 0, limits::kMaxWorldSize,
                               fmt::format("a world rank in [0, {}]", limits::kMaxWorldSize)));
  return f.number(
      "stall_s", &d->fault_stall_s, [](double x) { return x >= 0 && x <= limits::kMaxTimeoutS; },
      fmt::format("a number of seconds in [0, {:g}]", limits::kMaxTimeoutS));
}

Status parse_link(const Section& s, comm::LinkCost* link) {
  SW_RETURN_IF_ERROR(s.check_keys({"alpha_us", "beta_gbps"}));
  double alpha_us = link->alpha_s * 1e6, beta_gbps = link->beta_bytes_per_s / 1e9;
  SW_RETURN_IF_ERROR(s.number(
      "alpha_us", &alpha_us, [](double x) { return x >= 0; }, "a latency in microseconds >= 0"));
  SW_RETURN_IF_ERROR(s.number(
      "beta_gbps", &beta_gbps, [](double x) { return x > 0; }, "a bandwidth in GB/s > 0"));
  link->alpha_s = alpha_us * 1e-6;
  link->beta_bytes_per_s = beta_gbps * 1e9;
  return Status();
}

Status parse_cluster(const Section& s, comm::CommOptions* c, DisaggregationSection* d) {
  SW_RETURN_IF_ERROR(
      s.check_keys({"ranks_per_node", "comm_backend", "all_to_all", "timeout_s", "control_endpoint",
                    "control_interface", "heartbeat_interval_s", "heartbeat_miss_count",
                    "intra_node", "inter_node", "kv_transfer_timeout_s"}));
  SW_RETURN_IF_ERROR(s.number(
      "kv_transfer_timeout_s", &d->kv_transfer_timeout_s,
      [](double x) { return x > 0 && x <= limits::kMaxTimeoutS; },
      fmt::format("a number of seconds in (0, {:g}]", limits::kMaxTimeoutS)));
  SW_RETURN_IF_ERROR(s.integer(
      "ranks_per_node", &c->ranks_per_node, 0, limits::kMaxWorldSize,
      fmt::format("an integer in [0, {}] (0: detect nodes with MPI)", limits::kMaxWorldSize)));
  std::string text;
  if (s.has("comm_backend")) {
    SW_RETURN_IF_ERROR(s.choice("comm_backend", &text, {"auto", "mpi", "nccl"}));
    SW_ASSIGN_OR_RETURN(c->backend, comm::parse_comm_backend(text));
  }
  if (s.has("all_to_all")) {
    SW_RETURN_IF_ERROR(s.choice("all_to_all", &text, {"flat", "hierarchical", "auto"}));
    SW_ASSIGN_OR_RETURN(c->all_to_all, comm::parse_all_to_all_algorithm(text));
  }
  // Durations are bounded here, before anything converts them to std::chrono.
  SW_RETURN_IF_ERROR(s.number(
      "timeout_s", &c->timeout_s, [](double x) { return x > 0 && x <= limits::kMaxTimeoutS; },
      fmt::format("a number of seconds in (0, {:g}]", limits::kMaxTimeoutS)));
  SW_RETURN_IF_ERROR(s.string("control_endpoint", &c->control_endpoint));
  SW_RETURN_IF_ERROR(s.string("control_interface", &c->control_interface));
  SW_RETURN_IF_ERROR(s.number(
      "heartbeat_interval_s", &c->heartbeat_interval_s,
      [](double x) {
        return x >= limits::kMinHeartbeatIntervalS && x <= limits::kMaxHeartbeatIntervalS;
      },
      fmt::format("a number of seconds in [{:g}, {:g}]", limits::kMinHeartbeatIntervalS,
                  limits::kMaxHeartbeatIntervalS)));
  SW_RETURN_IF_ERROR(s.int_in("heartbeat_miss_count", &c->heartbeat_miss_count, 1,
                              static_cast<int>(limits::kMaxTimeoutS)));
  SW_RETURN_IF_ERROR(parse_link(s.section("intra_node"), &c->intra_node));
  SW_RETURN_IF_ERROR(parse_link(s.section("inter_node"), &c->inter_node));
  // comm's own checks (endpoint scheme, ...) name the cluster.* key; add the file.
  Status st = comm::validate(*c);
  if (!st.ok()) return invalid_argument("{}: {}", s.source(), st.message());
  return Status();
}

Status parse_pool(const Section& s, PoolKind kind, PoolSpec* p) {
  p->kind = kind;
  SW_RETURN_IF_ERROR(s.check_keys({"instances", "tp", "pp", "dp", "moe"}));
  for (auto [key, out] : {std::pair{"instances", &p->instances}, std::pair{"tp", &p->tp},
                          std::pair{"pp", &p->pp}, std::pair{"dp", &p->dp}})
    SW_RETURN_IF_ERROR(s.int_in(key, out, 1, limits::kMaxWorldSize));
  // Each factor is bounded, so the product fits in int64 (and int ranks() cannot overflow).
  const int64_t ranks = int64_t{p->instances} * p->tp * p->pp * p->dp;
  if (ranks > limits::kMaxWorldSize)
    return invalid_argument(
        "{}: key '{}': instances {} x tp {} x pp {} x dp {} = {} ranks, more than the limit of {} "
        "ranks in one job",
        s.source(), s.path(), p->instances, p->tp, p->pp, p->dp, ranks, limits::kMaxWorldSize);
  std::string moe = "ep";
  SW_RETURN_IF_ERROR(s.choice("moe", &moe, {"ep", "tp"}));
  p->moe = moe == "tp" ? MoeMode::kTp : MoeMode::kEp;
  return Status();
}

Status parse_pools(const Section& s, std::vector<PoolSpec>* pools) {
  SW_RETURN_IF_ERROR(s.check_keys({"mixed", "prefill", "decode"}));
  const bool mixed = s.has("mixed"), prefill = s.has("prefill"), decode = s.has("decode");
  if (mixed && (prefill || decode))
    return invalid_argument(
        "{}: key 'pools': give either 'mixed' alone or both 'prefill' and 'decode', not "
        "'mixed' together with '{}'",
        s.source(), prefill ? "prefill" : "decode");
  if (!mixed && !prefill && !decode)
    return invalid_argument(
        "{}: key 'pools': no pool given; expected either 'mixed' or both 'prefill' and 'decode'",
        s.source());
  if (prefill != decode)
    return s.error(prefill ? "decode" : "prefill",
                   fmt::format("missing: a '{}' pool needs a '{}' pool too (or use 'mixed')",
                               prefill ? "prefill" : "decode", prefill ? "decode" : "prefill"));
  pools->clear();
  int64_t world = 1;
  for (PoolKind k : {PoolKind::kMixed, PoolKind::kPrefill, PoolKind::kDecode}) {
    const char* name = pool_kind_name(k);
    if (!s.has(name)) continue;
    PoolSpec p;
    SW_RETURN_IF_ERROR(parse_pool(s.section(name), k, &p));
    pools->push_back(p);
    world += p.ranks();
  }
  if (world > limits::kMaxWorldSize)
    return invalid_argument("{}: key 'pools': {} ranks in all, more than the limit of {}",
                            s.source(), world, limits::kMaxWorldSize);
  return Status();
}

Status parse_moe(const Section& s, MoeSection* m) {
  SW_RETURN_IF_ERROR(
      s.check_keys({"capacity_factor", "drop_policy", "priority", "priority_score"}));
  if (s.has("capacity_factor") && !s.child("capacity_factor").IsNull()) {
    double c = 0;
    SW_RETURN_IF_ERROR(s.number(
        "capacity_factor", &c, [](double x) { return x > 0; },
        "a number > 0, or null for dropless"));
    m->capacity_factor = c;
  } else {
    m->capacity_factor.reset();
  }
  std::string policy = "order", priority = "max", score = "router";
  SW_RETURN_IF_ERROR(s.choice("drop_policy", &policy, {"order", "priority"}));
  SW_RETURN_IF_ERROR(s.choice("priority", &priority, {"max", "sum"}));
  SW_RETURN_IF_ERROR(s.choice("priority_score", &score, {"router", "combine"}));
  for (const char* key : {"priority", "priority_score"})
    if (s.has(key) && policy != "priority")
      return s.error(key, "only meaningful with drop_policy: priority");
  m->priority_score =
      score == "combine" ? moe::PriorityScore::kCombine : moe::PriorityScore::kRouter;
  if (policy == "order")
    m->drop_policy = kernels::DropPolicy::kOrder;
  else
    m->drop_policy =
        priority == "sum" ? kernels::DropPolicy::kPrioritySum : kernels::DropPolicy::kPriorityMax;
  return Status();
}

}  // namespace

Result<ClusterConfig> parse_cluster_config(const std::string& yaml_text,
                                           const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return invalid_argument("{}: YAML syntax error at line {}, column {}: {}", source,
                            e.mark.line + 1, e.mark.column + 1, e.msg);
  } catch (const YAML::Exception& e) {
    return invalid_argument("{}: cannot read YAML: {}", source, e.what());
  }
  ClusterConfig c;
  c.source = source;
  if (!root || root.IsNull())
    return invalid_argument("{}: empty cluster file; expected the sections model and pools",
                            source);
  try {
    int budget = limits::kMaxYamlNodes;
    SW_RETURN_IF_ERROR(check_duplicate_keys(source, root, "", &budget));
    Section top(c.source, root, "");
    SW_RETURN_IF_ERROR(top.check_keys(
        {"version", "model", "runtime", "scheduler", "cluster", "pools", "moe", "disaggregation"}));
    int version = 1;
    SW_RETURN_IF_ERROR(top.integer("version", &version, 1, 1, "1 (the schema version)"));
    if (!top.has("model")) return top.error("model", "required section missing (model.path)");
    SW_RETURN_IF_ERROR(parse_model(top.section("model"), &c.model));
    SW_RETURN_IF_ERROR(parse_runtime(top.section("runtime"), &c.runtime));
    SW_RETURN_IF_ERROR(parse_scheduler(top.section("scheduler"), &c.scheduler));
    SW_RETURN_IF_ERROR(parse_cluster(top.section("cluster"), &c.comm, &c.disaggregation));
    if (!top.has("pools"))
      return top.error("pools", "required section missing (mixed, or prefill and decode)");
    SW_RETURN_IF_ERROR(parse_pools(top.section("pools"), &c.pools));
    SW_RETURN_IF_ERROR(parse_moe(top.section("moe"), &c.moe));
    SW_RETURN_IF_ERROR(parse_disaggregation(top.section("disaggregation"), &c.disaggregation));
    if (top.has("disaggregation") && !c.disaggregated())
      return top.error("disaggregation", "only meaningful with prefill and decode pools");
  } catch (const YAML::Exception& e) {  // defensive: malformed nodes yaml-cpp rejects lazily
    return invalid_argument("{}: cannot read YAML: {}", source, e.what());
  }
  // Environment wins over the file: SHARDWISE_COMM_BACKEND, SHARDWISE_ALL_TO_ALL,
  // SHARDWISE_COMM_TIMEOUT_S, SHARDWISE_RANKS_PER_NODE, SHARDWISE_CONTROL_ENDPOINT,
  // SHARDWISE_HEARTBEAT_INTERVAL_S, SHARDWISE_HEARTBEAT_MISS_COUNT (logged when used).
  Status env = comm::apply_env_overrides(&c.comm);
  if (!env.ok())
    return invalid_argument("{}: after SHARDWISE_* environment overrides: {}", source,
                            env.message());
  // A cluster file always describes a coordinator and at least one worker process.
  Status multi = comm::validate_multi_process(c.comm, c.world_size());
  if (!multi.ok()) return invalid_argument("{}: {}", source, multi.message());
  return c;
}

bool ClusterConfig::disaggregated() const {
  return std::any_of(pools.begin(), pools.end(),
                     [](const PoolSpec& p) { return p.kind != PoolKind::kMixed; });
}

Result<ClusterConfig> load_cluster_config(const std::string& path) {
  Result<std::string> text =
      read_text_file(path, limits::kMaxConfigFileBytes, "the cluster config file");
  if (!text.ok()) return text.status();
  return parse_cluster_config(*text, path);
}

}  // namespace sw::parallel

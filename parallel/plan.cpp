// Plan: rank-group queries, JSON (de)serialisation (the coordinator broadcasts it; `shardwise
// plan --json` prints it) and the text table of `shardwise plan`. Add a RankPlan field: write
// and read it in rank_to_json / rank_from_json and, if useful to people, a column in to_text.
#include "parallel/plan.h"

#include <fmt/format.h>

#include "parallel/rank_layout.h"

namespace sw::parallel {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

nlohmann::json range(int64_t b, int64_t e) { return nlohmann::json::array({b, e}); }

template <typename T>
void read_range(const nlohmann::json& j, const char* key, T* b, T* e) {
  const nlohmann::json& r = j.at(key);
  if (!r.is_array() || r.size() != 2)
    throw nlohmann::json::type_error::create(302, fmt::format("'{}' must be [begin, end]", key),
                                             &r);
  *b = r.at(0).get<T>();
  *e = r.at(1).get<T>();
}

nlohmann::json rank_to_json(const RankPlan& r) {
  nlohmann::json j = {{"rank", r.rank}, {"node", r.node}, {"coordinator", r.coord.coordinator}};
  if (r.coord.coordinator) return j;
  j["pool"] = r.coord.pool;
  j["instance"] = r.coord.instance;
  j["stage"] = r.coord.stage;
  j["dp"] = r.coord.dp;
  j["tp"] = r.coord.tp;
  j["layers"] = range(r.shard.layer_begin, r.shard.layer_end);
  j["has_embedding"] = r.shard.has_embedding;
  j["has_lm_head"] = r.shard.has_lm_head;
  j["q_heads"] = range(r.shard.q_head_begin, r.shard.q_head_end);
  j["kv_heads"] = range(r.shard.kv_head_begin, r.shard.kv_head_end);
  j["vocab"] = range(r.shard.vocab_begin, r.shard.vocab_end);
  j["ffn"] = range(r.shard.ffn_begin, r.shard.ffn_end);
  j["experts"] = range(r.shard.expert_begin, r.shard.expert_end);
  j["moe_ffn"] = range(r.shard.moe_ffn_begin, r.shard.moe_ffn_end);
  j["memory"] = {{"weight_bytes", r.memory.weight_bytes},
                 {"activation_bytes", r.memory.activation_bytes},
                 {"kv_bytes", r.memory.kv_bytes},
                 {"budget_bytes", r.memory.budget_bytes}};
  j["kv_blocks"] = r.kv_blocks;
  return j;
}

RankPlan rank_from_json(const nlohmann::json& j) {
  RankPlan r;
  r.rank = j.at("rank").get<int>();
  r.node = j.at("node").get<int>();
  r.coord.coordinator = j.at("coordinator").get<bool>();
  if (r.coord.coordinator) return r;
  r.coord.pool = j.at("pool").get<int>();
  r.coord.instance = j.at("instance").get<int>();
  r.coord.stage = j.at("stage").get<int>();
  r.coord.dp = j.at("dp").get<int>();
  r.coord.tp = j.at("tp").get<int>();
  read_range(j, "layers", &r.shard.layer_begin, &r.shard.layer_end);
  r.shard.has_embedding = j.at("has_embedding").get<bool>();
  r.shard.has_lm_head = j.at("has_lm_head").get<bool>();
  read_range(j, "q_heads", &r.shard.q_head_begin, &r.shard.q_head_end);
  read_range(j, "kv_heads", &r.shard.kv_head_begin, &r.shard.kv_head_end);
  read_range(j, "vocab", &r.shard.vocab_begin, &r.shard.vocab_end);
  read_range(j, "ffn", &r.shard.ffn_begin, &r.shard.ffn_end);
  read_range(j, "experts", &r.shard.expert_begin, &r.shard.expert_end);
  read_range(j, "moe_ffn", &r.shard.moe_ffn_begin, &r.shard.moe_ffn_end);
  const nlohmann::json& m = j.at("memory");
  r.memory.weight_bytes = m.at("weight_bytes").get<int64_t>();
  r.memory.activation_bytes = m.at("activation_bytes").get<int64_t>();
  r.memory.kv_bytes = m.at("kv_bytes").get<int64_t>();
  r.memory.budget_bytes = m.at("budget_bytes").get<int64_t>();
  r.kv_blocks = j.at("kv_blocks").get<int64_t>();
  return r;
}

std::string range_text(int64_t b, int64_t e) {
  return b == e ? std::string("-") : fmt::format("[{},{})", b, e);
}

}  // namespace

std::vector<int> Plan::stage_ranks(int pool, int instance, int stage) const {
  std::vector<int> out;
  if (pool < 0 || pool >= static_cast<int>(pools.size())) return out;
  for (int d = 0; d < pools[static_cast<size_t>(pool)].dp; ++d) {
    std::vector<int> g = tp_group(pool, instance, stage, d);
    out.insert(out.end(), g.begin(), g.end());
  }
  return out;
}

std::vector<int> Plan::tp_group(int pool, int instance, int stage, int dp) const {
  std::vector<int> out;
  if (pool < 0 || pool >= static_cast<int>(pools.size())) return out;
  for (int t = 0; t < pools[static_cast<size_t>(pool)].tp; ++t) {
    RankCoord c;
    c.pool = pool;
    c.instance = instance;
    c.stage = stage;
    c.dp = dp;
    c.tp = t;
    Result<int> r = rank_of(pools, c);
    if (!r.ok()) return {};  // coordinates outside the layout: no ranks
    out.push_back(*r);
  }
  return out;
}

nlohmann::json Plan::to_json() const {
  nlohmann::json j;
  j["version"] = 1;
  j["model"] = model;
  j["model_type"] = model_type;
  j["world_size"] = world_size;
  j["ranks_per_node"] = ranks_per_node;
  j["dtype"] = dtype;
  j["device"] = device;
  j["num_hidden_layers"] = num_hidden_layers;
  j["kv_block_size"] = kv_block_size;
  j["max_model_len"] = max_model_len;
  j["blocks_per_seq"] = blocks_per_seq;
  j["pools"] = nlohmann::json::array();
  for (size_t p = 0; p < pools.size(); ++p) {
    const PoolSpec& s = pools[p];
    nlohmann::json pj = pool_to_json(s);
    pj["first_rank"] = p < pool_first_rank.size() ? pool_first_rank[p] : 0;
    pj["stages"] = nlohmann::json::array();
    if (p < stages.size())
      for (const StagePlan& st : stages[p])
        pj["stages"].push_back({{"layers", range(st.layer_begin, st.layer_end)},
                                {"has_embedding", st.has_embedding},
                                {"has_lm_head", st.has_lm_head},
                                {"cost", st.cost}});
    j["pools"].push_back(pj);
  }
  j["ranks"] = nlohmann::json::array();
  for (const RankPlan& r : ranks) j["ranks"].push_back(rank_to_json(r));
  return j;
}

Result<Plan> Plan::from_json(const nlohmann::json& j) {
  Plan plan;
  try {
    if (j.at("version").get<int>() != 1)
      return data_loss("plan JSON: version {} is not supported (expected 1)",
                       j.at("version").dump());
    plan.model = j.at("model").get<std::string>();
    plan.model_type = j.at("model_type").get<std::string>();
    plan.world_size = j.at("world_size").get<int>();
    plan.ranks_per_node = j.at("ranks_per_node").get<int>();
    plan.dtype = j.at("dtype").get<std::string>();
    plan.device = j.at("device").get<std::string>();
    plan.num_hidden_layers = j.at("num_hidden_layers").get<int>();
    plan.kv_block_size = j.at("kv_block_size").get<int>();
    plan.max_model_len = j.at("max_model_len").get<int64_t>();
    plan.blocks_per_seq = j.at("blocks_per_seq").get<int64_t>();
    for (const nlohmann::json& pj : j.at("pools")) {
      SW_ASSIGN_OR_RETURN(PoolSpec s, pool_from_json(pj, "plan JSON"));
      plan.pools.push_back(s);
      plan.pool_first_rank.push_back(pj.at("first_rank").get<int>());
      std::vector<StagePlan> stages;
      for (const nlohmann::json& sj : pj.at("stages")) {
        StagePlan st;
        read_range(sj, "layers", &st.layer_begin, &st.layer_end);
        st.has_embedding = sj.at("has_embedding").get<bool>();
        st.has_lm_head = sj.at("has_lm_head").get<bool>();
        st.cost = sj.at("cost").get<double>();
        stages.push_back(st);
      }
      if (static_cast<int>(stages.size()) != s.pp)
        return data_loss("plan JSON: pool {} has {} stages, expected pp = {}",
                         pool_kind_name(s.kind), stages.size(), s.pp);
      plan.stages.push_back(std::move(stages));
    }
    for (const nlohmann::json& rj : j.at("ranks")) plan.ranks.push_back(rank_from_json(rj));
  } catch (const nlohmann::json::exception& e) {
    return data_loss("plan JSON: {}", e.what());
  }
  if (plan.world_size != world_size_of(plan.pools) ||
      static_cast<int>(plan.ranks.size()) != plan.world_size)
    return data_loss("plan JSON: world_size {} with {} rank entries, but the pools need {} ranks",
                     plan.world_size, plan.ranks.size(), world_size_of(plan.pools));
  for (int r = 0; r < plan.world_size; ++r) {
    if (plan.ranks[static_cast<size_t>(r)].rank != r)
      return data_loss("plan JSON: ranks[{}] has rank {}", r,
                       plan.ranks[static_cast<size_t>(r)].rank);
    Result<RankCoord> c = coord_of(plan.pools, r);
    if (!c.ok() || !(*c == plan.ranks[static_cast<size_t>(r)].coord))
      return data_loss("plan JSON: rank {}: coordinates do not match the rank layout", r);
  }
  return plan;
}

std::string Plan::to_text() const {
  std::string out;
  double total_weights = 0;
  for (const RankPlan& r : ranks) total_weights += static_cast<double>(r.memory.weight_bytes);
  out += fmt::format("model       {} ({}, {} layers), dtype {}, device {}\n", model, model_type,
                     num_hidden_layers, dtype, device);
  std::string formula = "1 coordinator";
  for (const PoolSpec& p : pools) formula += " + " + pool_text(p);
  out += fmt::format("world size  {} = {}\n", world_size, formula);
  if (ranks_per_node > 0)
    out += fmt::format(
        "nodes       {} (ranks_per_node {}: consecutive ranks, coordinator "
        "included)\n",
        (world_size + ranks_per_node - 1) / ranks_per_node, ranks_per_node);
  else
    out +=
        "nodes       all shown on node 0: ranks_per_node is 0 and `plan` runs without MPI, so "
        "it cannot see hosts (the real run groups ranks by host)\n";
  if (!ranks.empty() && ranks.size() > 1) {
    const MemoryEstimate& m = ranks[1].memory;
    out += fmt::format(
        "memory      budget {:.1f} GiB per worker; KV block {} tokens; max_model_len {} needs {} "
        "blocks per sequence; weights {:.2f} GiB over all workers\n",
        m.budget_bytes / kGiB, kv_block_size, max_model_len, blocks_per_seq, total_weights / kGiB);
  }
  for (size_t p = 0; p < pools.size() && p < stages.size(); ++p) {
    const PoolSpec& s = pools[p];
    double total = 0;
    for (const StagePlan& st : stages[p]) total += st.cost;
    const int first = p < pool_first_rank.size() ? pool_first_rank[p] : 0;
    out += fmt::format(
        "pool {:<7} ranks {}-{}: {} instance(s) x {} stage(s) x {} ranks (tp {} x "
        "dp {}), moe {}\n",
        pool_kind_name(s.kind), first, first + s.ranks() - 1, s.instances, s.pp, s.tp * s.dp, s.tp,
        s.dp, moe_mode_name(s.moe));
    for (size_t i = 0; i < stages[p].size(); ++i) {
      const StagePlan& st = stages[p][i];
      std::string extra;
      if (st.has_embedding) extra += " + embedding";
      if (st.has_lm_head) extra += " + final norm, LM head";
      out +=
          fmt::format("  stage {}: layers [{}, {}){:<36} cost share {:5.1f}%\n", i, st.layer_begin,
                      st.layer_end, extra, total > 0 ? 100.0 * st.cost / total : 0.0);
    }
  }
  out += "\n";
  out += fmt::format("{:>5} {:>4}  {:<20} {:<9} {:<4} {:<9} {:<9} {:<15} {:<9} {:>11} {:>10}\n",
                     "rank", "node", "role", "layers", "emb", "q heads", "kv heads", "vocab",
                     "experts", "weights GiB", "KV blocks");
  for (const RankPlan& r : ranks) {
    if (r.coord.coordinator) {
      out += fmt::format("{:>5} {:>4}  coordinator\n", r.rank, r.node);
      continue;
    }
    const std::string role =
        fmt::format("{}:{}:{}:{}:{}", pool_kind_name(pools[static_cast<size_t>(r.coord.pool)].kind),
                    r.coord.instance, r.coord.stage, r.coord.dp, r.coord.tp);
    const char* emb = r.shard.has_embedding ? (r.shard.has_lm_head ? "EH" : "E")
                                            : (r.shard.has_lm_head ? "H" : "-");
    out +=
        fmt::format("{:>5} {:>4}  {:<20} {:<9} {:<4} {:<9} {:<9} {:<15} {:<9} {:>11.3f} {:>10}\n",
                    r.rank, r.node, role, range_text(r.shard.layer_begin, r.shard.layer_end), emb,
                    range_text(r.shard.q_head_begin, r.shard.q_head_end),
                    range_text(r.shard.kv_head_begin, r.shard.kv_head_end),
                    range_text(r.shard.vocab_begin, r.shard.vocab_end),
                    range_text(r.shard.expert_begin, r.shard.expert_end),
                    r.memory.weight_bytes / kGiB, r.kv_blocks);
  }
  out += "role = pool:instance:stage:dp:tp; emb: E embedding, H final norm + LM head\n";
  return out;
}

}  // namespace sw::parallel

// make_plan: ClusterConfig + ModelConfig -> Plan. Checks every layout constraint up front
// (each error names the pool, the constraint and the numbers), balances pipeline stages with an
// exact linear-partition DP over per-layer costs, slices heads / FFN / vocab / experts per tp
// and EP rank, and sizes each worker's memory and KV pool. Extend: add the slice to RankPlan,
// compute it in assign_shards(), count its bytes in weight_bytes()/activation_bytes().
#include "parallel/partitioner.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "parallel/rank_layout.h"

namespace sw::parallel {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

int64_t dtype_bytes(const std::string& dtype) { return dtype == "float32" ? 4 : 2; }

// Balancing cost of each piece of the model, in parameters touched per token. Decode steps are
// bound by reading these weights, so an MoE layer costs its top-k active experts plus the
// router, not all of its experts (the memory check below counts all of them). The embedding
// (on stage 0) and the LM head + final norm (on the last stage) each cost vocab * hidden: the
// LM head is a GEMM of that size, and a tied embedding still runs it.
struct CostModel {
  std::vector<int64_t> layer;
  int64_t embedding = 0;
  int64_t lm_head = 0;
};

int64_t attention_params(const model::ModelConfig& m) {
  int64_t p = m.hidden_size * (m.q_size() + 2 * m.kv_size()) + m.q_size() * m.hidden_size;
  p += 2 * m.hidden_size;  // input and post-attention RMSNorm
  if (m.qk_norm) p += 2 * m.head_dim;
  if (m.attention_bias) p += m.q_size() + 2 * m.kv_size();
  return p;
}

CostModel cost_model(const model::ModelConfig& m) {
  CostModel c;
  for (int l = 0; l < m.num_hidden_layers; ++l) {
    int64_t ffn = m.is_moe_layer(l)
                      ? m.num_experts_per_tok * 3 * m.hidden_size * m.moe_intermediate_size +
                            m.num_experts * m.hidden_size
                      : 3 * m.hidden_size * m.intermediate_size;
    c.layer.push_back(attention_params(m) + ffn);
  }
  c.embedding = m.vocab_size * m.hidden_size;
  c.lm_head = m.vocab_size * m.hidden_size + m.hidden_size;
  return c;
}

// Exact linear partition: f[s][j] = the least possible max stage cost when layers [0, j) form
// stages 0..s-1. O(pp * L^2); ties keep the earliest split point, so the result is
// deterministic. Returns pp + 1 boundaries.
std::vector<int> balance_stages(const CostModel& c, int pp) {
  const int n = static_cast<int>(c.layer.size());
  std::vector<int64_t> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + c.layer[i];
  auto stage_cost = [&](int s, int i, int j) {  // stage s (0-based) holding layers [i, j)
    return prefix[j] - prefix[i] + (s == 0 ? c.embedding : 0) + (s == pp - 1 ? c.lm_head : 0);
  };
  constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int64_t>> f(pp, std::vector<int64_t>(n + 1, kInf));
  std::vector<std::vector<int>> split(pp, std::vector<int>(n + 1, 0));
  for (int j = 1; j <= n; ++j) f[0][j] = stage_cost(0, 0, j);
  for (int s = 1; s < pp; ++s) {
    for (int j = s + 1; j <= n; ++j) {
      for (int i = s; i < j; ++i) {
        if (f[s - 1][i] == kInf) continue;
        int64_t v = std::max(f[s - 1][i], stage_cost(s, i, j));
        if (v < f[s][j]) {
          f[s][j] = v;
          split[s][j] = i;
        }
      }
    }
  }
  std::vector<int> bounds(pp + 1, 0);
  bounds[pp] = n;
  for (int s = pp - 1; s >= 1; --s) bounds[s] = split[s][bounds[s + 1]];
  return bounds;
}

std::string pool_formula(const std::vector<PoolSpec>& pools) {
  std::string s = "1 coordinator";
  for (const PoolSpec& p : pools)
    s += fmt::format(" + {} {} x (tp {} x pp {} x dp {})", pool_kind_name(p.kind), p.instances,
                     p.tp, p.pp, p.dp);
  return s;
}

// Layout constraints of one pool against the model; errors name the pool and the numbers.
Status check_pool(const std::string& where, const PoolSpec& p, const model::ModelConfig& m) {
  const int L = m.num_hidden_layers, H = m.num_attention_heads, Hk = m.num_key_value_heads;
  if (p.pp > L)
    return invalid_argument(
        "{}: pp {} exceeds num_hidden_layers {} (every pipeline stage needs at least one layer)",
        where, p.pp, L);
  if (H % p.tp != 0)
    return invalid_argument(
        "{}: tp {} does not divide num_attention_heads {} (each tp rank holds whole q heads)",
        where, p.tp, H);
  if (Hk <= 0 || H % Hk != 0)
    return invalid_argument("{}: num_key_value_heads {} does not divide num_attention_heads {}",
                            where, Hk, H);
  if (p.tp <= Hk && Hk % p.tp != 0)
    return invalid_argument(
        "{}: tp {} does not divide num_key_value_heads {} (each tp rank holds whole KV heads)",
        where, p.tp, Hk);
  if (p.tp > Hk && p.tp % Hk != 0)
    return invalid_argument(
        "{}: tp {} > num_key_value_heads {}, so KV heads are replicated; that needs num_key_"
        "value_heads to divide tp",
        where, p.tp, Hk);
  bool dense_layers = false;
  for (int l = 0; l < L; ++l) dense_layers = dense_layers || !m.is_moe_layer(l);
  if (dense_layers && m.intermediate_size % p.tp != 0)
    return invalid_argument("{}: tp {} does not divide intermediate_size {} (dense FFN columns)",
                            where, p.tp, m.intermediate_size);
  if (m.is_moe()) {
    const int S = p.tp * p.dp;
    if (p.moe == MoeMode::kEp && m.num_experts % S != 0)
      return invalid_argument(
          "{}: moe: ep needs num_experts ({}) divisible by the {} ranks of a stage (tp {} x dp "
          "{})",
          where, m.num_experts, S, p.tp, p.dp);
    if (p.moe == MoeMode::kTp && m.moe_intermediate_size % p.tp != 0)
      return invalid_argument(
          "{}: moe: tp needs moe_intermediate_size ({}) divisible by tp {} (each expert's FFN "
          "is split over tp)",
          where, m.moe_intermediate_size, p.tp);
  }
  return Status();
}

// Heads, FFN, vocab and expert slices of one worker rank; `r.coord` and layers set already.
Status assign_shards(const std::string& where, const PoolSpec& p, const model::ModelConfig& m,
                     RankPlan& r) {
  const int tp = p.tp, t = r.coord.tp;
  const int H = m.num_attention_heads, Hk = m.num_key_value_heads;
  r.shard.q_head_begin = t * H / tp;
  r.shard.q_head_end = (t + 1) * H / tp;
  if (tp <= Hk) {
    r.shard.kv_head_begin = t * Hk / tp;
    r.shard.kv_head_end = (t + 1) * Hk / tp;
  } else {
    r.shard.kv_head_begin = t / (tp / Hk);
    r.shard.kv_head_end = r.shard.kv_head_begin + 1;
  }
  // GQA: q head h reads KV head h / (H / Hk); every local q head must find its KV head here.
  const int group = H / Hk;
  for (int h = r.shard.q_head_begin; h < r.shard.q_head_end; ++h) {
    if (h / group < r.shard.kv_head_begin || h / group >= r.shard.kv_head_end)
      return internal_error(
          "{}: tp rank {}: q head {} reads KV head {}, but the rank holds KV heads [{}, {})", where,
          t, h, h / group, r.shard.kv_head_begin, r.shard.kv_head_end);
  }
  bool dense_layers = false;
  for (int l = 0; l < m.num_hidden_layers; ++l) dense_layers = dense_layers || !m.is_moe_layer(l);
  if (dense_layers) {
    r.shard.ffn_begin = t * m.intermediate_size / tp;
    r.shard.ffn_end = (t + 1) * m.intermediate_size / tp;
  }
  if (r.shard.has_embedding || r.shard.has_lm_head) {
    const int64_t V = m.vocab_size, chunk = (V + tp - 1) / tp;
    r.shard.vocab_begin = std::min<int64_t>(t * chunk, V);
    r.shard.vocab_end = std::min<int64_t>((t + 1) * chunk, V);
  }
  if (m.is_moe()) {
    const int E = m.num_experts;
    if (p.moe == MoeMode::kEp) {
      const int S = p.tp * p.dp, i = r.coord.dp * p.tp + t;
      r.shard.expert_begin = i * E / S;
      r.shard.expert_end = (i + 1) * E / S;
      r.shard.moe_ffn_begin = 0;
      r.shard.moe_ffn_end = m.moe_intermediate_size;
    } else {
      r.shard.expert_begin = 0;
      r.shard.expert_end = E;
      r.shard.moe_ffn_begin = t * m.moe_intermediate_size / tp;
      r.shard.moe_ffn_end = (t + 1) * m.moe_intermediate_size / tp;
    }
  }
  return Status();
}

bool has_moe_layer(const model::ModelConfig& m, int begin, int end) {
  for (int l = begin; l < end; ++l)
    if (m.is_moe_layer(l)) return true;
  return false;
}

// Parameters of this rank's shard: attention of its local heads, its FFN / expert slices,
// replicated norms and router, its vocab rows of the embedding and LM head.
int64_t weight_params(const model::ModelConfig& m, const RankPlan& r) {
  const int64_t Hd = m.hidden_size, hd = m.head_dim;
  const int64_t q = (r.shard.q_head_end - r.shard.q_head_begin) * hd;
  const int64_t kv = (r.shard.kv_head_end - r.shard.kv_head_begin) * hd;
  int64_t attn = Hd * (q + 2 * kv) + q * Hd + 2 * Hd;
  if (m.qk_norm) attn += 2 * hd;
  if (m.attention_bias) attn += q + 2 * kv;
  int64_t total = 0;
  for (int l = r.shard.layer_begin; l < r.shard.layer_end; ++l) {
    total += attn;
    if (m.is_moe_layer(l))
      total += int64_t{r.shard.expert_end - r.shard.expert_begin} * 3 * Hd *
                   (r.shard.moe_ffn_end - r.shard.moe_ffn_begin) +
               int64_t{m.num_experts} * Hd;
    else
      total += 3 * Hd * (r.shard.ffn_end - r.shard.ffn_begin);
  }
  const int64_t vocab_rows = r.shard.vocab_end - r.shard.vocab_begin;
  if (r.shard.has_embedding) total += vocab_rows * Hd;
  // A tied LM head shares the embedding's rows when both live on the same rank.
  if (r.shard.has_lm_head)
    total += (m.tie_word_embeddings && r.shard.has_embedding ? 0 : vocab_rows * Hd) + Hd;
  return total;
}

// Peak activations of one step of T = max_num_batched_tokens tokens, buffers reused across
// layers (dtype bytes b):
//   b * T * (4 * hidden + local qkv width + 3 * local dense FFN width)     residual, norm, attn
//                                                                          out, FFN out; qkv;
//                                                                          gate/up + activation
// + b * T * k * (2 * hidden + 3 * local expert width)       (MoE layers)   dispatched rows and
//                                                                          their expert outputs
// + 4 * max_num_seqs * (V_local + V if tp > 1)              (LM head rank) fp32 logits, local
//                                                                          and gathered
int64_t activation_bytes(const model::ModelConfig& m, const RuntimeSection& rt, int tp, int64_t b,
                         const RankPlan& r) {
  const int64_t T = rt.max_num_batched_tokens, Hd = m.hidden_size;
  const int64_t qkv = (r.shard.q_head_end - r.shard.q_head_begin +
                       2 * (r.shard.kv_head_end - r.shard.kv_head_begin)) *
                      m.head_dim;
  int64_t bytes = b * T * (4 * Hd + qkv + 3 * (r.shard.ffn_end - r.shard.ffn_begin));
  if (has_moe_layer(m, r.shard.layer_begin, r.shard.layer_end))
    bytes += b * T * m.num_experts_per_tok *
             (2 * Hd + 3 * (r.shard.moe_ffn_end - r.shard.moe_ffn_begin));
  if (r.shard.has_lm_head)
    bytes += 4 * int64_t{rt.max_num_seqs} *
             ((r.shard.vocab_end - r.shard.vocab_begin) + (tp > 1 ? m.vocab_size : 0));
  return bytes;
}

std::string rank_name(const Plan& plan, const RankPlan& r) {
  const RankCoord& c = r.coord;
  return fmt::format("rank {} (pool {}, instance {}, stage {}, dp {}, tp {})", r.rank,
                     pool_kind_name(plan.pools[static_cast<size_t>(c.pool)].kind), c.instance,
                     c.stage, c.dp, c.tp);
}

}  // namespace

Result<Plan> make_plan(const ClusterConfig& cluster, const model::ModelConfig& m, int world_size) {
  const std::string& src = cluster.source.empty() ? std::string("cluster config") : cluster.source;
  if (cluster.pools.empty()) return invalid_argument("{}: no pools configured", src);
  const int world = world_size_of(cluster.pools);
  if (world_size > 0 && world_size != world)
    return invalid_argument("{}: world size {} does not match the config: {} = {} ranks", src,
                            world_size, pool_formula(cluster.pools), world);

  const RuntimeSection& rt = cluster.runtime;
  const int64_t max_len = rt.max_model_len > 0 ? rt.max_model_len : m.max_position_embeddings;
  if (max_len > m.max_position_embeddings)
    return invalid_argument(
        "{}: runtime.max_model_len {} exceeds the model's max_position_embeddings {} ({})", src,
        max_len, m.max_position_embeddings, m.source);

  Plan plan;
  plan.model = cluster.model.path;
  plan.model_type = m.model_type;
  plan.world_size = world;
  plan.pools = cluster.pools;
  plan.ranks_per_node = cluster.comm.ranks_per_node;
  plan.dtype = cluster.model.dtype;
  plan.device = rt.device;
  plan.num_hidden_layers = m.num_hidden_layers;
  plan.kv_block_size = rt.kv_block_size;
  plan.max_model_len = max_len;
  plan.blocks_per_seq = (max_len + rt.kv_block_size - 1) / rt.kv_block_size;

  const CostModel costs = cost_model(m);
  int first = 1;
  for (const PoolSpec& p : cluster.pools) {
    const std::string where = fmt::format("{}: pools.{}", src, pool_kind_name(p.kind));
    SW_RETURN_IF_ERROR(check_pool(where, p, m));
    plan.pool_first_rank.push_back(first);
    first += p.ranks();
    std::vector<int> bounds = balance_stages(costs, p.pp);
    std::vector<StagePlan> stages;
    for (int s = 0; s < p.pp; ++s) {
      StagePlan st;
      st.layer_begin = bounds[s];
      st.layer_end = bounds[s + 1];
      st.has_embedding = s == 0;
      st.has_lm_head = s == p.pp - 1;
      for (int l = st.layer_begin; l < st.layer_end; ++l)
        st.cost += static_cast<double>(costs.layer[l]);
      if (st.has_embedding) st.cost += static_cast<double>(costs.embedding);
      if (st.has_lm_head) st.cost += static_cast<double>(costs.lm_head);
      stages.push_back(st);
    }
    plan.stages.push_back(std::move(stages));
  }

  const int64_t b = dtype_bytes(cluster.model.dtype);
  const double device_gib =
      rt.device_memory_gib > 0 ? rt.device_memory_gib : (rt.device == "cuda" ? 80.0 : 16.0);
  const int64_t budget = static_cast<int64_t>(device_gib * kGiB * rt.gpu_memory_utilization);
  for (int g = 0; g < world; ++g) {
    RankPlan r;
    r.rank = g;
    r.node = plan.ranks_per_node > 0 ? g / plan.ranks_per_node : 0;
    SW_ASSIGN_OR_RETURN(r.coord, coord_of(cluster.pools, g));
    if (r.coord.coordinator) {
      plan.ranks.push_back(r);
      continue;
    }
    const PoolSpec& p = cluster.pools[static_cast<size_t>(r.coord.pool)];
    const StagePlan& st =
        plan.stages[static_cast<size_t>(r.coord.pool)][static_cast<size_t>(r.coord.stage)];
    r.shard.layer_begin = st.layer_begin;
    r.shard.layer_end = st.layer_end;
    r.shard.has_embedding = st.has_embedding;
    r.shard.has_lm_head = st.has_lm_head;
    SW_RETURN_IF_ERROR(
        assign_shards(fmt::format("{}: pools.{}", src, pool_kind_name(p.kind)), p, m, r));

    r.memory.budget_bytes = budget;
    r.memory.weight_bytes = weight_params(m, r) * b;
    r.memory.activation_bytes = activation_bytes(m, rt, p.tp, b, r);
    const int64_t per_block = r.shard.kv_block_bytes(m.head_dim, rt.kv_block_size, b);
    const int64_t used = r.memory.weight_bytes + r.memory.activation_bytes;
    const std::string budget_text = fmt::format(
        "the budget of {:.1f} GiB ({:g} GiB device memory x gpu_memory_utilization {:g})",
        budget / kGiB, device_gib, rt.gpu_memory_utilization);
    if (used >= budget)
      return resource_exhausted(
          "{}: {}: weights {:.1f} GiB + activations {:.1f} GiB exceed {}; use more tp, pp or "
          "experts per stage, a smaller max_num_batched_tokens, or more device memory",
          src, rank_name(plan, r), r.memory.weight_bytes / kGiB, r.memory.activation_bytes / kGiB,
          budget_text);
    r.kv_blocks = (budget - used) / per_block;
    r.memory.kv_bytes = r.kv_blocks * per_block;
    if (r.kv_blocks < plan.blocks_per_seq)
      return resource_exhausted(
          "{}: {}: weights {:.1f} GiB + activations {:.1f} GiB of {} leave {:.2f} GiB, {} KV "
          "blocks of {} tokens; one sequence of max_model_len {} needs {} blocks ({:.2f} GiB)",
          src, rank_name(plan, r), r.memory.weight_bytes / kGiB, r.memory.activation_bytes / kGiB,
          budget_text, (budget - used) / kGiB, r.kv_blocks, rt.kv_block_size, max_len,
          plan.blocks_per_seq, plan.blocks_per_seq * per_block / kGiB);
    plan.ranks.push_back(r);
  }
  return plan;
}

}  // namespace sw::parallel

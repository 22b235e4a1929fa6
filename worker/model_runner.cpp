// One model step: metadata on the host, everything else as backend ops on the device.
#include "worker/model_runner.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <set>

namespace sw::worker {

std::vector<float> rope_inv_freq(const model::ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  const auto& rs = c.rope_scaling;
  for (int64_t i = 0; i < half; ++i) {
    // As HF computes it: float32 exponent, then the reciprocal.
    float f =
        static_cast<float>(1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / c.head_dim));
    if (rs.type == "linear") {
      f = static_cast<float>(f / rs.factor);
    } else if (rs.type == "llama3") {
      const double low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor;
      const double high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor;
      const double wavelen = 2 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rs.factor);
      } else if (wavelen >= high_wavelen) {
        double smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) /
                        (rs.high_freq_factor - rs.low_freq_factor);
        f = static_cast<float>((1 - smooth) * f / rs.factor + smooth * f);
      }
    }
    inv[static_cast<size_t>(i)] = f;
  }
  return inv;
}

ModelRunner::ModelRunner(model::ModelConfig config, ModelWeights weights, kernels::Backend& backend,
                         KvCacheOptions kv)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      backend_(backend),
      pool_(kv.num_blocks, kv.block_size),
      dtype_(weights_.embed.dtype()) {
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    Shape s = {kv.num_blocks, kv.block_size, config_.num_key_value_heads, config_.head_dim};
    k_cache_.push_back(backend_.alloc(s, dtype_));
    v_cache_.push_back(backend_.alloc(s, dtype_));
  }
  std::vector<float> inv = rope_inv_freq(config_);
  Tensor host = Tensor::from_floats(inv, {static_cast<int64_t>(inv.size())});
  inv_freq_ = backend_.alloc(host.shape(), DType::kF32);
  SW_CHECK(backend_.copy(host, inv_freq_).ok());
}

Tensor ModelRunner::upload_i32(const std::vector<int32_t>& v, Shape shape) {
  Tensor host = Tensor::from_ints(v, std::move(shape));
  Tensor dev = backend_.alloc(host.shape(), DType::kI32);
  SW_CHECK(backend_.copy(host, dev).ok());
  return dev;
}

namespace {

// Block tables padded to the longest, as int32 [B, max_blocks].
std::vector<int32_t> padded_tables(const KvBlockPool& pool, const std::vector<int64_t>& seqs,
                                   int64_t& max_blocks) {
  max_blocks = 1;
  for (int64_t s : seqs) max_blocks = std::max<int64_t>(max_blocks, pool.block_table(s).size());
  std::vector<int32_t> out(seqs.size() * static_cast<size_t>(max_blocks), 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto& t = pool.block_table(seqs[i]);
    std::copy(t.begin(), t.end(), out.begin() + static_cast<int64_t>(i) * max_blocks);
  }
  return out;
}

}  // namespace

Result<StepResult> ModelRunner::step(const std::vector<SequenceInput>& batch) {
  auto& b = backend_;
  const auto& c = config_;
  StepResult result;
  result.sampled.assign(batch.size(), -1);
  result.logits_row.assign(batch.size(), -1);

  // ---- KV blocks: check the whole batch first so a failure changes nothing -------------
  std::set<int64_t> seen;
  int64_t need = 0;
  for (const auto& in : batch) {
    if (!seen.insert(in.seq_id).second)
      return invalid_argument("step: sequence {} appears twice in one batch", in.seq_id);
    for (int32_t t : in.tokens)
      if (t < 0 || t >= c.vocab_size)
        return invalid_argument("sequence {}: token id {} is outside the vocabulary [0, {})",
                                in.seq_id, t, c.vocab_size);
    need += pool_.blocks_needed(in.seq_id, static_cast<int64_t>(in.tokens.size()));
  }
  if (need > pool_.num_free_blocks())
    return resource_exhausted(
        "KV cache out of blocks: this batch needs {} more block(s), {} of {} free", need,
        pool_.num_free_blocks(), pool_.num_blocks());
  std::vector<int64_t> start(batch.size());
  std::vector<BlockCopy> copies;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& in = batch[i];
    if (!pool_.has_sequence(in.seq_id)) SW_RETURN_IF_ERROR(pool_.add_sequence(in.seq_id));
    start[i] = pool_.num_tokens(in.seq_id);
    SW_RETURN_IF_ERROR(pool_.append(in.seq_id, static_cast<int64_t>(in.tokens.size()), &copies));
  }
  for (const BlockCopy& cp : copies) {
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      for (Tensor* cache : {&k_cache_[l], &v_cache_[l]}) {
        Tensor dst = cache->rows(cp.dst, cp.dst + 1);
        SW_RETURN_IF_ERROR(b.copy(cache->rows(cp.src, cp.src + 1), dst));
      }
    }
  }

  // ---- Execution order: decode tokens first, then prefill chunks ------------------------
  std::vector<size_t> order;
  for (size_t i = 0; i < batch.size(); ++i)
    if (batch[i].tokens.size() == 1 && start[i] > 0) order.push_back(i);
  const int64_t num_decode = static_cast<int64_t>(order.size());
  for (size_t i = 0; i < batch.size(); ++i)
    if (!batch[i].tokens.empty() && !(batch[i].tokens.size() == 1 && start[i] > 0))
      order.push_back(i);

  std::vector<int32_t> ids, positions, slots, dec_lens, pre_qsl{0}, pre_lens;
  std::vector<int64_t> row_of(batch.size(), -1), dec_seqs, pre_seqs;
  for (size_t oi = 0; oi < order.size(); ++oi) {
    const auto& in = batch[order[oi]];
    row_of[order[oi]] = static_cast<int64_t>(ids.size());
    for (size_t j = 0; j < in.tokens.size(); ++j) {
      int64_t pos = start[order[oi]] + static_cast<int64_t>(j);
      ids.push_back(in.tokens[j]);
      positions.push_back(static_cast<int32_t>(pos));
      slots.push_back(static_cast<int32_t>(pool_.slot(in.seq_id, pos)));
    }
    int32_t total = static_cast<int32_t>(pool_.num_tokens(in.seq_id));
    if (static_cast<int64_t>(oi) < num_decode) {
      dec_lens.push_back(total);
      dec_seqs.push_back(in.seq_id);
    } else {
      pre_lens.push_back(total);
      pre_qsl.push_back(static_cast<int32_t>(ids.size() - static_cast<size_t>(num_decode)));
      pre_seqs.push_back(in.seq_id);
    }
  }
  const int64_t T = static_cast<int64_t>(ids.size());
  if (T == 0) return result;

  int64_t dec_max = 1, pre_max = 1;
  std::vector<int32_t> dec_tab = padded_tables(pool_, dec_seqs, dec_max);
  std::vector<int32_t> pre_tab = padded_tables(pool_, pre_seqs, pre_max);
  const int64_t num_prefill = static_cast<int64_t>(pre_seqs.size());
  Tensor ids_d = upload_i32(ids, {T});
  Tensor pos_d = upload_i32(positions, {T});
  Tensor slots_d = upload_i32(slots, {T});
  Tensor dec_lens_d = upload_i32(dec_lens, {num_decode});
  Tensor dec_tab_d = upload_i32(dec_tab, {num_decode, dec_max});
  Tensor pre_qsl_d = upload_i32(pre_qsl, {num_prefill + 1});
  Tensor pre_lens_d = upload_i32(pre_lens, {num_prefill});
  Tensor pre_tab_d = upload_i32(pre_tab, {num_prefill, pre_max});

  // ---- Forward -----------------------------------------------------------------------------
  const int64_t H = c.hidden_size;
  Tensor hidden = b.alloc({T, H}, dtype_);
  SW_RETURN_IF_ERROR(b.embedding(ids_d, weights_.embed, 0, hidden));
  Tensor residual = b.alloc({T, H}, dtype_);
  SW_RETURN_IF_ERROR(b.copy(hidden, residual));
  for (int l = 0; l < c.num_hidden_layers; ++l)
    SW_RETURN_IF_ERROR(run_layer(l, pos_d, slots_d, hidden, residual, num_decode, dec_lens_d,
                                 dec_tab_d, pre_qsl_d, pre_lens_d, pre_tab_d,
                                 collect_moe_metrics_ ? &result.moe_metrics : nullptr));
  Tensor normed = b.alloc({T, H}, dtype_);
  SW_RETURN_IF_ERROR(b.rms_norm(hidden, weights_.final_norm, static_cast<float>(c.rms_norm_eps),
                                normed, &residual));

  // ---- LM head on the rows that need logits ----------------------------------------------
  std::vector<int64_t> sel;                           // hidden rows to project
  std::vector<int64_t> sample_sel(batch.size(), -1);  // index into sel of the sampled row
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& in = batch[i];
    if (in.tokens.empty()) continue;
    const int64_t n = static_cast<int64_t>(in.tokens.size());
    if (in.keep_logits) {
      result.logits_row[i] = static_cast<int64_t>(sel.size());
      for (int64_t j = 0; j < n; ++j) sel.push_back(row_of[i] + j);
      if (in.sample) sample_sel[i] = static_cast<int64_t>(sel.size()) - 1;
    } else if (in.sample) {
      sample_sel[i] = static_cast<int64_t>(sel.size());
      sel.push_back(row_of[i] + n - 1);
    }
  }
  const int64_t N = static_cast<int64_t>(sel.size());
  if (N == 0) return result;
  Tensor gathered = b.alloc({N, H}, dtype_);
  for (int64_t r = 0; r < N; ++r) {
    Tensor dst = gathered.rows(r, r + 1);
    SW_RETURN_IF_ERROR(b.copy(normed.rows(sel[r], sel[r] + 1), dst));
  }
  Tensor logits = b.alloc({N, c.vocab_size}, dtype_);
  SW_RETURN_IF_ERROR(b.gemm(gathered, weights_.lm_head, logits));
  Tensor logits_f32 = logits;
  if (dtype_ != DType::kF32) {
    logits_f32 = b.alloc({N, c.vocab_size}, DType::kF32);
    SW_RETURN_IF_ERROR(b.convert(logits, logits_f32));
  }

  std::vector<kernels::SamplingRow> rows;
  std::vector<size_t> who;
  for (size_t i = 0; i < batch.size(); ++i)
    if (sample_sel[i] >= 0) {
      rows.push_back(batch[i].sampling);
      who.push_back(i);
    }
  if (!rows.empty()) {
    const int64_t S = static_cast<int64_t>(rows.size());
    Tensor to_sample = logits_f32;
    if (S != N) {
      to_sample = b.alloc({S, c.vocab_size}, DType::kF32);
      for (int64_t r = 0; r < S; ++r) {
        Tensor dst = to_sample.rows(r, r + 1);
        SW_RETURN_IF_ERROR(
            b.copy(logits_f32.rows(sample_sel[who[r]], sample_sel[who[r]] + 1), dst));
      }
    }
    Tensor tokens = b.alloc({S}, DType::kI32);
    SW_RETURN_IF_ERROR(b.sample(to_sample, rows, tokens));
    Tensor host = Tensor::empty({S}, DType::kI32);
    SW_RETURN_IF_ERROR(b.copy(tokens, host));
    SW_RETURN_IF_ERROR(b.synchronize());
    for (int64_t r = 0; r < S; ++r) result.sampled[who[r]] = host.data_as<int32_t>()[r];
  }
  bool any_keep = std::any_of(batch.begin(), batch.end(),
                              [](const SequenceInput& in) { return in.keep_logits; });
  if (any_keep) {
    result.logits = Tensor::empty({N, c.vocab_size}, DType::kF32);
    SW_RETURN_IF_ERROR(b.copy(logits_f32, result.logits));
    SW_RETURN_IF_ERROR(b.synchronize());
  }
  return result;
}

Status ModelRunner::run_layer(int l, const Tensor& positions, const Tensor& slots, Tensor& hidden,
                              Tensor& residual, int64_t num_decode, const Tensor& dec_seq_lens,
                              const Tensor& dec_tables, const Tensor& pre_qsl,
                              const Tensor& pre_seq_lens, const Tensor& pre_tables,
                              std::vector<moe::MoeLayerMetrics>* metrics) {
  auto& b = backend_;
  const auto& c = config_;
  const LayerWeights& w = weights_.layers[l];
  const int64_t T = hidden.dim(0), H = c.hidden_size, D = c.head_dim;
  const int64_t Hq = c.num_attention_heads, Hk = c.num_key_value_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);

  Tensor x = b.alloc({T, H}, dtype_);
  if (l == 0) {
    SW_RETURN_IF_ERROR(b.rms_norm(hidden, w.input_norm, eps, x));
  } else {
    SW_RETURN_IF_ERROR(b.rms_norm(hidden, w.input_norm, eps, x, &residual));
  }
  Tensor q = b.alloc({T, Hq * D}, dtype_), k = b.alloc({T, Hk * D}, dtype_),
         v = b.alloc({T, Hk * D}, dtype_);
  SW_RETURN_IF_ERROR(b.gemm(x, w.q_w, q, w.q_b.defined() ? &w.q_b : nullptr));
  SW_RETURN_IF_ERROR(b.gemm(x, w.k_w, k, w.k_b.defined() ? &w.k_b : nullptr));
  SW_RETURN_IF_ERROR(b.gemm(x, w.v_w, v, w.v_b.defined() ? &w.v_b : nullptr));
  if (c.qk_norm) {
    Tensor qn = b.alloc({T * Hq, D}, dtype_), kn = b.alloc({T * Hk, D}, dtype_);
    SW_RETURN_IF_ERROR(b.rms_norm(q.reshape({T * Hq, D}), w.q_norm, eps, qn));
    SW_RETURN_IF_ERROR(b.rms_norm(k.reshape({T * Hk, D}), w.k_norm, eps, kn));
    q = qn;
    k = kn;
  }
  Tensor q3 = q.reshape({T, Hq, D}), k3 = k.reshape({T, Hk, D}), v3 = v.reshape({T, Hk, D});
  SW_RETURN_IF_ERROR(b.rope(q3, k3, positions, inv_freq_, kernels::RopeLayout::kNeox));
  SW_RETURN_IF_ERROR(b.kv_cache_write(k3, v3, slots, k_cache_[l], v_cache_[l]));
  Tensor attn = b.alloc({T, Hq, D}, dtype_);
  kernels::AttentionParams ap{1.0f / std::sqrt(static_cast<float>(D))};
  if (num_decode > 0) {
    Tensor out = attn.rows(0, num_decode);
    SW_RETURN_IF_ERROR(b.attention_decode(q3.rows(0, num_decode), k_cache_[l], v_cache_[l],
                                          dec_seq_lens, dec_tables, ap, out));
  }
  if (num_decode < T) {
    Tensor out = attn.rows(num_decode, T);
    SW_RETURN_IF_ERROR(b.attention_prefill(q3.rows(num_decode, T), k_cache_[l], v_cache_[l],
                                           pre_qsl, pre_seq_lens, pre_tables, ap, out));
  }
  SW_RETURN_IF_ERROR(b.gemm(attn.reshape({T, Hq * D}), w.o_w, hidden));
  SW_RETURN_IF_ERROR(b.rms_norm(hidden, w.post_norm, eps, x, &residual));
  if (w.moe) {
    moe::MoeOptions o;
    o.top_k = c.num_experts_per_tok;
    o.renormalize = c.norm_topk_prob;
    moe::MoeLayerMetrics m;
    SW_RETURN_IF_ERROR(moe::moe_ffn(b, x, w.router_w, w.experts_gate_up, w.experts_down, o, hidden,
                                    metrics ? &m : nullptr));
    if (metrics) metrics->push_back(std::move(m));
  } else {
    const int64_t I = w.down_w.dim(1);
    Tensor gu = b.alloc({T, 2 * I}, dtype_), act = b.alloc({T, I}, dtype_);
    SW_RETURN_IF_ERROR(b.gemm(x, w.gate_up_w, gu));
    SW_RETURN_IF_ERROR(b.silu_and_mul(gu, act));
    SW_RETURN_IF_ERROR(b.gemm(act, w.down_w, hidden));
  }
  return Status();
}

}  // namespace sw::worker

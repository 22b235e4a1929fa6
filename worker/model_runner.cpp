// One model step: metadata on the host, everything else as backend ops on the device.
#include "worker/model_runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
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
                         KvCacheOptions kv, parallel::ForwardParallelism* parallelism)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      backend_(backend),
      par_(parallelism),
      num_blocks_(kv.num_blocks),
      block_size_(kv.block_size),
      dtype_(weights_.layers.empty() ? weights_.embed.dtype()
                                     : weights_.layers[0].input_norm.dtype()) {
  allocate_kv_cache(kv.num_blocks);
  static std::atomic<int64_t> next_runner{0};
  graph_key_base_ = next_runner.fetch_add(1) << 20;
  std::vector<float> inv = rope_inv_freq(config_);
  Tensor host = Tensor::from_floats(inv, {static_cast<int64_t>(inv.size())});
  inv_freq_ = backend_.alloc(host.shape(), DType::kF32);
  SW_CHECK(backend_.copy(host, inv_freq_).ok());
}

void ModelRunner::allocate_kv_cache(int64_t num_blocks) {
  k_cache_.clear();  // the old cache goes back before the new one is taken
  v_cache_.clear();
  for (int l = 0; l < weights_.shard.num_layers(); ++l) {
    Shape s = {num_blocks, block_size_, weights_.shard.num_kv_heads(), config_.head_dim};
    k_cache_.push_back(backend_.alloc(s, dtype_));
    v_cache_.push_back(backend_.alloc(s, dtype_));
  }
}

int64_t ModelRunner::kv_block_bytes() const {
  return weights_.shard.kv_block_bytes(config_.head_dim, block_size_,
                                       static_cast<int64_t>(dtype_size(dtype_)));
}

Result<int64_t> ModelRunner::fit_kv_cache_to_memory(double utilization, int64_t profile_tokens,
                                                    int64_t min_blocks) {
  if (!(utilization > 0 && utilization <= 1))
    return invalid_argument("gpu_memory_utilization must be in (0, 1], got {}", utilization);
  if (profile_tokens > 0) {
    // The profile prompt: the largest step the scheduler sends, so the arena sees its peak.
    const int64_t blocks = (profile_tokens + block_size_ - 1) / block_size_;
    if (blocks > num_blocks_)
      return invalid_argument(
          "fit_kv_cache_to_memory: the profile step of {} tokens needs {} blocks, the cache "
          "has {}",
          profile_tokens, blocks, num_blocks_);
    StepMetadata profile;
    StepSequence& in = profile.seqs.emplace_back();
    in.seq_id = -1;
    in.tokens.assign(static_cast<size_t>(profile_tokens), 0);
    for (int64_t b = 0; b < blocks; ++b) in.block_table.push_back(static_cast<int32_t>(b));
    auto r = execute(profile);
    if (!r.ok())
      return r.status().with_context(
          fmt::format("profile step of {} tokens (max_num_batched_tokens)", profile_tokens));
  }
  SW_RETURN_IF_ERROR(backend_.synchronize());
  drop_graphs();
  allocate_kv_cache(0);
  workspace_.reset(backend_);  // at the profiled size before memory is counted
  const kernels::MemoryInfo mem = backend_.memory_info();
  const int64_t budget = static_cast<int64_t>(static_cast<double>(mem.total_bytes) * utilization);
  const int64_t per_block = kv_block_bytes();
  const int64_t blocks =
      per_block > 0 ? std::max<int64_t>(0, budget - mem.in_use_bytes) / per_block : min_blocks;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  if (blocks < min_blocks) {
    allocate_kv_cache(num_blocks_);  // the runner stays usable as it was
    return resource_exhausted(
        "KV cache: {:.2f} GiB of device memory x gpu_memory_utilization {} = {:.2f} GiB, of "
        "which weights, the {:.2f} GiB step workspace and buffers already take {:.2f} GiB; "
        "that leaves {} blocks of {} tokens ({:.2f} MiB each) but at least {} are needed "
        "(one sequence of the longest length); raise gpu_memory_utilization or lower "
        "max_num_batched_tokens",
        mem.total_bytes / kGiB, utilization, budget / kGiB, workspace_.capacity_bytes() / kGiB,
        mem.in_use_bytes / kGiB, blocks, block_size_, per_block / (1024.0 * 1024.0), min_blocks);
  }
  num_blocks_ = blocks;
  allocate_kv_cache(blocks);
  return blocks;
}

void ModelRunner::set_decode_graphs(int max_batch) {
  drop_graphs();
  graph_max_batch_ = std::max(0, max_batch);
}

int ModelRunner::graph_batch_size(int batch) const {
  if (batch <= 0 || batch > graph_max_batch_) return 0;
  int size = 1;
  while (size < batch && size < 8) size *= 2;
  if (size < batch) size = (batch + 7) / 8 * 8;
  return std::min(size, graph_max_batch_);
}

int64_t ModelRunner::graph_table_width() const {
  const int64_t longest = (config_.max_position_embeddings + block_size_ - 1) / block_size_;
  return std::max<int64_t>(1, std::min(num_blocks_, longest));
}

Status ModelRunner::apply_block_copies(const std::vector<BlockCopy>& copies) {
  for (const BlockCopy& cp : copies) {
    for (size_t l = 0; l < k_cache_.size(); ++l) {
      for (Tensor* cache : {&k_cache_[l], &v_cache_[l]}) {
        Tensor dst = cache->rows(cp.dst, cp.dst + 1);
        SW_RETURN_IF_ERROR(backend_.copy(cache->rows(cp.src, cp.src + 1), dst));
      }
    }
  }
  return Status();
}

// Also drops the persistent inputs: their width follows the KV pool, which may have changed.
void ModelRunner::drop_graphs() {
  if (!graphs_.empty()) backend_.clear_graphs();
  graphs_.clear();
  graph_ids_ = graph_positions_ = graph_slots_ = graph_seq_lens_ = graph_tables_ = Tensor();
}

Tensor ModelRunner::upload_i32(const std::vector<int32_t>& v, Shape shape) {
  Tensor host = Tensor::from_ints(v, std::move(shape));
  Tensor dev = backend_.alloc(host.shape(), DType::kI32);
  SW_CHECK(backend_.copy(host, dev).ok());
  return dev;
}

struct ModelRunner::Batch {
  int64_t num_tokens = 0;
  int64_t num_decode = 0;  // rows [0, num_decode) are decode tokens, the rest prefill
  Tensor ids, positions, slots;
  Tensor dec_seq_lens, dec_tables, pre_qsl, pre_seq_lens, pre_tables;
};

namespace {

// Block tables padded to the longest, as int32 [B, max_blocks].
std::vector<int32_t> padded_tables(const std::vector<const StepSequence*>& seqs,
                                   int64_t& max_blocks) {
  max_blocks = 1;
  for (const StepSequence* s : seqs)
    max_blocks = std::max<int64_t>(max_blocks, s->block_table.size());
  std::vector<int32_t> out(seqs.size() * static_cast<size_t>(max_blocks), 0);
  for (size_t i = 0; i < seqs.size(); ++i)
    std::copy(seqs[i]->block_table.begin(), seqs[i]->block_table.end(),
              out.begin() + static_cast<int64_t>(i) * max_blocks);
  return out;
}

bool is_decode(const StepSequence& s) { return s.tokens.size() == 1 && s.start_pos > 0; }

// KV slot (block * block_size + offset) of token position `pos` of the sequence.
int32_t slot_of(const StepSequence& s, int64_t pos, int block_size) {
  return static_cast<int32_t>(s.block_table[pos / block_size] * block_size + pos % block_size);
}

}  // namespace

// Metadata comes from another process: everything the kernels index with is checked here,
// so a bad step is an error and never an out-of-bounds access.
Status ModelRunner::check_metadata(const StepMetadata& meta) const {
  std::set<int64_t> seen;
  const int64_t max_len = config_.max_position_embeddings;
  for (const StepSequence& s : meta.seqs) {
    if (!seen.insert(s.seq_id).second)
      return invalid_argument("step: sequence {} appears twice", s.seq_id);
    const int64_t total = s.start_pos + static_cast<int64_t>(s.tokens.size());
    if (s.start_pos < 0 || total > max_len)
      return invalid_argument("step: sequence {} covers positions [{}, {}), outside [0, {})",
                              s.seq_id, s.start_pos, total, max_len);
    for (int32_t t : s.tokens)
      if (t < 0 || t >= config_.vocab_size)
        return invalid_argument("step: sequence {}: token id {} is outside the vocabulary [0, {})",
                                s.seq_id, t, config_.vocab_size);
    if (static_cast<int64_t>(s.block_table.size()) * block_size_ < total)
      return invalid_argument("step: sequence {}: block table of {} blocks cannot hold {} tokens",
                              s.seq_id, s.block_table.size(), total);
    for (int32_t b : s.block_table)
      if (b < 0 || b >= num_blocks_)
        return invalid_argument("step: sequence {}: block {} is outside the cache of {} blocks",
                                s.seq_id, b, num_blocks_);
  }
  for (const BlockCopy& cp : meta.copies)
    if (cp.src < 0 || cp.src >= num_blocks_ || cp.dst < 0 || cp.dst >= num_blocks_)
      return invalid_argument("step: block copy {} -> {} is outside the cache of {} blocks", cp.src,
                              cp.dst, num_blocks_);
  return Status();
}

Result<StepResult> ModelRunner::execute(const StepMetadata& meta) {
  SW_RETURN_IF_ERROR(check_metadata(meta));
  // A grown arena moves every per-step buffer, so graphs recorded against it are stale.
  if (workspace_.reset(backend_)) drop_graphs();
  kernels::WorkspaceScope scope(backend_, &workspace_);
  if (graph_eligible(meta)) return execute_decode_graph(meta);
  const int M = par_ ? par_->num_microbatches() : 1;
  if (M <= 1) return execute_microbatch(meta);
  // Contiguous runs of sequences with about T / M tokens each (some may be empty). Only the
  // metadata decides the split, so every rank of the dp group makes the same one.
  int64_t total = 0;
  for (const auto& s : meta.seqs) total += static_cast<int64_t>(s.tokens.size());
  std::vector<StepMetadata> parts(static_cast<size_t>(M));
  std::vector<std::vector<size_t>> index(static_cast<size_t>(M));
  int64_t seen = 0;
  for (size_t i = 0; i < meta.seqs.size(); ++i) {
    const int m = total == 0 ? 0 : static_cast<int>(std::min<int64_t>(M - 1, seen * M / total));
    seen += static_cast<int64_t>(meta.seqs[i].tokens.size());
    parts[m].seqs.push_back(meta.seqs[i]);
    index[m].push_back(i);
  }
  parts[0].copies = meta.copies;
  StepResult merged;
  merged.sampled.assign(meta.seqs.size(), -1);
  merged.logits_row.assign(meta.seqs.size(), -1);
  std::vector<Tensor> logits;
  int64_t rows = 0;
  for (int m = 0; m < M; ++m) {
    SW_ASSIGN_OR_RETURN(StepResult r, execute_microbatch(parts[m]));
    for (size_t j = 0; j < index[m].size(); ++j) {
      if (j < r.sampled.size()) merged.sampled[index[m][j]] = r.sampled[j];
      if (j < r.logits_row.size() && r.logits_row[j] >= 0)
        merged.logits_row[index[m][j]] = rows + r.logits_row[j];
    }
    if (r.logits.defined() && r.logits.numel() > 0) {
      rows += r.logits.dim(0);
      logits.push_back(r.logits);
    }
    moe::merge_layer_metrics(merged.moe_metrics, r.moe_metrics);
  }
  if (!logits.empty()) {
    const int64_t V = logits[0].dim(1);
    merged.logits = Tensor::empty({rows, V}, DType::kF32);
    int64_t at = 0;
    for (const Tensor& t : logits) {
      std::memcpy(merged.logits.data_as<float>() + at * V, t.data(), t.nbytes());
      at += t.dim(0);
    }
  }
  return merged;
}

Result<StepResult> ModelRunner::execute_microbatch(const StepMetadata& meta) {
  // The layer hook sees this micro-batch while (and only while) it is computed.
  struct MetaScope {
    const StepMetadata*& slot;
    ~MetaScope() { slot = nullptr; }
  } meta_scope{current_meta_};
  current_meta_ = &meta;
  auto& b = backend_;
  const auto& c = config_;
  const ShardSpec& sh = weights_.shard;
  const int block_size = block_size_;
  StepResult result;
  result.sampled.assign(meta.seqs.size(), -1);
  result.logits_row.assign(meta.seqs.size(), -1);

  SW_RETURN_IF_ERROR(apply_block_copies(meta.copies));

  // ---- Execution order: decode tokens first, then prefill chunks ------------------------
  std::vector<size_t> order;
  for (size_t i = 0; i < meta.seqs.size(); ++i)
    if (is_decode(meta.seqs[i])) order.push_back(i);
  Batch bt;
  bt.num_decode = static_cast<int64_t>(order.size());
  for (size_t i = 0; i < meta.seqs.size(); ++i)
    if (!meta.seqs[i].tokens.empty() && !is_decode(meta.seqs[i])) order.push_back(i);

  std::vector<int32_t> ids, positions, slots, dec_lens, pre_qsl{0}, pre_lens;
  std::vector<int64_t> row_of(meta.seqs.size(), -1);
  std::vector<const StepSequence*> dec_seqs, pre_seqs;
  for (size_t oi = 0; oi < order.size(); ++oi) {
    const StepSequence& s = meta.seqs[order[oi]];
    row_of[order[oi]] = static_cast<int64_t>(ids.size());
    const int64_t total = s.start_pos + static_cast<int64_t>(s.tokens.size());
    for (size_t j = 0; j < s.tokens.size(); ++j) {
      const int64_t pos = s.start_pos + static_cast<int64_t>(j);
      ids.push_back(s.tokens[j]);
      positions.push_back(static_cast<int32_t>(pos));
      slots.push_back(slot_of(s, pos, block_size));
    }
    if (static_cast<int64_t>(oi) < bt.num_decode) {
      dec_lens.push_back(static_cast<int32_t>(total));
      dec_seqs.push_back(&s);
    } else {
      pre_lens.push_back(static_cast<int32_t>(total));
      pre_qsl.push_back(static_cast<int32_t>(ids.size() - static_cast<size_t>(bt.num_decode)));
      pre_seqs.push_back(&s);
    }
  }
  bt.num_tokens = static_cast<int64_t>(ids.size());
  const int64_t T = bt.num_tokens, H = c.hidden_size;

  if (T == 0) {
    // This dp group has nothing to do, but EP collectives span every dp group of the stage.
    if (par_ && par_->moe_spans_dp_groups()) {
      // Metrics add a collective too: every rank of the stage must take part alike.
      Tensor x = b.alloc({0, H}, dtype_), out = b.alloc({0, H}, dtype_);
      for (const LayerWeights& w : weights_.layers) {
        if (!w.moe) continue;
        moe::MoeLayerMetrics m;
        SW_RETURN_IF_ERROR(run_moe(w, x, out, collect_moe_metrics_ ? &m : nullptr));
        if (collect_moe_metrics_) result.moe_metrics.push_back(std::move(m));
      }
    }
    return result;
  }

  int64_t dec_max = 1, pre_max = 1;
  std::vector<int32_t> dec_tab = padded_tables(dec_seqs, dec_max);
  std::vector<int32_t> pre_tab = padded_tables(pre_seqs, pre_max);
  const int64_t num_prefill = static_cast<int64_t>(pre_seqs.size());
  bt.ids = upload_i32(ids, {T});
  bt.positions = upload_i32(positions, {T});
  bt.slots = upload_i32(slots, {T});
  bt.dec_seq_lens = upload_i32(dec_lens, {bt.num_decode});
  bt.dec_tables = upload_i32(dec_tab, {bt.num_decode, dec_max});
  bt.pre_qsl = upload_i32(pre_qsl, {num_prefill + 1});
  bt.pre_seq_lens = upload_i32(pre_lens, {num_prefill});
  bt.pre_tables = upload_i32(pre_tab, {num_prefill, pre_max});

  Tensor hidden = b.alloc({T, H}, dtype_);
  Tensor residual = b.alloc({T, H}, dtype_);
  SW_RETURN_IF_ERROR(
      forward(bt, hidden, residual, collect_moe_metrics_ ? &result.moe_metrics : nullptr));
  if (!sh.has_lm_head) {
    SW_CHECK_MSG(par_ != nullptr, "a shard without the LM head needs a next pipeline stage");
    SW_RETURN_IF_ERROR(par_->send_to_next_stage(hidden, residual));
    return result;
  }
  return finish(meta, row_of, hidden, residual, std::move(result));
}

Status ModelRunner::forward(const Batch& bt, Tensor& hidden, Tensor& residual,
                            std::vector<moe::MoeLayerMetrics>* metrics) {
  const ShardSpec& sh = weights_.shard;
  if (sh.has_embedding) {
    SW_RETURN_IF_ERROR(backend_.embedding(bt.ids, weights_.embed, sh.vocab_begin, hidden));
    if (par_) SW_RETURN_IF_ERROR(par_->tp_all_reduce(hidden));
    SW_RETURN_IF_ERROR(backend_.copy(hidden, residual));
  } else {
    SW_CHECK_MSG(par_ != nullptr, "a shard without the embedding needs a previous pipeline stage");
    SW_RETURN_IF_ERROR(par_->recv_from_prev_stage(hidden, residual));
  }
  for (int l = 0; l < sh.num_layers(); ++l) {
    const int64_t mark = workspace_.used_bytes();  // a layer's temporaries die with it
    SW_RETURN_IF_ERROR(run_layer(l, bt, hidden, residual, metrics));
    workspace_.rewind_to(mark);
  }
  return Status();
}

bool ModelRunner::graph_eligible(const StepMetadata& meta) const {
  if (graph_max_batch_ <= 0 || !backend_.supports_graphs() || par_ != nullptr ||
      collect_moe_metrics_ || meta.seqs.empty() ||
      static_cast<int64_t>(meta.seqs.size()) > graph_max_batch_)
    return false;
  // A capacity limit depends on the token count, which padding changes.
  if (config_.num_experts > 0 && (moe_options_.capacity_factor || moe_options_.capacity >= 0))
    return false;
  const int64_t width = graph_table_width();
  for (const StepSequence& s : meta.seqs)
    if (!is_decode(s) || static_cast<int64_t>(s.block_table.size()) > width) return false;
  return true;
}

// Decode step from a graph: inputs go to persistent buffers (padding rows: token 0, no KV
// write, zero context, so they attend to nothing), the captured forward produces float32
// logits for every row, and sampling runs eagerly on the real rows (its parameters change
// every step).
Result<StepResult> ModelRunner::execute_decode_graph(const StepMetadata& meta) {
  auto& b = backend_;
  const int64_t B = static_cast<int64_t>(meta.seqs.size());
  const int size = graph_batch_size(static_cast<int>(B));
  const int block_size = block_size_;
  if (!graph_ids_.defined()) {
    kernels::WorkspaceScope persistent(b, nullptr);
    const int64_t n = graph_max_batch_;
    graph_ids_ = b.alloc({n}, DType::kI32);
    graph_positions_ = b.alloc({n}, DType::kI32);
    graph_slots_ = b.alloc({n}, DType::kI32);
    graph_seq_lens_ = b.alloc({n}, DType::kI32);
    graph_tables_ = b.alloc({n, graph_table_width()}, DType::kI32);
  }
  SW_RETURN_IF_ERROR(apply_block_copies(meta.copies));
  const int64_t W = graph_tables_.dim(1);
  std::vector<int32_t> ids(size, 0), positions(size, 0), slots(size, -1), lens(size, 0);
  std::vector<int32_t> tables(static_cast<size_t>(size * W), 0);
  for (int64_t i = 0; i < B; ++i) {
    const StepSequence& s = meta.seqs[i];
    const int64_t pos = s.start_pos;
    ids[i] = s.tokens[0];
    positions[i] = static_cast<int32_t>(pos);
    slots[i] = slot_of(s, pos, block_size);
    lens[i] = static_cast<int32_t>(pos + 1);
    std::copy(s.block_table.begin(), s.block_table.end(), tables.begin() + i * W);
  }
  Batch bt;
  bt.num_tokens = bt.num_decode = size;
  bt.ids = graph_ids_.rows(0, size);
  bt.positions = graph_positions_.rows(0, size);
  bt.slots = graph_slots_.rows(0, size);
  bt.dec_seq_lens = graph_seq_lens_.rows(0, size);
  bt.dec_tables = graph_tables_.rows(0, size);
  for (auto [host, dev] : {std::pair{&ids, &bt.ids}, std::pair{&positions, &bt.positions},
                           std::pair{&slots, &bt.slots}, std::pair{&lens, &bt.dec_seq_lens},
                           std::pair{&tables, &bt.dec_tables}}) {
    Tensor src(host->data(), dev->shape(), DType::kI32, Device::kCpu);
    SW_RETURN_IF_ERROR(b.copy(src, *dev));
  }

  const int64_t key = graph_key_base_ + size;
  auto it = graphs_.find(size);
  if (it == graphs_.end() || !b.has_graph(key)) {
    // Capture: the ops are recorded, not run, so the replay below is the first execution.
    CapturedGraph g;
    SW_RETURN_IF_ERROR(b.begin_graph_capture());
    Status st = [&]() -> Status {
      const int64_t H = config_.hidden_size, V = config_.vocab_size;
      Tensor hidden = b.alloc({size, H}, dtype_), residual = b.alloc({size, H}, dtype_);
      SW_RETURN_IF_ERROR(forward(bt, hidden, residual, nullptr));
      Tensor normed = b.alloc({size, H}, dtype_);
      SW_RETURN_IF_ERROR(b.rms_norm(hidden, weights_.final_norm,
                                    static_cast<float>(config_.rms_norm_eps), normed, &residual));
      Tensor logits = b.alloc({size, V}, dtype_);
      SW_RETURN_IF_ERROR(b.gemm(normed, weights_.lm_head, logits));
      g.logits_f32 = logits;
      if (dtype_ != DType::kF32) {
        g.logits_f32 = b.alloc({size, V}, DType::kF32);
        SW_RETURN_IF_ERROR(b.convert(logits, g.logits_f32));
      }
      return Status();
    }();
    const Status ended = b.end_graph_capture(key);
    if (!st.ok() || !ended.ok()) {
      // Nothing ran and nothing was appended: the step is still whole, so serve it eagerly
      // and stop trying graphs rather than fail requests.
      spdlog::warn("decode graphs off: capturing {} rows failed: {}", size,
                   (st.ok() ? ended : st).to_string());
      drop_graphs();
      graph_max_batch_ = 0;
      return execute_microbatch(meta);
    }
    g.arena_mark = workspace_.used_bytes();
    it = graphs_.insert_or_assign(size, std::move(g)).first;
    ++graph_captures_;
  } else {
    workspace_.advance_to(it->second.arena_mark);  // the graph's buffers stay its own
  }
  SW_RETURN_IF_ERROR(b.replay_graph(key));
  ++graph_replays_;

  StepResult result;
  result.sampled.assign(meta.seqs.size(), -1);
  result.logits_row.assign(meta.seqs.size(), -1);
  std::vector<int64_t> sample_row(meta.seqs.size(), -1);
  for (int64_t i = 0; i < B; ++i) {
    if (meta.seqs[i].sample) sample_row[i] = i;
    if (meta.seqs[i].keep_logits) result.logits_row[i] = i;
  }
  SW_RETURN_IF_ERROR(sample_and_keep(meta, it->second.logits_f32.rows(0, B), sample_row, result));
  return result;
}

Result<StepResult> ModelRunner::finish(const StepMetadata& meta, const std::vector<int64_t>& row_of,
                                       Tensor& hidden, Tensor& residual, StepResult result) {
  auto& b = backend_;
  const auto& c = config_;
  const int64_t T = hidden.dim(0), H = c.hidden_size;
  Tensor normed = b.alloc({T, H}, dtype_);
  SW_RETURN_IF_ERROR(b.rms_norm(hidden, weights_.final_norm, static_cast<float>(c.rms_norm_eps),
                                normed, &residual));

  // ---- LM head on the rows that need logits ----------------------------------------------
  std::vector<int64_t> sel;                               // hidden rows to project
  std::vector<int64_t> sample_sel(meta.seqs.size(), -1);  // index into sel of the sampled row
  for (size_t i = 0; i < meta.seqs.size(); ++i) {
    const StepSequence& s = meta.seqs[i];
    if (s.tokens.empty()) continue;
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    if (s.keep_logits) {
      result.logits_row[i] = static_cast<int64_t>(sel.size());
      for (int64_t j = 0; j < n; ++j) sel.push_back(row_of[i] + j);
      if (s.sample) sample_sel[i] = static_cast<int64_t>(sel.size()) - 1;
    } else if (s.sample) {
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
  Tensor logits = b.alloc({N, weights_.lm_head.dim(0)}, dtype_);
  SW_RETURN_IF_ERROR(b.gemm(gathered, weights_.lm_head, logits));
  if (par_) {
    Tensor full = b.alloc({N, c.vocab_size}, dtype_);
    SW_RETURN_IF_ERROR(par_->gather_logits(logits, full));
    logits = full;
  }
  Tensor logits_f32 = logits;
  if (dtype_ != DType::kF32) {
    logits_f32 = b.alloc({N, c.vocab_size}, DType::kF32);
    SW_RETURN_IF_ERROR(b.convert(logits, logits_f32));
  }

  SW_RETURN_IF_ERROR(sample_and_keep(meta, logits_f32, sample_sel, result));
  return result;
}

Status ModelRunner::sample_and_keep(const StepMetadata& meta, const Tensor& logits_f32,
                                    const std::vector<int64_t>& sample_sel, StepResult& result) {
  auto& b = backend_;
  const auto& c = config_;
  const int64_t N = logits_f32.dim(0);
  std::vector<kernels::SamplingRow> rows;
  std::vector<size_t> who;
  for (size_t i = 0; i < meta.seqs.size(); ++i)
    if (sample_sel[i] >= 0) {
      rows.push_back(meta.seqs[i].sampling);
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
  const bool any_keep = std::any_of(meta.seqs.begin(), meta.seqs.end(),
                                    [](const StepSequence& s) { return s.keep_logits; });
  if (any_keep) {
    // Only the rows asked for (sample-only rows stay on the device), compacted in input order.
    int64_t kept = 0;
    for (size_t i = 0; i < meta.seqs.size(); ++i)
      if (meta.seqs[i].keep_logits) kept += static_cast<int64_t>(meta.seqs[i].tokens.size());
    result.logits = Tensor::empty({kept, c.vocab_size}, DType::kF32);
    int64_t at = 0;
    for (size_t i = 0; i < meta.seqs.size(); ++i) {
      if (!meta.seqs[i].keep_logits || result.logits_row[i] < 0) continue;
      const int64_t n = static_cast<int64_t>(meta.seqs[i].tokens.size());
      Tensor dst = result.logits.rows(at, at + n);
      SW_RETURN_IF_ERROR(
          b.copy(logits_f32.rows(result.logits_row[i], result.logits_row[i] + n), dst));
      result.logits_row[i] = at;
      at += n;
    }
    SW_RETURN_IF_ERROR(b.synchronize());
  }
  return Status();
}

Status ModelRunner::run_moe(const LayerWeights& w, const Tensor& x, Tensor& out,
                            moe::MoeLayerMetrics* metrics) {
  moe::MoeOptions o = moe_options_;
  o.top_k = config_.num_experts_per_tok;
  o.renormalize = config_.norm_topk_prob;
  if (par_) return par_->moe_ffn(x, w.router_w, w.experts_gate_up, w.experts_down, o, out, metrics);
  return moe::moe_ffn(backend_, x, w.router_w, w.experts_gate_up, w.experts_down, o, out, metrics);
}

Status ModelRunner::run_layer(int li, const Batch& bt, Tensor& hidden, Tensor& residual,
                              std::vector<moe::MoeLayerMetrics>* metrics) {
  auto& b = backend_;
  const auto& c = config_;
  const ShardSpec& sh = weights_.shard;
  const LayerWeights& w = weights_.layers[li];
  const int global_layer = sh.layer_begin + li;
  const int64_t T = bt.num_tokens, H = c.hidden_size, D = c.head_dim;
  const int64_t Hq = sh.num_q_heads(), Hk = sh.num_kv_heads();
  const float eps = static_cast<float>(c.rms_norm_eps);

  Tensor x = b.alloc({T, H}, dtype_);
  if (global_layer == 0) {
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
  SW_RETURN_IF_ERROR(b.rope(q3, k3, bt.positions, inv_freq_, kernels::RopeLayout::kNeox));
  SW_RETURN_IF_ERROR(b.kv_cache_write(k3, v3, bt.slots, k_cache_[li], v_cache_[li]));
  if (layer_hook_ && current_meta_) layer_hook_(global_layer, *current_meta_);
  Tensor attn = b.alloc({T, Hq, D}, dtype_);
  kernels::AttentionParams ap{1.0f / std::sqrt(static_cast<float>(D))};
  if (bt.num_decode > 0) {
    Tensor out = attn.rows(0, bt.num_decode);
    SW_RETURN_IF_ERROR(b.attention_decode(q3.rows(0, bt.num_decode), k_cache_[li], v_cache_[li],
                                          bt.dec_seq_lens, bt.dec_tables, ap, out));
  }
  if (bt.num_decode < T) {
    Tensor out = attn.rows(bt.num_decode, T);
    SW_RETURN_IF_ERROR(b.attention_prefill(q3.rows(bt.num_decode, T), k_cache_[li], v_cache_[li],
                                           bt.pre_qsl, bt.pre_seq_lens, bt.pre_tables, ap, out));
  }
  SW_RETURN_IF_ERROR(b.gemm(attn.reshape({T, Hq * D}), w.o_w, hidden));
  if (par_) SW_RETURN_IF_ERROR(par_->tp_all_reduce(hidden));
  SW_RETURN_IF_ERROR(b.rms_norm(hidden, w.post_norm, eps, x, &residual));
  if (w.moe) {
    moe::MoeLayerMetrics m;
    SW_RETURN_IF_ERROR(run_moe(w, x, hidden, metrics ? &m : nullptr));
    if (metrics) metrics->push_back(std::move(m));
  } else {
    const int64_t I = w.down_w.dim(1);
    Tensor gu = b.alloc({T, 2 * I}, dtype_), act = b.alloc({T, I}, dtype_);
    SW_RETURN_IF_ERROR(b.gemm(x, w.gate_up_w, gu));
    SW_RETURN_IF_ERROR(b.silu_and_mul(gu, act));
    SW_RETURN_IF_ERROR(b.gemm(act, w.down_w, hidden));
    if (par_) SW_RETURN_IF_ERROR(par_->tp_all_reduce(hidden));
  }
  return Status();
}

namespace {

// One block's K or V: [block_size, kv heads, head_dim] elements of `element` bytes.
struct KvSlice {
  int64_t block_size, heads, head_dim, head_offset, num_heads, element;
  int64_t row_bytes() const { return num_heads * head_dim * element; }
  int64_t block_bytes() const { return block_size * row_bytes(); }
  int64_t src_offset(int64_t slot) const {
    return ((slot * heads + head_offset) * head_dim) * element;
  }
};

// The slice of layer `layer`, KV heads [head_begin, head_end), of `blocks`, checked against
// what this rank holds; `op` names the caller in errors.
Result<KvSlice> kv_slice(const char* op, const ShardSpec& sh, int layer, int head_begin,
                         int head_end, const std::vector<int32_t>& blocks, int64_t num_blocks,
                         int64_t block_size, int64_t head_dim, DType dtype) {
  if (layer < sh.layer_begin || layer >= sh.layer_end || head_begin < sh.kv_head_begin ||
      head_end > sh.kv_head_end || head_begin >= head_end)
    return invalid_argument(
        "{}: layer {} heads [{}, {}) are not all held here (layers [{}, {}), KV heads [{}, {}))",
        op, layer, head_begin, head_end, sh.layer_begin, sh.layer_end, sh.kv_head_begin,
        sh.kv_head_end);
  for (int32_t b : blocks)
    if (b < 0 || b >= num_blocks)
      return invalid_argument("{}: block {} outside the cache of {}", op, b, num_blocks);
  return KvSlice{block_size,
                 sh.num_kv_heads(),
                 head_dim,
                 head_begin - sh.kv_head_begin,
                 head_end - head_begin,
                 static_cast<int64_t>(dtype_size(dtype))};
}

}  // namespace

Status ModelRunner::export_kv(int layer, int head_begin, int head_end,
                              const std::vector<int32_t>& blocks, std::string* out) {
  const ShardSpec& sh = weights_.shard;
  SW_ASSIGN_OR_RETURN(const KvSlice sl,
                      kv_slice("export_kv", sh, layer, head_begin, head_end, blocks, num_blocks_,
                               block_size_, config_.head_dim, dtype_));
  const int li = layer - sh.layer_begin;
  out->resize(static_cast<size_t>(2 * static_cast<int64_t>(blocks.size()) * sl.block_bytes()));
  char* dst = out->data();
  const bool host = backend_.device() == Device::kCpu;
  Tensor staging;
  if (!host) staging = Tensor::empty({1, block_size_, sh.num_kv_heads(), config_.head_dim}, dtype_);
  for (Tensor* cache : {&k_cache_[li], &v_cache_[li]}) {
    for (int32_t b : blocks) {
      Tensor row = cache->rows(b, b + 1);
      const char* src = static_cast<const char*>(row.data());
      if (!host) {
        SW_RETURN_IF_ERROR(backend_.copy(row, staging));  // complete when it returns
        src = static_cast<const char*>(staging.data());
      }
      for (int64_t slot = 0; slot < block_size_; ++slot) {
        std::memcpy(dst, src + sl.src_offset(slot), static_cast<size_t>(sl.row_bytes()));
        dst += sl.row_bytes();
      }
    }
  }
  return Status();
}

Status ModelRunner::import_kv(int layer, int head_begin, int head_end,
                              const std::vector<int32_t>& blocks, std::string_view bytes) {
  const ShardSpec& sh = weights_.shard;
  SW_ASSIGN_OR_RETURN(const KvSlice sl,
                      kv_slice("import_kv", sh, layer, head_begin, head_end, blocks, num_blocks_,
                               block_size_, config_.head_dim, dtype_));
  const int64_t want = 2 * static_cast<int64_t>(blocks.size()) * sl.block_bytes();
  if (static_cast<int64_t>(bytes.size()) != want)
    return invalid_argument(
        "import_kv: {} bytes for {} blocks of layer {} heads [{}, {}), expected {}", bytes.size(),
        blocks.size(), layer, head_begin, head_end, want);
  const int li = layer - sh.layer_begin;
  const char* src = bytes.data();
  const bool host = backend_.device() == Device::kCpu;
  Tensor staging;
  if (!host) staging = Tensor::empty({1, block_size_, sh.num_kv_heads(), config_.head_dim}, dtype_);
  for (Tensor* cache : {&k_cache_[li], &v_cache_[li]}) {
    for (int32_t b : blocks) {
      Tensor row = cache->rows(b, b + 1);
      char* dst = static_cast<char*>(row.data());
      if (!host) {
        if (sl.num_heads != sl.heads) SW_RETURN_IF_ERROR(backend_.copy(row, staging));
        dst = static_cast<char*>(staging.data());
      }
      for (int64_t slot = 0; slot < block_size_; ++slot) {
        std::memcpy(dst + sl.src_offset(slot), src, static_cast<size_t>(sl.row_bytes()));
        src += sl.row_bytes();
      }
      if (!host) SW_RETURN_IF_ERROR(backend_.copy(staging, row));
    }
  }
  if (!host) SW_RETURN_IF_ERROR(backend_.synchronize());  // the staging buffer is reused
  return Status();
}

}  // namespace sw::worker

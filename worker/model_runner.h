// ModelRunner: executes one step of the model for a batch that mixes prefill chunks and
// decode tokens of different sequences, over a paged KV cache, and samples on the device.
// The forward knows nothing of parallelism: it holds one rank's shard (ShardSpec) and calls
// parallel::ForwardParallelism at the seams (null = one process, whole model). It owns the
// KV cache tensors but no block table: execute() runs a StepMetadata whose blocks the
// coordinator's scheduler chose (coordinator::KvBlockManager).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "model/model_config.h"
#include "moe/expert_ffn.h"
#include "parallel/forward_parallelism.h"
#include "worker/model_weights.h"
#include "worker/step_metadata.h"

namespace sw::worker {

struct KvCacheOptions {
  int64_t num_blocks = 256;
  int block_size = 16;
};

// Inverse RoPE frequencies with the config's rope_scaling applied: float32 [head_dim / 2].
std::vector<float> rope_inv_freq(const model::ModelConfig& config);

class ModelRunner {
 public:
  ModelRunner(model::ModelConfig config, ModelWeights weights, kernels::Backend& backend,
              KvCacheOptions kv, parallel::ForwardParallelism* parallelism = nullptr);

  const model::ModelConfig& config() const { return config_; }
  // The forward for a step whose KV placement is decided: block ids must be below
  // num_kv_blocks() and every table must cover its sequence. Stages without the LM head send
  // their output to the next stage and return a result with no tokens.
  Result<StepResult> execute(const StepMetadata& meta);
  int64_t num_kv_blocks() const { return num_blocks_; }
  int kv_block_size() const { return block_size_; }
  kernels::Backend& backend() { return backend_; }
  const ShardSpec& shard() const { return weights_.shard; }
  void set_collect_moe_metrics(bool on) { collect_moe_metrics_ = on; }
  // Capacity and drop policy of MoE layers (top_k and renormalisation come from the config).
  void set_moe_options(const moe::MoeOptions& o) { moe_options_ = o; }

  // Decode steps of up to `max_batch` sequences run as graphs (CUDA graphs; recorded ops on a
  // CPU backend made with graphs on): the batch is padded to the next capture size (1, 2, 4,
  // 8, then multiples of 8), captured on first use and replayed after. Only where a step can
  // be replayed exactly: one process (no parallelism), MoE without a capacity limit and
  // without metrics; other steps, and backends without graphs, run eagerly. If a capture
  // fails, that step runs eagerly and graphs are switched off (with a warning). 0: off.
  void set_decode_graphs(int max_batch);
  int decode_graph_max_batch() const { return graph_max_batch_; }
  // Steps replayed from a graph, and graphs captured, since the runner was made.
  int64_t graph_replays() const { return graph_replays_; }
  int64_t graph_captures() const { return graph_captures_; }
  // Capture size used for a decode batch of `batch` sequences (0: too large for graphs).
  int graph_batch_size(int batch) const;

  // Per-step temporaries come from this arena (one device allocation, grown to the largest
  // step seen), so steady-state steps allocate no device memory.
  const kernels::Workspace& workspace() const { return workspace_; }

  // Start-up sizing of the KV cache from device memory, vLLM-style: runs one profile step of
  // `profile_tokens` prompt tokens (the largest step the scheduler will send, so the arena
  // reaches its full size), then replaces the cache with as many blocks as fit in
  //   utilization * total memory - what this backend already holds (weights, arena, ...).
  // The cache must hold the profile prompt when called; what it held is gone after. Errors
  // (naming the numbers) when fewer than `min_blocks` blocks fit. Returns the new count.
  Result<int64_t> fit_kv_cache_to_memory(double utilization, int64_t profile_tokens,
                                         int64_t min_blocks);
  // Bytes of one KV block over every local layer (K and V).
  int64_t kv_block_bytes() const;

  // Disaggregation. K and V of global layer `layer` and global KV heads [head_begin, head_end)
  // (all held by this shard) in `blocks`, as [K|V][block][slot][head][head_dim] in the cache
  // dtype. Call between steps, or from the layer hook (the step's own thread).
  Status export_kv(int layer, int head_begin, int head_end, const std::vector<int32_t>& blocks,
                   std::string* out);
  // Writes what export_kv produced (for the same layer, heads and number of blocks) into
  // `blocks`. Call between steps; the size must match exactly.
  Status import_kv(int layer, int head_begin, int head_end, const std::vector<int32_t>& blocks,
                   std::string_view bytes);
  // Called on the step's thread right after each layer has written its KV, with the global
  // layer and the micro-batch being computed (so KV can leave while later layers run).
  using LayerHook = std::function<void(int layer, const StepMetadata& microbatch)>;
  void set_layer_hook(LayerHook hook) { layer_hook_ = std::move(hook); }

 private:
  struct Batch;  // device metadata of one step
  Status check_metadata(const StepMetadata& meta) const;
  Result<StepResult> execute_microbatch(const StepMetadata& meta);
  Status run_layer(int local_layer, const Batch& b, Tensor& hidden, Tensor& residual,
                   std::vector<moe::MoeLayerMetrics>* metrics);
  Status run_moe(const LayerWeights& w, const Tensor& x, Tensor& out,
                 moe::MoeLayerMetrics* metrics);
  Result<StepResult> finish(const StepMetadata& meta, const std::vector<int64_t>& row_of,
                            Tensor& hidden, Tensor& residual, StepResult result);
  // Samples the rows of logits_f32 [rows, V] that sample_row names (per input, -1: none) and
  // copies out the rows of inputs with keep_logits (result.logits_row: first row per input).
  Status sample_and_keep(const StepMetadata& meta, const Tensor& logits_f32,
                         const std::vector<int64_t>& sample_row, StepResult& result);
  // Embedding (or the previous stage's output) and this shard's layers.
  Status forward(const Batch& bt, Tensor& hidden, Tensor& residual,
                 std::vector<moe::MoeLayerMetrics>* metrics);
  bool graph_eligible(const StepMetadata& meta) const;
  Result<StepResult> execute_decode_graph(const StepMetadata& meta);
  void allocate_kv_cache(int64_t num_blocks);
  Status apply_block_copies(const std::vector<BlockCopy>& copies);  // copy-on-write, first
  // Block-table entries of the graphs' persistent table: the model's longest sequence.
  int64_t graph_table_width() const;
  void drop_graphs();
  Tensor upload_i32(const std::vector<int32_t>& v, Shape shape);

  model::ModelConfig config_;
  ModelWeights weights_;
  kernels::Backend& backend_;
  parallel::ForwardParallelism* par_;
  int64_t num_blocks_;
  int block_size_;
  std::vector<Tensor> k_cache_, v_cache_;  // per local layer [num_blocks, block_size, Hk_local, D]
  Tensor inv_freq_;
  DType dtype_;
  bool collect_moe_metrics_ = false;
  LayerHook layer_hook_;
  const StepMetadata* current_meta_ = nullptr;  // the micro-batch being computed
  moe::MoeOptions moe_options_;
  kernels::Workspace workspace_;

  // Decode graphs: persistent inputs sized for graph_max_batch_ rows and graph_table_width()
  // block-table entries, and per capture size the arena mark after capture and the graph's
  // float32 logits [size, V].
  struct CapturedGraph {
    int64_t arena_mark = 0;
    Tensor logits_f32;
  };
  int graph_max_batch_ = 0;
  int64_t graph_key_base_ = 0;  // keys of this runner's graphs on a shared backend
  Tensor graph_ids_, graph_positions_, graph_slots_, graph_seq_lens_, graph_tables_;
  std::map<int, CapturedGraph> graphs_;
  int64_t graph_replays_ = 0, graph_captures_ = 0;
};

}  // namespace sw::worker

// ModelRunner: executes one step of the model for a batch that mixes prefill chunks and
// decode tokens of different sequences, over a paged KV cache, and samples on the device.
// The forward knows nothing of parallelism: it holds one rank's shard (ShardSpec) and calls
// parallel::ForwardParallelism at the seams (null = one process, whole model).
//
// Two entry points: step() allocates KV blocks from the runner's own pool (one process);
// execute() runs a StepMetadata whose block tables a coordinator already chose (workers).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "model/model_config.h"
#include "moe/expert_ffn.h"
#include "parallel/forward_parallelism.h"
#include "worker/kv_block_pool.h"
#include "worker/model_weights.h"

namespace sw::worker {

struct KvCacheOptions {
  int64_t num_blocks = 256;
  int block_size = 16;
};

struct SequenceInput {
  int64_t seq_id = 0;
  int kv_group = 0;             // which KV pool (dp group) holds the sequence
  std::vector<int32_t> tokens;  // new tokens, appended after what the cache already holds
  bool sample = true;           // sample a token from the last position's logits
  kernels::SamplingRow sampling;
  bool keep_logits = false;  // return float32 logits for every new token's position
};

// One sequence of a step with its KV placement decided: what a coordinator sends a worker.
struct StepSequence {
  int64_t seq_id = 0;
  std::vector<int32_t> tokens;
  int64_t start_pos = 0;             // tokens already cached before this step
  std::vector<int32_t> block_table;  // covers start_pos + tokens.size() tokens
  bool sample = true;
  kernels::SamplingRow sampling;
  bool keep_logits = false;
};

struct StepMetadata {
  std::vector<StepSequence> seqs;
  std::vector<BlockCopy> copies;  // copy-on-write block copies to do first
};

struct StepResult {
  std::vector<int32_t> sampled;  // per input: the sampled token, or -1 when !sample
  // Host float32 [rows, V] for inputs with keep_logits, in input order; logits_row[i] is the
  // first row of input i (or -1).
  Tensor logits;
  std::vector<int64_t> logits_row;
  std::vector<moe::MoeLayerMetrics> moe_metrics;  // per MoE layer, when collect_moe_metrics
};

// What the Generator drives: a local runner or a coordinator's view of a worker pool.
class StepExecutor {
 public:
  virtual ~StepExecutor() = default;
  virtual const model::ModelConfig& config() const = 0;
  virtual int num_kv_groups() const = 0;
  virtual KvBlockPool& kv_pool(int group) = 0;
  // Appends each input's tokens to its sequence's cache in pool `kv_group` (creating it on
  // first use) and runs the model. If a pool cannot hold the batch, nothing is appended and
  // kResourceExhausted names the shortfall.
  virtual Result<StepResult> step(const std::vector<SequenceInput>& batch) = 0;
  virtual Status free_sequence(int64_t seq_id, int kv_group) = 0;
};

// Validates the inputs of one KV group and checks the pool can hold them all; changes nothing.
Status check_step(const KvBlockPool& pool, const std::vector<const SequenceInput*>& inputs,
                  int64_t vocab_size);
// check_step, then appends the inputs and returns their metadata in input order (inputs with
// no tokens are kept, with no blocks).
Result<StepMetadata> allocate_step(KvBlockPool& pool,
                                   const std::vector<const SequenceInput*>& inputs,
                                   int64_t vocab_size);

// Inverse RoPE frequencies with the config's rope_scaling applied: float32 [head_dim / 2].
std::vector<float> rope_inv_freq(const model::ModelConfig& config);

class ModelRunner : public StepExecutor {
 public:
  ModelRunner(model::ModelConfig config, ModelWeights weights, kernels::Backend& backend,
              KvCacheOptions kv, parallel::ForwardParallelism* parallelism = nullptr);

  const model::ModelConfig& config() const override { return config_; }
  int num_kv_groups() const override { return 1; }
  KvBlockPool& kv_pool(int) override { return pool_; }
  KvBlockPool& kv_pool() { return pool_; }
  Result<StepResult> step(const std::vector<SequenceInput>& batch) override;
  Status free_sequence(int64_t seq_id, int = 0) override { return pool_.free_sequence(seq_id); }

  // The forward for a step whose KV placement is decided. Stages without the LM head send
  // their output to the next stage and return a result with no tokens.
  Result<StepResult> execute(const StepMetadata& meta);
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
  // The cache must hold the profile prompt when called. Errors (naming the numbers) when
  // fewer than `min_blocks` blocks fit. Returns the new block count; the pool is empty after.
  Result<int64_t> fit_kv_cache_to_memory(double utilization, int64_t profile_tokens,
                                         int64_t min_blocks);
  // Bytes of one KV block over every local layer (K and V).
  int64_t kv_block_bytes() const;

 private:
  struct Batch;  // device metadata of one step
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
  KvBlockPool pool_;
  std::vector<Tensor> k_cache_, v_cache_;  // per local layer [num_blocks, block_size, Hk_local, D]
  Tensor inv_freq_;
  DType dtype_;
  bool collect_moe_metrics_ = false;
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

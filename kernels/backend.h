// kernels::Backend: allocation, copies and every op the engine runs. Mechanism only: no
// model or request concepts here. The CPU backend is the reference; other backends are tested
// against it by tests/unit/test_backend_ops.cpp. To add an op: declare it here with shapes and
// dtypes, add it to Op, implement it in cpu/, and add a case to test_backend_ops.
//
// Conventions for every op:
// * Tensors passed in live on this backend's device() and are contiguous.
// * "float" dtype = float32, bfloat16 or float16; ops compute in float32 and round on store.
// * Index/metadata tensors are int32 on the device; host-side vectors are noted explicitly.
// * Outputs are preallocated by the caller; ops never allocate device memory on the hot path
//   except where noted (CPU scratch is allowed).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"

namespace sw::kernels {

enum class Op {
  kGemm,
  kGroupedGemm,
  kRmsNorm,
  kRope,
  kKvCacheWrite,
  kAttentionPrefill,
  kAttentionDecode,
  kSiluAndMul,
  kRouterTopk,
  kMoeAssign,
  kMoePermute,
  kMoeUnpermute,
  kSample,
  kEmbedding,
  kAdd,
  kConvert,
};
const char* op_name(Op op);

// RoPE layout: kNeox rotates halves (x[i], x[i + d/2]) — Llama/Mistral/Qwen/Mixtral in HF;
// kInterleaved rotates pairs (x[2i], x[2i + 1]) — GPT-J / original Meta checkpoints.
enum class RopeLayout { kNeox, kInterleaved };

// Batch-priority routing order for MoeAssign (see DESIGN.md "MoE routing"). The weights a
// score is taken from are moe_assign's `priority_weights` (the caller chooses them).
enum class DropPolicy {
  kOrder,        // slots filled in token order
  kPriorityMax,  // tokens sorted by their highest priority weight, descending
  kPrioritySum,  // tokens sorted by the sum of their top-k priority weights, descending
};

struct SamplingRow {
  float temperature = 0.f;  // 0 = greedy (argmax; ties -> lowest id)
  int32_t top_k = 0;        // <= 0: no top-k filter
  float top_p = 1.f;        // 1: no top-p filter
  uint64_t seed = 0;        // with `offset`, picks the Philox draw: reproducible per request
  uint64_t offset = 0;      // usually the decode step index
};

struct AttentionParams {
  float scale = 1.f;  // softmax scale, usually 1/sqrt(head_dim)
};

struct MemoryInfo {
  int64_t total_bytes = 0;   // the device's capacity (CPU: physical memory)
  int64_t free_bytes = 0;    // free on the device now, as its driver reports it
  int64_t in_use_bytes = 0;  // live allocations made by this backend (workspace arenas too)
};

class Workspace;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  // Whether this backend implements `op` for activations of `dtype`. Callers ask instead of
  // assuming; unsupported combinations return kUnimplemented if called anyway.
  virtual bool supports(Op op, DType dtype) const = 0;

  // ---- memory ---------------------------------------------------------------------------
  // Contents are unspecified on every backend (the CPU does not zero-fill either, so code that
  // reads before writing fails on the reference backend too, not only on a GPU).
  // While a Workspace is attached (WorkspaceScope), the tensor is carved from it and stays
  // valid only until the workspace's next reset(); otherwise it is a device allocation of its
  // own, counted by device_allocations().
  Tensor alloc(const Shape& shape, DType dtype);
  // Allocations that bypassed a workspace (or overflowed it) since the backend was made.
  int64_t device_allocations() const { return device_allocations_; }
  Workspace* workspace() const { return workspace_; }
  // Device capacity and this backend's own use of it (for start-up sizing of the KV cache).
  virtual MemoryInfo memory_info() const = 0;
  // Copies between this backend's device and the host (either direction) or within the
  // device. Same dtype and numel required.
  virtual Status copy(const Tensor& src, Tensor& dst) = 0;
  virtual Status synchronize() = 0;
  // Makes the calling thread able to use this backend (CUDA: selects its device, which is
  // per thread). Call it first on any thread other than the one that made the backend.
  virtual Status bind_current_thread() { return Status(); }

  // ---- ops --------------------------------------------------------------------------------
  // out[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]) (+ out if accumulate). Weight layout is
  // torch.nn.Linear's. x, w, out (and bias) share one float dtype. M may be 0.
  virtual Status gemm(const Tensor& x, const Tensor& w, Tensor& out, const Tensor* bias = nullptr,
                      bool accumulate = false) = 0;

  // For each expert e: out[r] = x[r] @ w[e]^T for rows r in [offsets[e], offsets[e+1]).
  // x: [R, K], w: [E, N, K], expert_offsets: int32 [E + 1] (offsets[0] = 0, offsets[E] <= R),
  // out: [R, N]. Rows past offsets[E] are left untouched. Experts with zero rows are fine.
  virtual Status grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& expert_offsets,
                              Tensor& out) = 0;

  // RMSNorm over the last dim: out = x / sqrt(mean(x^2) + eps) * weight.
  // x: [T, H], weight: [H], out: [T, H]. With residual ([T, H]): residual += x first (in
  // place) and the norm is taken of the updated residual (vLLM's fused_add_rms_norm).
  // Also used per head: x viewed as [T * heads, head_dim] with weight [head_dim].
  virtual Status rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out,
                          Tensor* residual = nullptr) = 0;

  // Rotary embedding in place on q: [T, Hq, D] and k: [T, Hk, D] at positions: int32 [T].
  // inv_freq: float32 [rot / 2] (rot <= D; dims past rot are left alone), already scaled
  // (e.g. llama3 rope_scaling) by the caller. angle = position * inv_freq[i].
  virtual Status rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq,
                      RopeLayout layout) = 0;

  // Writes k, v: [T, Hk, D] into the paged caches k_cache, v_cache:
  // [num_blocks, block_size, Hk, D] at slot_mapping: int32 [T] (slot = block * block_size +
  // offset; -1 = skip the token).
  virtual Status kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slot_mapping,
                                Tensor& k_cache, Tensor& v_cache) = 0;

  // Causal attention for a variable-length batch whose new tokens' K/V are already in the
  // caches. q: [T, Hq, D]; query_start_loc: int32 [B + 1]; seq_lens: int32 [B] (context
  // length including the new tokens); block_tables: int32 [B, max_blocks]; out: [T, Hq, D].
  // Query i of sequence b sits at position seq_lens[b] - q_len_b + (i - query_start_loc[b])
  // and attends to cache positions 0..that position. GQA: head h uses KV head
  // h / (Hq / Hk). Sequences with zero new tokens are allowed.
  virtual Status attention_prefill(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                   const Tensor& query_start_loc, const Tensor& seq_lens,
                                   const Tensor& block_tables, const AttentionParams& params,
                                   Tensor& out) = 0;

  // One query per sequence at position seq_lens[b] - 1, attending to 0..seq_lens[b]-1.
  // q: [B, Hq, D]; seq_lens: int32 [B]; block_tables: int32 [B, max_blocks]; out: [B, Hq, D].
  virtual Status attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                  const Tensor& seq_lens, const Tensor& block_tables,
                                  const AttentionParams& params, Tensor& out) = 0;

  // out[T, I] = silu(x[:, :I]) * x[:, I:] for x: [T, 2I] (gate first, then up; vLLM layout).
  virtual Status silu_and_mul(const Tensor& x, Tensor& out) = 0;

  // Router: probs = softmax(logits[T, E]) over all experts (computed in float32), then the k
  // largest (ties -> lower expert id), descending by weight; renormalize: weights /= their
  // sum. topk_ids: int32 [T, k], topk_weights: float32 [T, k] (the combine weights).
  // topk_probs (optional, float32 [T, k]): the router's own probabilities of the chosen
  // experts, before any renormalisation (what batch-priority routing scores by; equal to
  // topk_weights when renormalize is false).
  virtual Status router_topk(const Tensor& logits, int k, bool renormalize, Tensor& topk_ids,
                             Tensor& topk_weights, Tensor* topk_probs = nullptr) = 0;

  // Expert slots with capacity and drop policy (GShard order; V-MoE batch-priority routing).
  // topk_ids: int32 [T, k]; ids outside [0, num_experts) are ignored (not this rank's
  // experts) and get dest -1. priority_weights: float32 [T, k], what a priority policy scores
  // a token by (kPriorityMax: their maximum, kPrioritySum: their float32 sum in choice order;
  // unread under kOrder): router_topk's topk_probs for V-MoE's batch-priority routing, or the
  // combine weights (moe::PriorityScore chooses). Tokens are ordered by `policy` (stable by
  // token index); then every choice j = 0 of all tokens in that order takes a slot before any
  // choice j = 1, and so on. An expert's slots are 0, 1, ...; a slot >= capacity is dropped
  // (capacity < 0: no limit). Outputs: dest_rows int32 [T, k] = expert_offsets[e] + slot, or
  // -1 if dropped; expert_offsets int32 [num_experts + 1], the prefix sum of kept counts.
  virtual Status moe_assign(const Tensor& topk_ids, const Tensor& priority_weights, int num_experts,
                            int64_t capacity, DropPolicy policy, Tensor& dest_rows,
                            Tensor& expert_offsets) = 0;

  // out[dest_rows[t, j]] = x[t] for every dest_rows[t, j] >= 0. x: [T, H], out: [R, H].
  virtual Status moe_permute(const Tensor& x, const Tensor& dest_rows, Tensor& out) = 0;

  // out[t] = sum_j weights[t, j] * y[dest_rows[t, j]] over dest_rows[t, j] >= 0 (accumulated
  // in float32; a token with every choice dropped gets zeros). y: [R, H], weights float32.
  virtual Status moe_unpermute(const Tensor& y, const Tensor& dest_rows, const Tensor& weights,
                               Tensor& out) = 0;

  // One token per row of logits: [B, V] (any float dtype) into out: int32 [B]. rows: host
  // vector of size B. Temperature > 0: softmax(logits / T), keep the top_k largest, then the
  // smallest prefix (by descending prob) whose mass reaches top_p, renormalize, and draw by
  // inverse CDF with u = philox_uniform(seed, offset, 0) (common/rng.h).
  virtual Status sample(const Tensor& logits, const std::vector<SamplingRow>& rows,
                        Tensor& out) = 0;

  // out[t] = table[ids[t] - vocab_offset] for ids in [vocab_offset, vocab_offset + V); rows
  // for other ids are zero (vocab-parallel embedding). ids: int32 [T], table: [V, H].
  virtual Status embedding(const Tensor& ids, const Tensor& table, int64_t vocab_offset,
                           Tensor& out) = 0;

  // x += y, same shape and dtype.
  virtual Status add(Tensor& x, const Tensor& y) = 0;

  // Element-wise dtype conversion on the device (same numel).
  virtual Status convert(const Tensor& src, Tensor& dst) = 0;

  // ---- CUDA graphs (optional; defaults: unsupported, so callers run eagerly) -------------
  // Between begin_graph_capture() and end_graph_capture(key) ops are recorded, not run; a
  // later replay_graph(key) runs them again on the same device pointers. So every input
  // that changes between replays must live in a persistent device buffer that the caller
  // rewrites (copy from the host) BEFORE replay. Copies from or to the host, synchronize()
  // and sample() (per-row host parameters) fail while capturing; grouped_gemm switches to a
  // kernel that reads the expert offsets on the device.
  // Memory allocated or freed while capturing stays reserved until clear_graphs().
  virtual bool supports_graphs() const { return false; }
  virtual Status begin_graph_capture() {
    return unimplemented("{} backend: CUDA graph capture is not supported", name());
  }
  // Ends the capture (also after a failed op, to leave capture mode) and keeps the graph
  // under `key`, replacing any graph with that key.
  virtual Status end_graph_capture(int64_t key) {
    (void)key;
    return unimplemented("{} backend: CUDA graph capture is not supported", name());
  }
  virtual Status replay_graph(int64_t key) {
    (void)key;
    return unimplemented("{} backend: CUDA graph replay is not supported", name());
  }
  virtual bool has_graph(int64_t key) const {
    (void)key;
    return false;
  }
  virtual void clear_graphs() {}

 protected:
  // A fresh device allocation (what alloc() does with no workspace attached).
  virtual Tensor allocate(const Shape& shape, DType dtype) = 0;

 private:
  friend class WorkspaceScope;
  friend class Workspace;
  Workspace* workspace_ = nullptr;
  int64_t device_allocations_ = 0;
};

// A per-step arena: one device allocation that alloc() carves tensors from while attached, so
// a step allocates nothing from the device. A step that needs more than the arena holds is
// still served (the excess by ordinary allocations, counted as overflow) and the next reset()
// grows the arena to that step's high-water mark, so after the largest step has been seen
// once the steady state makes no device allocations at all.
class Workspace {
 public:
  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Starts a new step: every tensor handed out before becomes invalid. Grows the arena first
  // if the last steps needed more (returns true then: device pointers changed, so anything
  // recorded against the old arena, such as a CUDA graph, must be dropped).
  bool reset(Backend& backend);
  // Makes the arena at least `bytes` large now (same return value as reset()).
  bool reserve(Backend& backend, int64_t bytes);
  // Bytes handed out since the last reset: a mark to rewind to, so that a layer's
  // temporaries are reused by the next layer (kernels on one stream run in order, so reuse
  // is safe once later work is queued behind earlier work).
  int64_t used_bytes() const { return used_; }
  void rewind_to(int64_t mark) { used_ = std::min(used_, mark); }
  // Moves the mark forward (a replayed CUDA graph owns the bytes below its capture's mark).
  void advance_to(int64_t offset);
  int64_t capacity_bytes() const { return capacity_; }
  int64_t high_water_bytes() const { return high_water_; }  // largest step so far
  int64_t overflow_allocations() const { return overflows_; }

  static constexpr int64_t kAlignment = 256;

 private:
  friend class Backend;
  Tensor take(Backend& backend, const Shape& shape, DType dtype);

  Tensor arena_;
  int64_t base_ = 0;  // first aligned byte of arena_
  int64_t capacity_ = 0, used_ = 0, high_water_ = 0, overflows_ = 0;
};

// Attaches `workspace` to `backend` for the scope's lifetime (nullptr: detaches), restoring
// whatever was attached before.
class WorkspaceScope {
 public:
  WorkspaceScope(Backend& backend, Workspace* workspace)
      : backend_(backend), previous_(backend.workspace_) {
    backend_.workspace_ = workspace;
  }
  ~WorkspaceScope() { backend_.workspace_ = previous_; }
  WorkspaceScope(const WorkspaceScope&) = delete;
  WorkspaceScope& operator=(const WorkspaceScope&) = delete;

 private:
  Backend& backend_;
  Workspace* previous_;
};

// The CPU backend (always available). `num_threads` <= 0: OpenBLAS/OpenMP default.
// `graphs`: supports_graphs() is true and capture records the ops for replay (the same
// contract as CUDA graphs, so code that drives graphs is tested on CPU too); off by default,
// since replaying on a CPU saves nothing.
std::unique_ptr<Backend> make_cpu_backend(int num_threads = 0, bool graphs = false);
// The CUDA backend on `device_ordinal`, or an error saying why there is none (no GPU, built
// without CUDA).
Result<std::unique_ptr<Backend>> make_cuda_backend(int device_ordinal = 0);
// Number of CUDA devices visible (0 without a GPU or without CUDA support).
int cuda_device_count();

struct BackendOptions {
  int num_threads = 0;     // cpu: OpenMP/OpenBLAS threads, 0 = all cores; at most kMaxThreads
  bool graphs = false;     // cpu: record-and-replay graphs (CUDA always has graphs)
  int device_ordinal = 0;  // cuda: which GPU
  static constexpr int kMaxThreads = 1024;
};
// The backend for a configured device name ("cpu" | "cuda"): the one place where a device
// string (runtime.device, --device) becomes a backend. Errors name the value and what was
// expected.
Result<std::unique_ptr<Backend>> make_backend(const std::string& device,
                                              const BackendOptions& options = {});

}  // namespace sw::kernels

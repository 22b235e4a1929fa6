// kernel_bench: CUDA backend ops against the device's own ceilings, measured in the same run
// (a large device-to-device copy for bandwidth, a large bf16 GEMM for matrix throughput).
// Per op and shape: median time over timed reps (CUDA events on the backend's stream, L2
// flushed before each rep, warm-up first), achieved TB/s or TFLOP/s and % of the ceiling;
// then whole decode steps of presets cut to two layers against the bytes they must read.
// Prints a table and writes JSON (--json). Without a CUDA device it prints why and exits 0
// (exit 2 with --require-gpu). Add a shape: a bench_* call in main().
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "model/model_config.h"
#include "worker/model_runner.h"
#include "worker/model_weights.h"

namespace {

using sw::DType;
using sw::Shape;
using sw::Status;
using sw::Tensor;
using sw::kernels::Backend;

#define BENCH_CHECK(expr)                                                                          \
  do {                                                                                             \
    const ::sw::Status st_ = (expr);                                                               \
    if (!st_.ok()) {                                                                               \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, st_.to_string().c_str()); \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)

#define BENCH_CUDA(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t e_ = (expr);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

struct Row {
  std::string op, shape;
  double us = 0, bytes = 0, flops = 0;
  std::string unit;  // "TB/s" or "TFLOP/s"
  double achieved = 0, pct = 0;
};

struct Bench {
  Backend& be;
  cudaStream_t stream;
  Tensor flush;  // > L2, rewritten before every timed rep
  int warmup = 3, reps = 20;
  double copy_tbs = 0, gemm_tflops = 0;
  std::vector<Row> rows;

  // Median microseconds of fn() over reps, each with a cold L2.
  double time_us(const std::function<void()>& fn) {
    cudaEvent_t a, b;
    BENCH_CUDA(cudaEventCreate(&a));
    BENCH_CUDA(cudaEventCreate(&b));
    for (int i = 0; i < warmup; ++i) fn();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      BENCH_CUDA(cudaMemsetAsync(flush.data(), i & 0xff, flush.nbytes(), stream));
      BENCH_CUDA(cudaEventRecord(a, stream));
      fn();
      BENCH_CUDA(cudaEventRecord(b, stream));
      BENCH_CUDA(cudaEventSynchronize(b));
      float ms = 0;
      BENCH_CUDA(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms * 1e3);
    }
    BENCH_CUDA(cudaEventDestroy(a));
    BENCH_CUDA(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

  // bytes > 0: memory-bound row (vs the copy ceiling); else flops vs the GEMM ceiling.
  void add(const std::string& op, const std::string& shape, double us, double bytes, double flops) {
    Row r{op, shape, us, bytes, flops, "", 0, 0};
    if (flops > 0 && (bytes <= 0 || flops / (gemm_tflops * 1e12) > bytes / (copy_tbs * 1e12))) {
      r.unit = "TFLOP/s";
      r.achieved = flops / (us * 1e-6) / 1e12;
      r.pct = gemm_tflops > 0 ? 100.0 * r.achieved / gemm_tflops : 0;
    } else {
      r.unit = "TB/s";
      r.achieved = bytes / (us * 1e-6) / 1e12;
      r.pct = copy_tbs > 0 ? 100.0 * r.achieved / copy_tbs : 0;
    }
    std::printf("%-22s %-44s %12.1f %10.3f %-8s %6.1f%%\n", op.c_str(), shape.c_str(), us,
                r.achieved, r.unit.c_str(), r.pct);
    std::fflush(stdout);
    rows.push_back(r);
  }
};

// Device tensor filled with uniform values in [-scale, scale] (never zeros: METHOD.md).
Tensor random_device(Backend& be, const Shape& shape, DType dt, float scale, uint64_t seed) {
  Tensor t = be.alloc(shape, dt);
  const int64_t n = t.numel();
  if (n == 0) return t;
  const int64_t chunk = std::min<int64_t>(n, int64_t{4} << 20);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(chunk));
  for (auto& x : v) x = dist(rng);
  Tensor host = Tensor::from_floats(v, {chunk}, dt);
  Tensor flat = t.reshape({n});
  for (int64_t off = 0; off < n; off += chunk) {
    const int64_t len = std::min(chunk, n - off);
    Tensor dst = flat.rows(off, off + len);
    BENCH_CHECK(be.copy(host.rows(0, len), dst));
  }
  return t;
}

Tensor ints_device(Backend& be, const std::vector<int32_t>& v, const Shape& shape) {
  Tensor t = be.alloc(shape, DType::kI32);
  BENCH_CHECK(be.copy(Tensor::from_ints(v, shape), t));
  return t;
}

void bench_ceilings(Bench& b) {
  const int64_t n = int64_t{1} << 29;  // 1 GiB of bf16
  Tensor src = random_device(b.be, {n}, DType::kBF16, 1.f, 1), dst = b.be.alloc({n}, DType::kBF16);
  const double copy_us = b.time_us([&] { BENCH_CHECK(b.be.copy(src, dst)); });
  b.copy_tbs = 2.0 * static_cast<double>(src.nbytes()) / (copy_us * 1e-6) / 1e12;
  const int64_t m = 8192;
  Tensor x = random_device(b.be, {m, m}, DType::kBF16, 1.f, 2);
  Tensor w = random_device(b.be, {m, m}, DType::kBF16, 1.f, 3);
  Tensor o = b.be.alloc({m, m}, DType::kBF16);
  const double gemm_us = b.time_us([&] { BENCH_CHECK(b.be.gemm(x, w, o)); });
  b.gemm_tflops = 2.0 * m * m * m / (gemm_us * 1e-6) / 1e12;
  std::printf(
      "ceilings: device-to-device copy %.3f TB/s (1 GiB, read + write), bf16 GEMM "
      "%.1f TFLOP/s (8192^3)\n\n",
      b.copy_tbs, b.gemm_tflops);
  std::printf("%-22s %-44s %12s %10s %-8s %7s\n", "op", "shape", "time_us", "achieved", "unit",
              "%ceil");
}

// Llama-3-8B-like attention: Hq 32, Hk 8, D 128, bf16, block 16.
void bench_decode_attention(Bench& b, int batch, int ctx) {
  const int hq = 32, hk = 8, d = 128, bs = 16;
  const int64_t blocks_per_seq = (ctx + bs - 1) / bs, nb = blocks_per_seq * batch;
  Tensor kc = random_device(b.be, {nb, bs, hk, d}, DType::kBF16, 1.f, 10);
  Tensor vc = random_device(b.be, {nb, bs, hk, d}, DType::kBF16, 1.f, 11);
  Tensor q = random_device(b.be, {batch, hq, d}, DType::kBF16, 1.f, 12);
  Tensor out = b.be.alloc({batch, hq, d}, DType::kBF16);
  std::vector<int32_t> table(static_cast<size_t>(nb));
  for (int64_t i = 0; i < nb; ++i) table[i] = static_cast<int32_t>(i);
  std::shuffle(table.begin(), table.end(), std::mt19937(7));
  Tensor bt = ints_device(b.be, table, {batch, blocks_per_seq});
  Tensor lens = ints_device(b.be, std::vector<int32_t>(batch, ctx), {batch});
  sw::kernels::AttentionParams ap{1.f / std::sqrt(static_cast<float>(d))};
  const double us =
      b.time_us([&] { BENCH_CHECK(b.be.attention_decode(q, kc, vc, lens, bt, ap, out)); });
  const double bytes = 2.0 * batch * ctx * hk * d * 2 + 2.0 * q.nbytes();
  const double flops = 4.0 * batch * hq * static_cast<double>(ctx) * d;
  b.add("attention_decode",
        "B" + std::to_string(batch) + " ctx" + std::to_string(ctx) + " Hq32 Hk8 D128 bf16", us,
        bytes, flops);
}

void bench_prefill_attention(Bench& b, int t) {
  const int hq = 32, hk = 8, d = 128, bs = 16;
  const int64_t nb = (t + bs - 1) / bs;
  Tensor kc = random_device(b.be, {nb, bs, hk, d}, DType::kBF16, 1.f, 20);
  Tensor vc = random_device(b.be, {nb, bs, hk, d}, DType::kBF16, 1.f, 21);
  Tensor q = random_device(b.be, {t, hq, d}, DType::kBF16, 1.f, 22);
  Tensor out = b.be.alloc({t, hq, d}, DType::kBF16);
  std::vector<int32_t> table(static_cast<size_t>(nb));
  for (int64_t i = 0; i < nb; ++i) table[i] = static_cast<int32_t>(i);
  Tensor bt = ints_device(b.be, table, {1, nb});
  Tensor qsl = ints_device(b.be, {0, t}, {2});
  Tensor lens = ints_device(b.be, {t}, {1});
  sw::kernels::AttentionParams ap{1.f / std::sqrt(static_cast<float>(d))};
  const double us =
      b.time_us([&] { BENCH_CHECK(b.be.attention_prefill(q, kc, vc, qsl, lens, bt, ap, out)); });
  const double flops = 4.0 * hq * d * (static_cast<double>(t) * (t + 1) / 2);  // causal
  const double bytes = 2.0 * q.nbytes() + 2.0 * kc.nbytes();
  b.add("attention_prefill", "T" + std::to_string(t) + " Hq32 Hk8 D128 bf16", us, bytes, flops);
}

// Temperature sampling at Qwen's vocabulary with top-k 50 and top-p 0.9: today a full-row
// sort per row, so it is far from the bytes it must read (the logits once); the tuning list's
// top-k-first sampler should close that gap.
void bench_sample(Bench& b, int batch) {
  const int64_t v = 151936;
  Tensor logits = random_device(b.be, {batch, v}, DType::kF32, 4.f, 50);
  Tensor out = b.be.alloc({batch}, DType::kI32);
  std::vector<sw::kernels::SamplingRow> rows(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i)
    rows[i] = sw::kernels::SamplingRow{0.7f, 50, 0.9f, static_cast<uint64_t>(i), 1};
  const double us = b.time_us([&] { BENCH_CHECK(b.be.sample(logits, rows, out)); });
  b.add("sample", "B" + std::to_string(batch) + " V151936 temp0.7 top_k50 top_p0.9 f32", us,
        static_cast<double>(logits.nbytes()), 0);
}

void bench_gemm(Bench& b, const std::string& what, int64_t m, int64_t n, int64_t k) {
  Tensor x = random_device(b.be, {m, k}, DType::kBF16, 1.f, 30);
  Tensor w = random_device(b.be, {n, k}, DType::kBF16, 0.05f, 31);
  Tensor o = b.be.alloc({m, n}, DType::kBF16);
  const double us = b.time_us([&] { BENCH_CHECK(b.be.gemm(x, w, o)); });
  b.add("gemm " + what,
        "M" + std::to_string(m) + " N" + std::to_string(n) + " K" + std::to_string(k), us,
        2.0 * (x.nbytes() + w.nbytes() + o.nbytes()) / 2.0, 2.0 * m * n * k);
}

// Experts' gate_up GEMM with the tokens spread evenly over the experts.
void bench_grouped_gemm(Bench& b, const std::string& what, int64_t tokens, int top_k, int e,
                        int64_t n, int64_t k) {
  const int64_t r = tokens * top_k;
  Tensor x = random_device(b.be, {r, k}, DType::kBF16, 1.f, 40);
  Tensor w = random_device(b.be, {e, n, k}, DType::kBF16, 0.05f, 41);
  Tensor o = b.be.alloc({r, n}, DType::kBF16);
  std::vector<int32_t> offs(static_cast<size_t>(e + 1));
  for (int i = 0; i <= e; ++i) offs[i] = static_cast<int32_t>(r * i / e);
  Tensor doffs = ints_device(b.be, offs, {e + 1});
  const double us = b.time_us([&] { BENCH_CHECK(b.be.grouped_gemm(x, w, doffs, o)); });
  const int64_t touched = std::min<int64_t>(e, r);
  b.add("grouped_gemm " + what,
        "T" + std::to_string(tokens) + " k" + std::to_string(top_k) + " E" + std::to_string(e) +
            " N" + std::to_string(n) + " K" + std::to_string(k),
        us, static_cast<double>(touched * n * k * 2 + x.nbytes() + o.nbytes()), 2.0 * r * n * k);
}

void bench_preset_gemms(Bench& b, const sw::model::ModelConfig& c, const std::string& name) {
  const int64_t h = c.hidden_size;
  for (int64_t t : {1, 16, 128, 1024, 4096}) {
    bench_gemm(b, name + " qkv", t, c.q_size() + 2 * c.kv_size(), h);
    bench_gemm(b, name + " o", t, h, c.q_size());
    if (c.is_moe()) {
      const int64_t inter =
          c.moe_intermediate_size > 0 ? c.moe_intermediate_size : c.intermediate_size;
      bench_grouped_gemm(b, name + " experts gate_up", t, c.num_experts_per_tok, c.num_experts,
                         2 * inter, h);
    }
  }
}

// Weights of a config on the device with random values (norms near 1), without the host-side
// Philox generator: the step's speed does not depend on the values.
sw::worker::ModelWeights device_weights(Backend& be, const sw::model::ModelConfig& c) {
  sw::worker::ModelWeights w;
  w.shard = sw::model::ShardSpec::full(c);
  const DType dt = DType::kBF16;
  const int64_t h = c.hidden_size, d = c.head_dim;
  const float lin = 1.f / std::sqrt(static_cast<float>(h));
  uint64_t seed = 100;
  w.embed = random_device(be, {c.vocab_size, h}, dt, 1.f, seed++);
  w.lm_head = random_device(be, {c.vocab_size, h}, dt, lin, seed++);
  w.final_norm = random_device(be, {h}, dt, 0.05f, seed++);
  auto norm = [&](int64_t n) {
    Tensor t = random_device(be, {n}, dt, 0.05f, seed++);
    Tensor ones = Tensor::from_floats(std::vector<float>(static_cast<size_t>(n), 1.f), {n}, dt);
    Tensor dev = be.alloc({n}, dt);
    BENCH_CHECK(be.copy(ones, dev));
    BENCH_CHECK(be.add(dev, t));
    return dev;
  };
  w.final_norm = norm(h);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    sw::worker::LayerWeights lw;
    lw.input_norm = norm(h);
    lw.post_norm = norm(h);
    lw.q_w = random_device(be, {c.num_attention_heads * d, h}, dt, lin, seed++);
    lw.k_w = random_device(be, {c.num_key_value_heads * d, h}, dt, lin, seed++);
    lw.v_w = random_device(be, {c.num_key_value_heads * d, h}, dt, lin, seed++);
    lw.o_w = random_device(be, {h, c.num_attention_heads * d}, dt, lin, seed++);
    if (c.qk_norm) {
      lw.q_norm = norm(d);
      lw.k_norm = norm(d);
    }
    if (c.is_moe()) {
      const int64_t inter =
          c.moe_intermediate_size > 0 ? c.moe_intermediate_size : c.intermediate_size;
      lw.moe = true;
      lw.router_w = random_device(be, {c.num_experts, h}, dt, lin, seed++);
      lw.experts_gate_up = random_device(be, {c.num_experts, 2 * inter, h}, dt, lin, seed++);
      lw.experts_down = random_device(be, {c.num_experts, h, inter}, dt,
                                      1.f / std::sqrt(static_cast<float>(inter)), seed++);
    } else {
      lw.gate_up_w = random_device(be, {2 * c.intermediate_size, h}, dt, lin, seed++);
      lw.down_w = random_device(be, {h, c.intermediate_size}, dt,
                                1.f / std::sqrt(static_cast<float>(c.intermediate_size)), seed++);
    }
    w.layers.push_back(std::move(lw));
  }
  return w;
}

// Whole decode steps (host metadata, uploads, every kernel, sampling and its sync) of a
// preset cut to two layers, against the bytes a step must read: the two layers' weights
// (MoE: the experts a batch of `batch` tokens is expected to touch), the LM head and the KV.
// With `graphs`, decode steps replay a captured CUDA graph (the first warm-up step captures),
// so the two rows of one shape show what launch overhead costs.
void bench_decode_step(Bench& b, sw::model::ModelConfig c, const std::string& name, int batch,
                       int ctx, bool graphs) {
  c.num_hidden_layers = 2;
  const int bs = 16;
  // Each sequence owns a contiguous run of blocks with room for the steps below.
  const int64_t per_seq = (ctx + 16 + bs - 1) / bs;
  const int64_t blocks = static_cast<int64_t>(batch) * per_seq;
  sw::worker::ModelRunner runner(c, device_weights(b.be, c), b.be,
                                 sw::worker::KvCacheOptions{blocks, bs});
  runner.set_decode_graphs(graphs ? batch : 0);
  sw::worker::StepMetadata step;
  for (int i = 0; i < batch; ++i) {
    sw::worker::StepSequence& s = step.seqs.emplace_back();
    s.seq_id = i;
    s.tokens.assign(static_cast<size_t>(ctx), 1 + i);
    for (int64_t k = 0; k < per_seq; ++k)
      s.block_table.push_back(static_cast<int32_t>(i * per_seq + k));
  }
  auto r0 = runner.execute(step);
  BENCH_CHECK(r0.status());
  for (int i = 0; i < batch; ++i) {
    step.seqs[i].start_pos = ctx;
    step.seqs[i].tokens = {r0->sampled[i]};
  }
  auto once = [&] {
    auto r = runner.execute(step);
    BENCH_CHECK(r.status());
    for (int i = 0; i < batch; ++i) {
      step.seqs[i].start_pos += 1;
      step.seqs[i].tokens = {r->sampled[i]};
    }
  };
  // Each step appends a token: keep within the pool by running few reps.
  for (int i = 0; i < 2; ++i) once();
  std::vector<double> t;
  for (int i = 0; i < 8; ++i) {
    BENCH_CHECK(b.be.synchronize());
    const auto s = std::chrono::steady_clock::now();
    once();
    t.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - s).count());
  }
  std::sort(t.begin(), t.end());
  const double h = static_cast<double>(c.hidden_size), d = static_cast<double>(c.head_dim);
  double layer = h * d * (2.0 * c.num_attention_heads + 2.0 * c.num_key_value_heads);
  if (c.is_moe()) {
    const double e = c.num_experts, k = c.num_experts_per_tok;
    const double inter =
        c.moe_intermediate_size > 0 ? c.moe_intermediate_size : c.intermediate_size;
    const double touched = e * (1.0 - std::pow(1.0 - k / e, batch));
    layer += e * h + touched * 3.0 * inter * h;
  } else {
    layer += 3.0 * c.intermediate_size * h;
  }
  const double bytes = 2.0 * (2.0 * layer + static_cast<double>(c.vocab_size) * h) +
                       2.0 * 2.0 * 2.0 * batch * (ctx + 6.0) * c.num_key_value_heads * d;
  if (graphs && runner.graph_replays() == 0) {
    std::fprintf(stderr, "decode_step %s: graphs were asked for but never replayed\n",
                 name.c_str());
    std::exit(1);
  }
  b.add(std::string(graphs ? "decode_step_graph " : "decode_step ") + name,
        "2 layers B" + std::to_string(batch) + " ctx" + std::to_string(ctx) + " bf16",
        t[t.size() / 2], bytes, 0);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kernel_bench: CUDA backend ops vs the device's measured ceilings"};
  std::string json_path;
  bool require_gpu = false, quick = false;
  int device = 0;
  app.add_option("--json", json_path, "write every row as JSON to this file");
  app.add_option("--device", device, "CUDA device ordinal");
  app.add_flag("--require-gpu", require_gpu, "exit 2 (not 0) when no CUDA device is visible");
  app.add_flag("--quick", quick, "fewer shapes (smoke run)");
  CLI11_PARSE(app, argc, argv);

  if (sw::kernels::cuda_device_count() <= 0) {
    std::printf("kernel_bench: no CUDA device (cuda_device_count() == 0); nothing measured\n");
    return require_gpu ? 2 : 0;
  }
  auto made = sw::kernels::make_cuda_backend(device);
  if (!made.ok()) {
    std::fprintf(stderr, "kernel_bench: %s\n", made.status().to_string().c_str());
    return 1;
  }
  Backend& be = **made;
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, device));
  std::printf("kernel_bench on %s (%d SMs, L2 %d MiB)\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);
  Bench b{
      be, sw::kernels::cuda_stream_of(be), be.alloc({int64_t{512} << 20}, DType::kU8), 3, 20, 0, 0,
      {}};
  bench_ceilings(b);

  const std::vector<int> batches =
      quick ? std::vector<int>{1, 64} : std::vector<int>{1, 8, 32, 64, 128, 256};
  const std::vector<int> ctxs =
      quick ? std::vector<int>{4096} : std::vector<int>{1024, 4096, 16384, 32768};
  for (int ctx : ctxs)
    for (int batch : batches) {
      const double kv_gib = 2.0 * batch * ctx * 8 * 128 * 2 / double(1 << 30);
      if (kv_gib > 24) continue;  // keep the run inside an 80 GB card with the ceilings' buffers
      bench_decode_attention(b, batch, ctx);
    }
  for (int t : quick ? std::vector<int>{1024} : std::vector<int>{1024, 2048, 4096, 8192})
    bench_prefill_attention(b, t);
  for (int batch : quick ? std::vector<int>{1, 64} : std::vector<int>{1, 64, 256})
    bench_sample(b, batch);
  for (const char* preset : {"mixtral-8x7b", "qwen3-30b-a3b"}) {
    auto cfg = sw::model::load_model_config(preset);
    BENCH_CHECK(cfg.status());
    bench_preset_gemms(b, *cfg, preset);
  }
  for (const char* preset : {"mixtral-8x7b", "qwen3-30b-a3b"}) {
    auto cfg = sw::model::load_model_config(preset);
    BENCH_CHECK(cfg.status());
    for (int batch : quick ? std::vector<int>{1} : std::vector<int>{1, 8, 32})
      for (bool graphs : {false, true}) bench_decode_step(b, *cfg, preset, batch, 1024, graphs);
  }

  if (!json_path.empty()) {
    nlohmann::json j;
    j["device"] = prop.name;
    j["ceilings"] = {{"copy_tb_s", b.copy_tbs}, {"gemm_bf16_tflop_s", b.gemm_tflops}};
    for (const Row& r : b.rows)
      j["rows"].push_back({{"op", r.op},
                           {"shape", r.shape},
                           {"time_us", r.us},
                           {"bytes", r.bytes},
                           {"flops", r.flops},
                           {"unit", r.unit},
                           {"achieved", r.achieved},
                           {"pct_of_ceiling", r.pct}});
    std::FILE* f = std::fopen(json_path.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "kernel_bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
    const std::string s = j.dump(2);
    std::fwrite(s.data(), 1, s.size(), f);
    std::fclose(f);
    std::printf("\nwrote %s\n", json_path.c_str());
  }
  return 0;
}

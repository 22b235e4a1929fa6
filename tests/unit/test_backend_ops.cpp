// One driver for every kernels::Backend op (ggml's test-backend-ops style): each case builds
// seeded random inputs on the host, runs the op on every backend (inputs copied to the
// device, outputs POISONED first so unwritten elements show up) and compares against a naive
// reference written here (plain loops, float64 accumulation, no BLAS, no code shared with
// kernels/cpu). Floats compare by normalised MSE with a per-op tolerance loosened by dtype;
// integer outputs compare exactly. Add a case: write a `case_<op>` builder and register it in
// build_cases(); a new backend only needs an entry in backend_for().
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/rng.h"
#include "common/tensor.h"
#include "kernels/backend.h"
#if SHARDWISE_TEST_CUDA
#include "kernels/cuda/cuda_allocator.h"
#endif

namespace sw::kernels {
namespace {

using Rng = std::mt19937_64;
using F64 = std::vector<double>;

const DType kFloatDtypes[] = {DType::kF32, DType::kBF16, DType::kF16};

const char* short_dtype(DType d) {
  switch (d) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    default: return dtype_name(d);
  }
}

// ---- backends under test --------------------------------------------------------------------

struct BackendSlot {
  std::unique_ptr<Backend> backend;
  std::string skip_reason;  // why `backend` is null
};

BackendSlot& backend_for(const std::string& kind) {
  static std::map<std::string, BackendSlot> slots;
  auto it = slots.find(kind);
  if (it != slots.end()) return it->second;
  BackendSlot slot;
  if (kind == "cpu") {
    slot.backend = make_cpu_backend();
  } else if (kind == "cpu-graphs") {
    slot.backend = make_cpu_backend(0, /*graphs=*/true);
  } else if (kind == "cuda") {
    if (cuda_device_count() <= 0) {
      slot.skip_reason = "no CUDA device: cuda_device_count() == 0";
    } else {
      auto made = make_cuda_backend(0);
      if (made.ok()) {
        slot.backend = std::move(made).value();
      } else {
        slot.skip_reason = "no usable CUDA backend: " + made.status().to_string();
      }
    }
  }
  return slots.emplace(kind, std::move(slot)).first->second;
}

// ---- host/device plumbing (only alloc/copy/synchronize, so any backend plugs in) ------------

float round_to(DType d, double v) {
  const float f = static_cast<float>(v);
  switch (d) {
    case DType::kBF16: return bf16_bits_to_float(float_to_bf16_bits(f));
    case DType::kF16: return f16_bits_to_float(float_to_f16_bits(f));
    default: return f;
  }
}

Tensor upload(Backend& be, const Tensor& host) {
  Tensor dev = be.alloc(host.shape(), host.dtype());
  Status st = be.copy(host, dev);
  EXPECT_TRUE(st.ok()) << "upload " << host.describe() << ": " << st.to_string();
  return dev;
}

Tensor download(Backend& be, const Tensor& dev) {
  Tensor host = Tensor::empty(dev.shape(), dev.dtype());
  Status st = be.copy(dev, host);
  EXPECT_TRUE(st.ok()) << "download " << dev.describe() << ": " << st.to_string();
  st = be.synchronize();
  EXPECT_TRUE(st.ok()) << st.to_string();
  return host;
}

// A host tensor whose every element is the poison value of its dtype.
Tensor poison_host(const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (dtype) {
      case DType::kF32: t.data_as<float>()[i] = std::numeric_limits<float>::quiet_NaN(); break;
      case DType::kBF16: t.data_as<uint16_t>()[i] = 0x7fc0; break;
      case DType::kF16: t.data_as<uint16_t>()[i] = 0x7e00; break;
      case DType::kI32: t.data_as<int32_t>()[i] = -12345; break;
      default: break;
    }
  }
  return t;
}

Tensor poisoned(Backend& be, const Shape& shape, DType dtype) {
  return upload(be, poison_host(shape, dtype));
}

// Uploads `host` into a buffer `offset` elements longer whose first elements are poison, and
// returns the view that starts `offset` elements in: a pointer off every 16-byte boundary for
// a small offset (a K cache or a bias carved from a bigger buffer). offset 0: plain upload.
Tensor upload_at_offset(Backend& be, const Tensor& host, int64_t offset) {
  if (offset == 0) return upload(be, host);
  const int64_t n = host.numel();
  Tensor padded = poison_host({n + offset}, host.dtype());
  const size_t es = dtype_size(host.dtype());
  std::memcpy(static_cast<char*>(padded.data()) + offset * es, host.data(), n * es);
  Tensor dev = upload(be, padded);
  return Tensor(static_cast<char*>(dev.data()) + offset * es, host.shape(), host.dtype(),
                dev.device(), dev.storage());
}

std::vector<float> rand_floats(Rng& rng, int64_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// Host tensor of `dtype` from values; `as_f64` receives the values as stored (rounded).
Tensor host_floats(const std::vector<float>& v, const Shape& shape, DType dtype,
                   F64* as_f64 = nullptr) {
  Tensor t = Tensor::from_floats(v, shape, dtype);
  if (as_f64) {
    std::vector<float> r = t.to_floats();
    as_f64->assign(r.begin(), r.end());
  }
  return t;
}

std::vector<int32_t> ints_of(const Tensor& host) {
  const int32_t* p = host.data_as<int32_t>();
  return std::vector<int32_t>(p, p + host.numel());
}

// ---- comparisons -----------------------------------------------------------------------------

// Normalised MSE tolerance: `f32` for float32, loosened for the 16-bit types (their output
// rounding alone is ~4e-3 relative for bfloat16, ~5e-4 for float16).
double tol_for(DType d, double f32 = 1e-9) {
  switch (d) {
    case DType::kBF16: return std::max(f32, 2e-4);
    case DType::kF16: return std::max(f32, 4e-6);
    default: return f32;
  }
}

void expect_nmse(const std::vector<float>& actual, const F64& expected, double tol,
                 const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  double err = 0, ref = 0, max_err = 0;
  size_t max_i = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!std::isfinite(actual[i])) {
      ADD_FAILURE() << what << ": element " << i << " is " << actual[i] << " (expected "
                    << expected[i] << "): unwritten (poison) or overflow";
      return;
    }
    const double d = actual[i] - expected[i];
    err += d * d;
    ref += expected[i] * expected[i];
    if (std::abs(d) > max_err) {
      max_err = std::abs(d);
      max_i = i;
    }
  }
  if (actual.empty()) return;
  // Tiny references (all zeros) fall back to absolute MSE.
  const double nmse = err / std::max(ref, 1e-12 * static_cast<double>(actual.size()));
  EXPECT_LE(nmse, tol) << what << ": nmse " << nmse << " > tol " << tol << "; worst element "
                       << max_i << " got " << actual[max_i] << " expected " << expected[max_i]
                       << " (n=" << actual.size() << ")";
}

void expect_nmse(const Tensor& actual_host, const F64& expected, double tol,
                 const std::string& what) {
  expect_nmse(actual_host.to_floats(), expected, tol, what);
}

template <typename T>
void expect_exact(const std::vector<T>& actual, const std::vector<T>& expected,
                  const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  int shown = 0;
  size_t wrong = 0;
  std::ostringstream msg;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] == expected[i]) continue;
    ++wrong;
    if (shown++ < 8) msg << " [" << i << "] got " << actual[i] << " want " << expected[i] << ";";
  }
  EXPECT_EQ(wrong, 0u) << what << ": " << wrong << " of " << actual.size()
                       << " differ:" << msg.str();
}

// Bitwise: elements the op must leave untouched (still poison) or exact copies.
void expect_bits_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.nbytes(), b.nbytes()) << what;
  const auto* pa = static_cast<const uint8_t*>(a.data());
  const auto* pb = static_cast<const uint8_t*>(b.data());
  const size_t es = dtype_size(a.dtype());
  for (size_t i = 0; i < a.nbytes(); ++i) {
    if (pa[i] != pb[i]) {
      ADD_FAILURE() << what << ": element " << i / es << " differs bitwise (got "
                    << load_float(a.data(), a.dtype(), static_cast<int64_t>(i / es)) << ", want "
                    << load_float(b.data(), b.dtype(), static_cast<int64_t>(i / es)) << ")";
      return;
    }
  }
}

#define SW_ASSERT_OK(expr)                                     \
  do {                                                         \
    ::sw::Status st_ = (expr);                                 \
    ASSERT_TRUE(st_.ok()) << #expr << ": " << st_.to_string(); \
  } while (0)

// ---- the case table -------------------------------------------------------------------------

struct Case {
  std::string name;  // "op/shape/dtype": names the case in test names and failure messages
  Op op;
  DType dtype;
  std::function<void(Backend&)> run;
};

std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

void add_case(Op op, const std::string& shape, DType dtype, std::function<void(Backend&)> run) {
  registry().push_back(Case{fmt::format("{}/{}/{}", op_name(op), shape, short_dtype(dtype)), op,
                            dtype, std::move(run)});
}

uint64_t seed_of(const std::string& s) { return fnv1a64(s); }

// ============================== GEMM ==========================================================

// bias_offset > 0: the bias is a view that many elements into its buffer (an odd offset puts
// it off every 16-byte boundary, which cuBLASLt's BIAS epilogue does not take).
void case_gemm(int64_t m, int64_t n, int64_t k, bool with_bias, bool accumulate, DType dt,
               int64_t bias_offset = 0) {
  std::string shape =
      fmt::format("M{}_N{}_K{}{}{}", m, n, k, with_bias ? "_bias" : "", accumulate ? "_acc" : "");
  if (bias_offset > 0) shape += fmt::format("_biasview+{}", bias_offset);
  add_case(Op::kGemm, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    F64 x, w, b, c0;
    Tensor hx = host_floats(rand_floats(rng, m * k), {m, k}, dt, &x);
    Tensor hw = host_floats(rand_floats(rng, n * k), {n, k}, dt, &w);
    Tensor hb = host_floats(rand_floats(rng, n), {n}, dt, &b);
    Tensor hc = host_floats(rand_floats(rng, m * n), {m, n}, dt, &c0);
    F64 want(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = accumulate ? c0[i * n + j] : 0.0;
        if (with_bias) s += b[j];
        for (int64_t p = 0; p < k; ++p) s += x[i * k + p] * w[j * k + p];
        want[i * n + j] = s;
      }
    Tensor dx = upload(be, hx), dw = upload(be, hw), db = upload_at_offset(be, hb, bias_offset);
    Tensor dout = accumulate ? upload(be, hc) : poisoned(be, {m, n}, dt);
    SW_ASSERT_OK(be.gemm(dx, dw, dout, with_bias ? &db : nullptr, accumulate));
    // K up to 5125 of O(1) terms: float32 accumulation order alone gives ~1e-7 relative.
    expect_nmse(download(be, dout), want, tol_for(dt, 1e-10), "out");
  });
}

// Uniform [-1, 1) from a counter hash (splitmix64): fills hundreds of millions of values in
// about a second, where the distribution objects above would take many.
float hash_uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(static_cast<double>(z >> 40) * 0x1p-23 - 1.0);
}

// The LM head of a decode step: out[1, V] = x[1, K] @ w[V, K]^T + bias, bf16, with a vocabulary
// of Qwen's size (311M weights). The weights stay bf16 on the host; the float64 reference
// widens them one at a time instead of keeping a 2.5 GB copy.
void case_gemm_vocab(int64_t m, int64_t n, int64_t k, int64_t bias_offset) {
  const DType dt = DType::kBF16;
  std::string shape = fmt::format("M{}_N{}_K{}_bias_biasview+{}", m, n, k, bias_offset);
  add_case(Op::kGemm, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    F64 x, b;
    Tensor hx = host_floats(rand_floats(rng, m * k), {m, k}, dt, &x);
    Tensor hb = host_floats(rand_floats(rng, n), {n}, dt, &b);
    Tensor hw = Tensor::uninitialized({n, k}, dt);
    uint16_t* wbits = hw.data_as<uint16_t>();
    const uint64_t wseed = seed_of(shape + "/w");
    for (int64_t i = 0; i < n * k; ++i) wbits[i] = float_to_bf16_bits(hash_uniform(wseed, i));
    F64 want(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = b[j];
        const uint16_t* wr = wbits + j * k;
        for (int64_t p = 0; p < k; ++p) s += x[i * k + p] * bf16_bits_to_float(wr[p]);
        want[i * n + j] = s;
      }
    Tensor dout = poisoned(be, {m, n}, dt);
    {
      Tensor dw = upload(be, hw);
      hw = Tensor();  // the host copy goes before the backend widens its own
      const Tensor db = upload_at_offset(be, hb, bias_offset);
      SW_ASSERT_OK(be.gemm(upload(be, hx), dw, dout, &db));
    }
    expect_nmse(download(be, dout), want, tol_for(dt), "out");
  });
}

void case_grouped_gemm(const std::vector<int>& counts, int64_t extra_rows, int64_t n, int64_t k,
                       DType dt) {
  const int64_t e = static_cast<int64_t>(counts.size());
  std::string shape =
      fmt::format("E{}_rows-{}_extra{}_N{}_K{}", e, fmt::join(counts, "-"), extra_rows, n, k);
  add_case(Op::kGroupedGemm, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    std::vector<int32_t> offs(static_cast<size_t>(e + 1), 0);
    for (int64_t i = 0; i < e; ++i) offs[i + 1] = offs[i] + counts[i];
    const int64_t used = offs[e], r = used + extra_rows;
    F64 x, w;
    Tensor hx = host_floats(rand_floats(rng, r * k), {r, k}, dt, &x);
    Tensor hw = host_floats(rand_floats(rng, e * n * k), {e, n, k}, dt, &w);
    F64 want(static_cast<size_t>(used * n));
    for (int64_t ex = 0; ex < e; ++ex)
      for (int64_t row = offs[ex]; row < offs[ex + 1]; ++row)
        for (int64_t j = 0; j < n; ++j) {
          double s = 0;
          for (int64_t p = 0; p < k; ++p) s += x[row * k + p] * w[(ex * n + j) * k + p];
          want[row * n + j] = s;
        }
    Tensor dout = poisoned(be, {r, n}, dt);
    SW_ASSERT_OK(be.grouped_gemm(upload(be, hx), upload(be, hw),
                                 upload(be, Tensor::from_ints(offs, {e + 1})), dout));
    Tensor out = download(be, dout);
    expect_nmse(out.rows(0, used), want, tol_for(dt, 1e-10), "out rows < offsets[E]");
    expect_bits_equal(out.rows(used, r), poison_host({extra_rows, n}, dt),
                      "rows past offsets[E] must be untouched");
  });
}

// ============================== RMSNorm / SiLU / RoPE =========================================

void case_rms_norm(int64_t t, int64_t h, bool with_residual, DType dt) {
  std::string shape = fmt::format("T{}_H{}{}", t, h, with_residual ? "_residual" : "");
  add_case(Op::kRmsNorm, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    const float eps = 1e-6f;
    F64 x, w, res;
    Tensor hx = host_floats(rand_floats(rng, t * h, -2.f, 2.f), {t, h}, dt, &x);
    Tensor hw = host_floats(rand_floats(rng, h, 0.5f, 1.5f), {h}, dt, &w);
    Tensor hr = host_floats(rand_floats(rng, t * h, -2.f, 2.f), {t, h}, dt, &res);
    F64 want(static_cast<size_t>(t * h)), want_res(res.size());
    for (int64_t i = 0; i < t; ++i) {
      double ss = 0;
      F64 row(static_cast<size_t>(h));
      for (int64_t j = 0; j < h; ++j) {
        // The updated residual is stored in its dtype and the norm reads it back.
        row[j] = with_residual ? round_to(dt, x[i * h + j] + res[i * h + j]) : x[i * h + j];
        want_res[i * h + j] = row[j];
        ss += row[j] * row[j];
      }
      const double inv = 1.0 / std::sqrt(ss / static_cast<double>(h) + eps);
      for (int64_t j = 0; j < h; ++j) want[i * h + j] = row[j] * inv * w[j];
    }
    Tensor dres = upload(be, hr);
    Tensor dout = poisoned(be, {t, h}, dt);
    SW_ASSERT_OK(
        be.rms_norm(upload(be, hx), upload(be, hw), eps, dout, with_residual ? &dres : nullptr));
    expect_nmse(download(be, dout), want, tol_for(dt), "out");
    if (with_residual) expect_nmse(download(be, dres), want_res, tol_for(dt), "residual");
  });
}

void case_silu_and_mul(int64_t t, int64_t inter, DType dt) {
  std::string shape = fmt::format("T{}_I{}", t, inter);
  add_case(Op::kSiluAndMul, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    F64 x;
    Tensor hx = host_floats(rand_floats(rng, t * 2 * inter, -4.f, 4.f), {t, 2 * inter}, dt, &x);
    F64 want(static_cast<size_t>(t * inter));
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < inter; ++j) {
        const double g = x[i * 2 * inter + j], u = x[i * 2 * inter + inter + j];
        want[i * inter + j] = g / (1.0 + std::exp(-g)) * u;
      }
    Tensor dout = poisoned(be, {t, inter}, dt);
    SW_ASSERT_OK(be.silu_and_mul(upload(be, hx), dout));
    expect_nmse(download(be, dout), want, tol_for(dt), "out");
  });
}

// Reference RoPE of one [T, H, D] tensor. The angle is the float32 product position *
// inv_freq (as HF computes it); cos/sin and the rotation are in float64.
F64 ref_rope(const F64& x, const std::vector<int32_t>& pos, const std::vector<float>& inv_freq,
             int64_t t, int64_t heads, int64_t d, RopeLayout layout) {
  F64 out = x;
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  for (int64_t i = 0; i < t; ++i)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (i * heads + h) * d;
      for (int64_t f = 0; f < half; ++f) {
        const double angle = static_cast<double>(static_cast<float>(pos[i]) * inv_freq[f]);
        const int64_t a = layout == RopeLayout::kNeox ? f : 2 * f;
        const int64_t b = layout == RopeLayout::kNeox ? f + half : 2 * f + 1;
        const double x0 = x[base + a], x1 = x[base + b];
        out[base + a] = x0 * std::cos(angle) - x1 * std::sin(angle);
        out[base + b] = x1 * std::cos(angle) + x0 * std::sin(angle);
      }
    }
  return out;
}

// Positions drawn from [pos_lo, pos_hi]; the first token sits at pos_lo and the last at
// pos_hi (long contexts: angles of 10^5 rad need a correct range reduction in sin/cos).
void case_rope(int64_t t, int64_t hq, int64_t hk, int64_t d, int64_t rot, RopeLayout layout,
               DType dt, int32_t pos_lo = 0, int32_t pos_hi = 8191) {
  std::string shape = fmt::format("T{}_Hq{}_Hk{}_D{}_rot{}_{}", t, hq, hk, d, rot,
                                  layout == RopeLayout::kNeox ? "neox" : "interleaved");
  if (pos_lo != 0 || pos_hi != 8191) shape += fmt::format("_pos{}-{}", pos_lo, pos_hi);
  add_case(Op::kRope, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    F64 q, k;
    Tensor hq_t = host_floats(rand_floats(rng, t * hq * d), {t, hq, d}, dt, &q);
    Tensor hk_t = host_floats(rand_floats(rng, t * hk * d), {t, hk, d}, dt, &k);
    std::vector<int32_t> pos(static_cast<size_t>(t));
    std::uniform_int_distribution<int32_t> pdist(pos_lo, pos_hi);
    for (auto& p : pos) p = pdist(rng);
    if (t > 0) pos[0] = pos_lo;
    if (t > 1) pos[t - 1] = pos_hi;
    std::vector<float> inv_freq(static_cast<size_t>(rot / 2));
    for (int64_t i = 0; i < rot / 2; ++i)
      inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / static_cast<double>(rot)));
    F64 want_q = ref_rope(q, pos, inv_freq, t, hq, d, layout);
    F64 want_k = ref_rope(k, pos, inv_freq, t, hk, d, layout);
    Tensor dq = upload(be, hq_t), dk = upload(be, hk_t);
    SW_ASSERT_OK(be.rope(dq, dk, upload(be, Tensor::from_ints(pos, {t})),
                         upload(be, Tensor::from_floats(inv_freq, {rot / 2})), layout));
    // Angles up to pos_hi rad: cosf/sinf of float32 arguments differ from float64 in ~1e-7.
    expect_nmse(download(be, dq), want_q, tol_for(dt, 1e-9), "q");
    expect_nmse(download(be, dk), want_k, tol_for(dt, 1e-9), "k");
  });
}

// ============================== paged KV cache and attention ==================================

struct PagedLayout {
  int64_t num_blocks = 0, block_size = 0, max_blocks = 0;
  std::vector<int32_t> block_tables;  // [B, max_blocks], -1 past each sequence's blocks
};

// Gives every sequence ceil(len / block_size) distinct blocks drawn from a shuffled pool
// (plus spare blocks nobody owns), so block ids are non-contiguous. The table is at least
// `min_width` blocks wide (a graph-mode table sized for the longest sequence the model
// takes, with -1 past each sequence's blocks).
PagedLayout make_layout(const std::vector<int32_t>& lens, int64_t block_size, Rng& rng,
                        int64_t min_width = 1) {
  PagedLayout l;
  l.block_size = block_size;
  int64_t total = 0;
  for (int32_t n : lens) {
    const int64_t blocks = (n + block_size - 1) / block_size;
    l.max_blocks = std::max(l.max_blocks, blocks);
    total += blocks;
  }
  l.max_blocks = std::max<int64_t>(l.max_blocks, min_width);
  l.num_blocks = total + 3;
  std::vector<int32_t> pool(static_cast<size_t>(l.num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  l.block_tables.assign(lens.size() * static_cast<size_t>(l.max_blocks), -1);
  size_t next = 0;
  for (size_t b = 0; b < lens.size(); ++b)
    for (int64_t i = 0; i < (lens[b] + block_size - 1) / block_size; ++i)
      l.block_tables[b * l.max_blocks + i] = pool[next++];
  return l;
}

int64_t cache_offset(const PagedLayout& l, size_t seq, int64_t pos, int64_t hk, int64_t kvh,
                     int64_t d) {
  const int64_t block = l.block_tables[seq * l.max_blocks + pos / l.block_size];
  return ((block * l.block_size + pos % l.block_size) * hk + kvh) * d;
}

// Reference attention of one query row over cache positions [0, n) of sequence `seq`; zeros
// when n == 0 (a sequence with no context attends to nothing).
void ref_attend(const double* q, const F64& kc, const F64& vc, const PagedLayout& l, size_t seq,
                int64_t n, int64_t hk, int64_t kvh, int64_t d, double scale, double* out) {
  for (int64_t i = 0; i < d; ++i) out[i] = 0;
  if (n == 0) return;
  F64 s(static_cast<size_t>(n));
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t p = 0; p < n; ++p) {
    const int64_t off = cache_offset(l, seq, p, hk, kvh, d);
    double dot = 0;
    for (int64_t i = 0; i < d; ++i) dot += q[i] * kc[off + i];
    s[p] = dot * scale;
    m = std::max(m, s[p]);
  }
  double denom = 0;
  for (int64_t p = 0; p < n; ++p) {
    const double e = std::exp(s[p] - m);
    denom += e;
    const int64_t off = cache_offset(l, seq, p, hk, kvh, d);
    for (int64_t i = 0; i < d; ++i) out[i] += e * vc[off + i];
  }
  for (int64_t i = 0; i < d; ++i) out[i] /= denom;
}

struct AttnShape {
  int64_t hq, hk, d, block_size;
};

// "1-17-64", or "64x1" / "64vals_sum2016" for long lists (names stay readable).
std::string list_name(const std::vector<int32_t>& v) {
  if (v.size() <= 8) return fmt::format("{}", fmt::join(v, "-"));
  if (std::all_of(v.begin(), v.end(), [&](int32_t x) { return x == v[0]; }))
    return fmt::format("{}x{}", v.size(), v[0]);
  return fmt::format("{}vals_sum{}", v.size(), std::accumulate(v.begin(), v.end(), int64_t{0}));
}

std::string attn_name(const AttnShape& a, const std::vector<int32_t>& q_lens,
                      const std::vector<int32_t>& ctx) {
  return fmt::format("Hq{}_Hk{}_D{}_bs{}_q-{}_ctx-{}", a.hq, a.hk, a.d, a.block_size,
                     list_name(q_lens), list_name(ctx));
}

// Prefill: sequence b has ctx[b] cached tokens already and q_lens[b] new ones.
void case_attention_prefill(const AttnShape& a, const std::vector<int32_t>& q_lens,
                            const std::vector<int32_t>& ctx, DType dt) {
  std::string shape = attn_name(a, q_lens, ctx);
  add_case(Op::kAttentionPrefill, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    const size_t b = q_lens.size();
    std::vector<int32_t> qsl(b + 1, 0), lens(b);
    for (size_t i = 0; i < b; ++i) {
      qsl[i + 1] = qsl[i] + q_lens[i];
      lens[i] = ctx[i] + q_lens[i];
    }
    const int64_t t = qsl[b];
    PagedLayout l = make_layout(lens, a.block_size, rng);
    const Shape cache_shape{l.num_blocks, a.block_size, a.hk, a.d};
    const int64_t cache_n = shape_numel(cache_shape);
    F64 q, kc, vc;
    Tensor hq = host_floats(rand_floats(rng, t * a.hq * a.d, -2.f, 2.f), {t, a.hq, a.d}, dt, &q);
    Tensor hkc = host_floats(rand_floats(rng, cache_n, -2.f, 2.f), cache_shape, dt, &kc);
    Tensor hvc = host_floats(rand_floats(rng, cache_n), cache_shape, dt, &vc);
    const double scale = 1.0 / std::sqrt(static_cast<double>(a.d));
    F64 want(static_cast<size_t>(t * a.hq * a.d));
    for (size_t s = 0; s < b; ++s)
      for (int64_t i = qsl[s]; i < qsl[s + 1]; ++i) {
        const int64_t pos = ctx[s] + (i - qsl[s]);
        for (int64_t h = 0; h < a.hq; ++h) {
          const int64_t off = (i * a.hq + h) * a.d;
          ref_attend(&q[off], kc, vc, l, s, pos + 1, a.hk, h / (a.hq / a.hk), a.d, scale,
                     &want[off]);
        }
      }
    Tensor dout = poisoned(be, {t, a.hq, a.d}, dt);
    AttentionParams params;
    params.scale = static_cast<float>(scale);
    SW_ASSERT_OK(be.attention_prefill(
        upload(be, hq), upload(be, hkc), upload(be, hvc),
        upload(be, Tensor::from_ints(qsl, {static_cast<int64_t>(b) + 1})),
        upload(be, Tensor::from_ints(lens, {static_cast<int64_t>(b)})),
        upload(be, Tensor::from_ints(l.block_tables, {static_cast<int64_t>(b), l.max_blocks})),
        params, dout));
    expect_nmse(download(be, dout), want, tol_for(dt, 1e-10), "out");
  });
}

// table_width: block-table width (0: as wide as the longest sequence needs); k_offset: the K
// cache is a view that many elements into its buffer (upload_at_offset).
void case_attention_decode(const AttnShape& a, const std::vector<int32_t>& lens, DType dt,
                           int64_t table_width = 0, int64_t k_offset = 0) {
  std::string shape = attn_name(a, std::vector<int32_t>(lens.size(), 1), lens);
  if (table_width > 0) shape += fmt::format("_table{}", table_width);
  if (k_offset > 0) shape += fmt::format("_kview+{}", k_offset);
  add_case(Op::kAttentionDecode, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    const int64_t b = static_cast<int64_t>(lens.size());
    PagedLayout l = make_layout(lens, a.block_size, rng, std::max<int64_t>(table_width, 1));
    if (table_width > 0) {
      ASSERT_EQ(l.max_blocks, table_width);
    }
    const Shape cache_shape{l.num_blocks, a.block_size, a.hk, a.d};
    const int64_t cache_n = shape_numel(cache_shape);
    F64 q, kc, vc;
    Tensor hq = host_floats(rand_floats(rng, b * a.hq * a.d, -2.f, 2.f), {b, a.hq, a.d}, dt, &q);
    Tensor hkc = host_floats(rand_floats(rng, cache_n, -2.f, 2.f), cache_shape, dt, &kc);
    Tensor hvc = host_floats(rand_floats(rng, cache_n), cache_shape, dt, &vc);
    const double scale = 1.0 / std::sqrt(static_cast<double>(a.d));
    F64 want(static_cast<size_t>(b * a.hq * a.d));
    for (int64_t s = 0; s < b; ++s)
      for (int64_t h = 0; h < a.hq; ++h) {
        const int64_t off = (s * a.hq + h) * a.d;
        ref_attend(&q[off], kc, vc, l, static_cast<size_t>(s), lens[s], a.hk, h / (a.hq / a.hk),
                   a.d, scale, &want[off]);
      }
    Tensor dout = poisoned(be, {b, a.hq, a.d}, dt);
    AttentionParams params;
    params.scale = static_cast<float>(scale);
    SW_ASSERT_OK(be.attention_decode(
        upload(be, hq), upload_at_offset(be, hkc, k_offset), upload(be, hvc),
        upload(be, Tensor::from_ints(lens, {b})),
        upload(be, Tensor::from_ints(l.block_tables, {b, l.max_blocks})), params, dout));
    expect_nmse(download(be, dout), want, tol_for(dt, 1e-10), "out");
  });
}

// Writes T tokens at shuffled slots (some -1) into caches holding older data; every other
// slot must keep its old contents.
void case_kv_cache_write(int64_t t, int64_t hk, int64_t d, int64_t block_size, DType dt) {
  std::string shape = fmt::format("T{}_Hk{}_D{}_bs{}", t, hk, d, block_size);
  add_case(Op::kKvCacheWrite, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    const int64_t num_blocks = (t + block_size - 1) / block_size + 2;
    const Shape cache_shape{num_blocks, block_size, hk, d};
    const int64_t cache_n = shape_numel(cache_shape), row = hk * d;
    std::vector<int32_t> all(static_cast<size_t>(num_blocks * block_size));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    std::vector<int32_t> slots(all.begin(), all.begin() + t);
    for (int64_t i = 0; i < t; i += 5) slots[i] = -1;
    F64 k, v, kc, vc;
    Tensor hk_t = host_floats(rand_floats(rng, t * row), {t, hk, d}, dt, &k);
    Tensor hv_t = host_floats(rand_floats(rng, t * row), {t, hk, d}, dt, &v);
    Tensor hkc = host_floats(rand_floats(rng, cache_n), cache_shape, dt, &kc);
    Tensor hvc = host_floats(rand_floats(rng, cache_n), cache_shape, dt, &vc);
    for (int64_t i = 0; i < t; ++i) {
      if (slots[i] < 0) continue;
      for (int64_t j = 0; j < row; ++j) {
        kc[slots[i] * row + j] = k[i * row + j];
        vc[slots[i] * row + j] = v[i * row + j];
      }
    }
    Tensor dkc = upload(be, hkc), dvc = upload(be, hvc);
    SW_ASSERT_OK(be.kv_cache_write(upload(be, hk_t), upload(be, hv_t),
                                   upload(be, Tensor::from_ints(slots, {t})), dkc, dvc));
    // A copy: exact.
    expect_nmse(download(be, dkc), kc, 0.0, "k_cache");
    expect_nmse(download(be, dvc), vc, 0.0, "v_cache");
  });
}

// ============================== MoE ===========================================================

// Reference router: float64 softmax; top-k by descending logit, ties to the lower id.
void ref_router(const F64& logits, int64_t t, int64_t e, int k, bool renorm,
                std::vector<int32_t>& ids, F64& w) {
  ids.assign(static_cast<size_t>(t * k), 0);
  w.assign(static_cast<size_t>(t * k), 0);
  for (int64_t i = 0; i < t; ++i) {
    const double* row = &logits[i * e];
    std::vector<int32_t> idx(static_cast<size_t>(e));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    double m = row[idx[0]], denom = 0, kept = 0;
    for (int64_t j = 0; j < e; ++j) denom += std::exp(row[j] - m);
    for (int j = 0; j < k; ++j) {
      ids[i * k + j] = idx[j];
      w[i * k + j] = std::exp(row[idx[j]] - m) / denom;
      kept += w[i * k + j];
    }
    if (renorm)
      for (int j = 0; j < k; ++j) w[i * k + j] /= kept;
  }
}

void case_router_topk(int64_t t, int64_t e, int k, bool renorm, bool ties, DType dt) {
  std::string shape =
      fmt::format("T{}_E{}_k{}{}{}", t, e, k, renorm ? "_renorm" : "", ties ? "_ties" : "");
  add_case(Op::kRouterTopk, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    std::vector<float> raw = rand_floats(rng, t * e, -3.f, 3.f);
    // Coarse values (multiples of 0.25) make exact ties common in every dtype.
    if (ties)
      for (auto& v : raw) v = std::round(v * 4.f) / 4.f;
    F64 logits;
    Tensor hl = host_floats(raw, {t, e}, dt, &logits);
    std::vector<int32_t> want_ids;
    F64 want_w;
    ref_router(logits, t, e, k, renorm, want_ids, want_w);
    Tensor dids = poisoned(be, {t, k}, DType::kI32);
    Tensor dw = poisoned(be, {t, k}, DType::kF32);
    SW_ASSERT_OK(be.router_topk(upload(be, hl), k, renorm, dids, dw));
    expect_exact(ints_of(download(be, dids)), want_ids, "topk_ids");
    // Weights are float32 whatever the logits dtype.
    expect_nmse(download(be, dw), want_w, 1e-10, "topk_weights");
  });
}

struct AssignResult {
  std::vector<int32_t> dest, offsets;
};

// Reference moe_assign, straight from the header: order tokens (stable), then choice j = 0
// of every token in that order, then j = 1, ...; slot = running count of the expert.
AssignResult ref_moe_assign(const std::vector<int32_t>& ids, const std::vector<float>& w, int64_t t,
                            int64_t k, int e, int64_t capacity, DropPolicy policy) {
  std::vector<int64_t> order(static_cast<size_t>(t));
  std::iota(order.begin(), order.end(), 0);
  auto score = [&](int64_t i) {
    double s = policy == DropPolicy::kPriorityMax ? -1e300 : 0.0;
    for (int64_t j = 0; j < k; ++j)
      s = policy == DropPolicy::kPriorityMax ? std::max<double>(s, w[i * k + j])
                                             : s + static_cast<double>(w[i * k + j]);
    return s;
  };
  if (policy != DropPolicy::kOrder) {
    // Insertion sort: obviously stable, T is small.
    std::vector<double> sc(static_cast<size_t>(t));
    for (int64_t i = 0; i < t; ++i) sc[i] = score(i);
    for (int64_t i = 1; i < t; ++i)
      for (int64_t j = i; j > 0 && sc[order[j]] > sc[order[j - 1]]; --j)
        std::swap(order[j], order[j - 1]);
  }
  std::vector<int64_t> slot(ids.size(), -1), count(static_cast<size_t>(e), 0);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t i : order) {
      const int32_t ex = ids[i * k + j];
      if (ex < 0 || ex >= e) continue;
      slot[i * k + j] = count[ex]++;
    }
  AssignResult r;
  r.offsets.assign(static_cast<size_t>(e + 1), 0);
  for (int ex = 0; ex < e; ++ex)
    r.offsets[ex + 1] =
        r.offsets[ex] +
        static_cast<int32_t>(capacity < 0 ? count[ex] : std::min(count[ex], capacity));
  r.dest.assign(ids.size(), -1);
  for (size_t i = 0; i < ids.size(); ++i)
    if (slot[i] >= 0 && (capacity < 0 || slot[i] < capacity))
      r.dest[i] = r.offsets[ids[i]] + static_cast<int32_t>(slot[i]);
  return r;
}

const char* policy_name(DropPolicy p) {
  switch (p) {
    case DropPolicy::kOrder: return "order";
    case DropPolicy::kPriorityMax: return "prio_max";
    case DropPolicy::kPrioritySum: return "prio_sum";
  }
  return "?";
}

AssignResult run_moe_assign(Backend& be, const std::vector<int32_t>& ids,
                            const std::vector<float>& w, int64_t t, int64_t k, int e,
                            int64_t capacity, DropPolicy policy) {
  Tensor dd = poisoned(be, {t, k}, DType::kI32), doffs = poisoned(be, {e + 1}, DType::kI32);
  Status st =
      be.moe_assign(upload(be, Tensor::from_ints(ids, {t, k})),
                    upload(be, Tensor::from_floats(w, {t, k})), e, capacity, policy, dd, doffs);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return AssignResult{ints_of(download(be, dd)), ints_of(download(be, doffs))};
}

// Hand-checkable moe_assign: `want_*` written by hand AND checked against the reference.
void case_moe_assign_hand(const std::string& label, int64_t t, int64_t k, int e,
                          std::vector<int32_t> ids, std::vector<float> w, int64_t capacity,
                          DropPolicy policy, std::vector<int32_t> want_dest,
                          std::vector<int32_t> want_offsets) {
  std::string shape = fmt::format("hand_{}_{}", label, policy_name(policy));
  add_case(Op::kMoeAssign, shape, DType::kF32, [=](Backend& be) {
    AssignResult ref = ref_moe_assign(ids, w, t, k, e, capacity, policy);
    expect_exact(ref.dest, want_dest, "reference dest_rows vs hand-worked");
    expect_exact(ref.offsets, want_offsets, "reference expert_offsets vs hand-worked");
    AssignResult got = run_moe_assign(be, ids, w, t, k, e, capacity, policy);
    expect_exact(got.dest, want_dest, "dest_rows");
    expect_exact(got.offsets, want_offsets, "expert_offsets");
  });
}

// Random routing of T tokens over `routed_experts` ids, of which this rank owns the first
// `e`; weights quantised so priority ties (stable order) occur.
void case_moe_assign_random(int64_t t, int64_t k, int routed_experts, int e, int64_t capacity,
                            DropPolicy policy) {
  std::string shape = fmt::format("T{}_k{}_E{}of{}_cap{}_{}", t, k, e, routed_experts, capacity,
                                  policy_name(policy));
  add_case(Op::kMoeAssign, shape, DType::kF32, [=](Backend& be) {
    Rng rng(seed_of(shape));
    std::vector<int32_t> ids(static_cast<size_t>(t * k));
    std::vector<float> w(static_cast<size_t>(t * k));
    std::uniform_int_distribution<int> wd(1, 16);
    for (int64_t i = 0; i < t; ++i) {
      std::vector<int32_t> pick(static_cast<size_t>(routed_experts));
      std::iota(pick.begin(), pick.end(), 0);
      std::shuffle(pick.begin(), pick.end(), rng);
      for (int64_t j = 0; j < k; ++j) {
        ids[i * k + j] = pick[j];
        w[i * k + j] = static_cast<float>(wd(rng)) / 16.f;
      }
    }
    AssignResult want = ref_moe_assign(ids, w, t, k, e, capacity, policy);
    AssignResult got = run_moe_assign(be, ids, w, t, k, e, capacity, policy);
    expect_exact(got.dest, want.dest, "dest_rows");
    expect_exact(got.offsets, want.offsets, "expert_offsets");
  });
}

// Routing for permute/unpermute: some tokens fully dropped, out has spare rows.
struct Routing {
  std::vector<int32_t> dest;
  int64_t rows = 0;  // R = used rows + spare
  int64_t used = 0;
};

Routing make_routing(Rng& rng, int64_t t, int64_t k, int64_t spare) {
  Routing r;
  r.dest.assign(static_cast<size_t>(t * k), -1);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < t * k; ++i)
    if (i / k != 0 && i % 5 != 3) kept.push_back(i);  // token 0 and every 5th choice: dropped
  std::vector<int32_t> perm(kept.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);  // expert-major rows scatter over tokens
  for (size_t j = 0; j < kept.size(); ++j) r.dest[kept[j]] = perm[j];
  r.used = static_cast<int64_t>(kept.size());
  r.rows = r.used + spare;
  return r;
}

void case_moe_permute(int64_t t, int64_t k, int64_t h, DType dt) {
  std::string shape = fmt::format("T{}_k{}_H{}", t, k, h);
  add_case(Op::kMoePermute, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    Routing r = make_routing(rng, t, k, 3);
    Tensor hx = host_floats(rand_floats(rng, t * h), {t, h}, dt);
    Tensor want = poison_host({r.rows, h}, dt);
    const size_t es = dtype_size(dt);
    for (int64_t i = 0; i < t * k; ++i)
      if (r.dest[i] >= 0)
        std::memcpy(static_cast<char*>(want.data()) + r.dest[i] * h * es,
                    static_cast<const char*>(hx.data()) + (i / k) * h * es, h * es);
    Tensor dout = poisoned(be, {r.rows, h}, dt);
    SW_ASSERT_OK(
        be.moe_permute(upload(be, hx), upload(be, Tensor::from_ints(r.dest, {t, k})), dout));
    // Exact copies, and rows nobody targets keep their poison.
    expect_bits_equal(download(be, dout), want, "out");
  });
}

void case_moe_unpermute(int64_t t, int64_t k, int64_t h, DType dt) {
  std::string shape = fmt::format("T{}_k{}_H{}", t, k, h);
  add_case(Op::kMoeUnpermute, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    Routing r = make_routing(rng, t, k, 3);
    F64 y;
    Tensor hy = host_floats(rand_floats(rng, r.rows * h), {r.rows, h}, dt, &y);
    std::vector<float> w = rand_floats(rng, t * k, 0.f, 1.f);
    F64 want(static_cast<size_t>(t * h), 0.0);
    for (int64_t i = 0; i < t; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const int32_t d = r.dest[i * k + j];
        if (d < 0) continue;
        for (int64_t c = 0; c < h; ++c) want[i * h + c] += w[i * k + j] * y[d * h + c];
      }
    Tensor dout = poisoned(be, {t, h}, dt);
    SW_ASSERT_OK(be.moe_unpermute(upload(be, hy), upload(be, Tensor::from_ints(r.dest, {t, k})),
                                  upload(be, Tensor::from_floats(w, {t, k})), dout));
    Tensor out = download(be, dout);
    expect_nmse(out, want, tol_for(dt), "out");
    if (t > 0) {
      std::vector<float> row0 = out.rows(0, 1).to_floats();
      EXPECT_TRUE(std::all_of(row0.begin(), row0.end(), [](float v) { return v == 0.f; }))
          << "token 0 has every choice dropped: its row must be zeros";
    }
  });
}

// ============================== sampling ======================================================

// Reference of the documented procedure (kernels/cpu/cpu_sample.cpp's header), in float64:
// the kept set in descending-logit order (ties lower id) and its unnormalised probabilities.
void ref_filtered(const F64& logits, const SamplingRow& cfg, std::vector<int32_t>& kept, F64& p) {
  const int64_t v = static_cast<int64_t>(logits.size());
  std::vector<int32_t> idx(static_cast<size_t>(v));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  int64_t n = cfg.top_k > 0 ? std::min<int64_t>(cfg.top_k, v) : v;
  const double m = logits[idx[0]] / cfg.temperature;
  F64 pr(static_cast<size_t>(n));
  double total = 0;
  for (int64_t r = 0; r < n; ++r) total += (pr[r] = std::exp(logits[idx[r]] / cfg.temperature - m));
  if (cfg.top_p < 1.f) {
    double c = 0;
    int64_t keep = 0;
    while (keep < n) {
      c += pr[keep++];
      if (c >= cfg.top_p * total) break;
    }
    n = keep;
  }
  kept.assign(idx.begin(), idx.begin() + n);
  p.assign(pr.begin(), pr.begin() + n);
}

int32_t ref_sample(const F64& logits, const SamplingRow& cfg) {
  if (!(cfg.temperature > 0.f)) {
    int32_t best = 0;
    for (int32_t i = 1; i < static_cast<int32_t>(logits.size()); ++i)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  std::vector<int32_t> kept;
  F64 p;
  ref_filtered(logits, cfg, kept, p);
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  const double target = static_cast<double>(philox_uniform(cfg.seed, cfg.offset, 0)) * total;
  double c = 0;
  for (size_t r = 0; r < kept.size(); ++r)
    if ((c += p[r]) >= target) return kept[r];
  return kept.back();
}

std::vector<int32_t> run_sample(Backend& be, const Tensor& host_logits,
                                const std::vector<SamplingRow>& rows) {
  Tensor dout = poisoned(be, {host_logits.dim(0)}, DType::kI32);
  Status st = be.sample(upload(be, host_logits), rows, dout);
  EXPECT_TRUE(st.ok()) << st.to_string();
  return ints_of(download(be, dout));
}

// Greedy, with rows whose maximum is tied: the lowest id must win.
void case_sample_greedy(int64_t b, int64_t v, DType dt) {
  std::string shape = fmt::format("greedy_B{}_V{}", b, v);
  add_case(Op::kSample, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    std::vector<float> raw = rand_floats(rng, b * v, -5.f, 5.f);
    if (b > 1)
      for (int64_t i = 0; i < v; ++i) raw[v + i] = 1.5f;  // row 1: all tied -> id 0
    if (b > 2) {
      raw[2 * v + v - 1] = 8.f;  // row 2: tie between the last id and id 3 -> 3
      raw[2 * v + 3] = 8.f;
    }
    F64 logits;
    Tensor hl = host_floats(raw, {b, v}, dt, &logits);
    std::vector<SamplingRow> rows(static_cast<size_t>(b));
    std::vector<int32_t> want(static_cast<size_t>(b));
    for (int64_t i = 0; i < b; ++i) {
      rows[i].seed = static_cast<uint64_t>(i);
      want[i] = ref_sample(F64(logits.begin() + i * v, logits.begin() + (i + 1) * v), rows[i]);
    }
    expect_exact(run_sample(be, hl, rows), want, "greedy tokens");
  });
}

// top_k = 1 and a tiny top_p both collapse sampling to greedy whatever the draw.
void case_sample_degenerate(int64_t b, int64_t v, DType dt) {
  std::string shape = fmt::format("topk1_tinytopp_B{}_V{}", b, v);
  add_case(Op::kSample, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    Tensor hl = host_floats(rand_floats(rng, b * v, -5.f, 5.f), {b, v}, dt);
    std::vector<SamplingRow> greedy(static_cast<size_t>(b)), topk1 = greedy, topp = greedy;
    for (int64_t i = 0; i < b; ++i) {
      topk1[i] = SamplingRow{1.3f, 1, 1.f, 42 + static_cast<uint64_t>(i), 7};
      topp[i] = SamplingRow{0.7f, 0, 1e-6f, 99, static_cast<uint64_t>(i)};
    }
    std::vector<int32_t> want = run_sample(be, hl, greedy);
    expect_exact(run_sample(be, hl, topk1), want, "top_k=1 vs greedy");
    expect_exact(run_sample(be, hl, topp), want, "top_p=1e-6 vs greedy");
  });
}

// Many rows of the same logits with offsets 0..n-1: reproducible, spread over the kept set
// only, frequencies match the filtered softmax, and the draw follows the documented
// inverse-CDF order (almost every row equals the float64 reference's token).
void case_sample_distribution(int64_t n, float temperature, int32_t top_k, float top_p, DType dt) {
  std::string shape = fmt::format("dist_N{}_temp{}_k{}_p{}", n, temperature, top_k, top_p);
  add_case(Op::kSample, shape, dt, [=](Backend& be) {
    // Distinct logits exactly representable in every dtype, scattered over the ids, plus a
    // tie (ids 9 and 4) to exercise the lower-id rule.
    const std::vector<float> base = {0.25f, -1.f, 1.5f,  0.f,   1.25f, -2.f,
                                     2.f,   0.5f, -0.5f, 1.25f, -3.f,  0.75f};
    const int64_t v = static_cast<int64_t>(base.size());
    std::vector<float> raw;
    for (int64_t i = 0; i < n; ++i) raw.insert(raw.end(), base.begin(), base.end());
    F64 logits;
    Tensor hl = host_floats(raw, {n, v}, dt, &logits);
    F64 row0(logits.begin(), logits.begin() + v);
    std::vector<SamplingRow> rows(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      rows[i] = SamplingRow{temperature, top_k, top_p, 1234, static_cast<uint64_t>(i)};
    std::vector<int32_t> got = run_sample(be, hl, rows);
    expect_exact(run_sample(be, hl, rows), got, "same seed + offset must give the same token");

    std::vector<int32_t> kept;
    F64 p;
    ref_filtered(row0, rows[0], kept, p);
    const double total = std::accumulate(p.begin(), p.end(), 0.0);
    std::map<int32_t, int64_t> hist;
    for (int32_t tok : got) ++hist[tok];
    EXPECT_GE(hist.size(), std::min<size_t>(kept.size(), 3))
        << "different offsets should spread over the kept tokens";
    double chi2 = 0;
    for (size_t r = 0; r < kept.size(); ++r) {
      const double expected = static_cast<double>(n) * p[r] / total;
      const double obs = static_cast<double>(hist.count(kept[r]) ? hist[kept[r]] : 0);
      chi2 += (obs - expected) * (obs - expected) / expected;
    }
    int64_t outside = 0;
    for (auto& [tok, cnt] : hist)
      if (std::find(kept.begin(), kept.end(), tok) == kept.end()) outside += cnt;
    EXPECT_EQ(outside, 0) << "tokens outside the top-k/top-p set were drawn";
    // df = kept - 1 <= 11; 60 is far in the tail (p < 1e-8): generous on purpose.
    EXPECT_LT(chi2, 60.0) << "empirical distribution vs filtered softmax (kept " << kept.size()
                          << " tokens)";
    int64_t mismatch = 0;
    for (int64_t i = 0; i < n; ++i) mismatch += got[i] != ref_sample(row0, rows[i]);
    EXPECT_LE(mismatch, n / 100) << "rows whose token differs from the inverse-CDF reference";
  });
}

// Reference draw at a full vocabulary: the documented procedure in float64 (top-k by
// descending logit, ties to the lower id; top-p cut; inverse CDF at u * mass). `ambiguous`
// when the float32 procedure could land elsewhere: the draw or the top-p threshold within
// 1e-5 of the mass of a boundary between two tokens.
struct RefDraw {
  int32_t token = -1;
  bool ambiguous = false;
};

RefDraw ref_draw_topk(const float* logits, int64_t v, const SamplingRow& cfg) {
  const int64_t n_k = cfg.top_k > 0 ? std::min<int64_t>(cfg.top_k, v) : v;
  std::vector<int32_t> idx(static_cast<size_t>(v));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + n_k, idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  const double t = cfg.temperature, m = logits[idx[0]] / t;
  F64 c(static_cast<size_t>(n_k));
  double run = 0;
  for (int64_t r = 0; r < n_k; ++r) c[r] = (run += std::exp(logits[idx[r]] / t - m));
  RefDraw d;
  const double eps = 1e-5 * run;
  int64_t n = n_k;
  if (cfg.top_p < 1.f) {
    const double threshold = static_cast<double>(cfg.top_p) * run;
    n = 1;
    while (n < n_k && c[n - 1] < threshold) ++n;
    for (int64_t r = 0; r < n_k; ++r) d.ambiguous |= std::abs(c[r] - threshold) < eps;
  }
  const double target = static_cast<double>(philox_uniform(cfg.seed, cfg.offset, 0)) * c[n - 1];
  int64_t r = 0;
  while (r < n - 1 && c[r] < target) ++r;
  for (int64_t i = 0; i < n; ++i) d.ambiguous |= std::abs(c[i] - target) < eps;
  d.token = idx[r];
  return d;
}

// Sampling at a real vocabulary (V = 151936) with top-k and top-p, more rows than one CUDA
// launch sorts (55 per launch there), inside a step workspace: the sort scratch must not be
// carved from it (S x V x 16 bytes would be 155 MB here). Prints the time of the call.
void case_sample_vocab(int64_t b, int64_t v, float temperature, int32_t top_k, float top_p) {
  std::string shape = fmt::format("vocab_B{}_V{}_temp{}_k{}_p{}", b, v, temperature, top_k, top_p);
  add_case(Op::kSample, shape, DType::kF32, [=](Backend& be) {
    Rng rng(seed_of(shape));
    std::vector<float> raw = rand_floats(rng, b * v, -4.f, 4.f);
    // Every third row is peaked: three ids far above the rest, so top-p cuts inside top-k.
    for (int64_t i = 0; i < b; i += 3)
      for (int64_t c = 0; c < 3; ++c) raw[i * v + (i * 7919 + c * 104729) % v] += 6.f + c;
    Tensor hl = host_floats(raw, {b, v}, DType::kF32);
    std::vector<SamplingRow> rows(static_cast<size_t>(b));
    for (int64_t i = 0; i < b; ++i)
      rows[i] = SamplingRow{temperature, top_k, top_p, 1000 + static_cast<uint64_t>(i), 17};
    Tensor dl = upload(be, hl);
    Tensor dout = poisoned(be, {b}, DType::kI32);
    SW_ASSERT_OK(be.synchronize());
    Workspace ws;
    std::vector<int32_t> got;
    const auto t0 = std::chrono::steady_clock::now();
    {
      WorkspaceScope scope(be, &ws);
      SW_ASSERT_OK(be.sample(dl, rows, dout));
      got = ints_of(download(be, dout));
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[sample] %s on %s: %.2f ms for %lld rows\n", shape.c_str(), be.name().c_str(), ms,
                static_cast<long long>(b));
    ::testing::Test::RecordProperty("sample_ms_" + be.name(), std::to_string(ms));
    EXPECT_LE(ws.high_water_bytes(), int64_t{1} << 20)
        << "sample carved its scratch from the step workspace";
    int64_t ambiguous = 0;
    std::vector<int32_t> want;
    for (int64_t i = 0; i < b; ++i) {
      const RefDraw d = ref_draw_topk(raw.data() + i * v, v, rows[i]);
      ambiguous += d.ambiguous;
      want.push_back(d.ambiguous ? got[i] : d.token);
    }
    EXPECT_LE(ambiguous, b / 8) << "too few rows left to check";
    expect_exact(got, want, "tokens (rows within rounding of a boundary excepted)");
  });
}

// ============================== embedding / add / convert =====================================

void case_embedding(int64_t t, int64_t v, int64_t h, int64_t vocab_offset, DType dt) {
  std::string shape = fmt::format("T{}_V{}_H{}_off{}", t, v, h, vocab_offset);
  add_case(Op::kEmbedding, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    F64 table;
    Tensor ht = host_floats(rand_floats(rng, v * h), {v, h}, dt, &table);
    std::vector<int32_t> ids(static_cast<size_t>(t));
    std::uniform_int_distribution<int32_t> idd(0, static_cast<int32_t>(vocab_offset + v + 20));
    for (auto& id : ids) id = idd(rng);
    if (t > 2) {
      ids[0] = static_cast<int32_t>(vocab_offset);          // first local id
      ids[1] = static_cast<int32_t>(vocab_offset + v - 1);  // last local id
      ids[2] = static_cast<int32_t>(vocab_offset + v);      // first id past the shard
    }
    F64 want(static_cast<size_t>(t * h), 0.0);
    for (int64_t i = 0; i < t; ++i) {
      const int64_t local = ids[i] - vocab_offset;
      if (local < 0 || local >= v) continue;
      for (int64_t c = 0; c < h; ++c) want[i * h + c] = table[local * h + c];
    }
    Tensor dout = poisoned(be, {t, h}, dt);
    SW_ASSERT_OK(
        be.embedding(upload(be, Tensor::from_ints(ids, {t})), upload(be, ht), vocab_offset, dout));
    expect_nmse(download(be, dout), want, 0.0, "out (exact rows, zeros off-shard)");
  });
}

void case_add(const Shape& shape_v, DType dt) {
  std::string shape = fmt::format("shape{}", shape_str(shape_v));
  add_case(Op::kAdd, shape, dt, [=](Backend& be) {
    Rng rng(seed_of(shape));
    const int64_t n = shape_numel(shape_v);
    F64 x, y;
    Tensor hx = host_floats(rand_floats(rng, n), shape_v, dt, &x);
    Tensor hy = host_floats(rand_floats(rng, n), shape_v, dt, &y);
    F64 want(x.size());
    for (size_t i = 0; i < x.size(); ++i) want[i] = x[i] + y[i];
    Tensor dx = upload(be, hx);
    SW_ASSERT_OK(be.add(dx, upload(be, hy)));
    expect_nmse(download(be, dx), want, tol_for(dt), "x");
  });
}

void case_convert(int64_t n, DType from, DType to) {
  std::string shape = fmt::format("N{}_to_{}", n, short_dtype(to));
  add_case(Op::kConvert, shape, from, [=](Backend& be) {
    Rng rng(seed_of(fmt::format("{}{}", shape, short_dtype(from))));
    std::vector<float> raw = rand_floats(rng, n, -70000.f, 70000.f);  // f16 overflow included
    for (int64_t i = 0; i < n; i += 3) raw[i] *= 1e-9f;               // and f16 subnormals
    Tensor hs = host_floats(raw, {n}, from);
    Tensor want = Tensor::empty({n}, to);
    for (int64_t i = 0; i < n; ++i) store_float(want.data(), to, i, load_float(hs.data(), from, i));
    Tensor dout = poisoned(be, {n}, to);
    SW_ASSERT_OK(be.convert(upload(be, hs), dout));
    expect_bits_equal(download(be, dout), want, "dst (round to nearest even)");
  });
}

// Bad shapes/dtypes come back as kInvalidArgument naming the op and the offending shape.
void case_errors(DType dt) {
  add_case(Op::kGemm, "bad_shapes", dt, [=](Backend& be) {
    Tensor x = be.alloc({3, 8}, dt), w = be.alloc({5, 9}, dt), out = be.alloc({3, 5}, dt);
    Status st = be.gemm(x, w, out);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find("gemm"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("[5, 9]"), std::string::npos) << st.message();

    Tensor q = be.alloc({4, 6, 64}, dt), kc = be.alloc({2, 16, 4, 64}, dt);
    Tensor lens = be.alloc({1}, DType::kI32), bt = be.alloc({1, 1}, DType::kI32);
    Tensor o = be.alloc({4, 6, 64}, dt);
    st = be.attention_decode(q, kc, kc, lens, bt, AttentionParams{}, o);  // 6 % 4 != 0
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find("attention_decode"), std::string::npos) << st.message();

    Tensor ids_f = be.alloc({4, 2}, dt), dest = be.alloc({4, 2}, DType::kI32);
    Tensor offs = be.alloc({3}, DType::kI32);
    st = be.moe_assign(ids_f, ids_f, 2, -1, DropPolicy::kOrder, dest, offs);  // ids not int32
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();

    Tensor a = be.alloc({4, 8}, dt), b = be.alloc({8, 4}, dt);
    st = be.add(a, b);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find("[8, 4]"), std::string::npos) << st.message();
  });
}

// ============================== the table =====================================================

void build_cases() {
  for (DType dt : kFloatDtypes) {
    // GEMM: M = 0, 1, 7, 769; N and K odd, 5125 on either side; bias and accumulate.
    case_gemm(0, 64, 32, true, false, dt);
    case_gemm(1, 64, 32, false, false, dt);
    case_gemm(7, 33, 129, false, false, dt);
    case_gemm(7, 33, 129, true, false, dt);
    case_gemm(7, 33, 129, false, true, dt);
    case_gemm(7, 33, 129, true, true, dt);
    case_gemm(769, 96, 80, true, false, dt);
    case_gemm(7, 5125, 80, false, false, dt);
    case_gemm(3, 40, 5125, true, true, dt);
    // Bias views at odd element offsets (never 16-byte aligned): the bias kernel's path.
    case_gemm(7, 33, 129, true, false, dt, 1);
    case_gemm(5, 1000, 64, true, true, dt, 3);

    case_grouped_gemm({3, 0, 5, 1}, 2, 33, 129, dt);
    case_grouped_gemm({0, 0, 0}, 4, 16, 24, dt);
    case_grouped_gemm({0, 7, 0, 0, 1}, 0, 80, 64, dt);
    case_grouped_gemm({200, 0, 97, 150, 1, 0, 300, 21}, 5, 96, 72, dt);
    // Qwen3-30B-A3B's gate/up shape (K 2048: the 16-byte main loop) and K 2050 (odd rows).
    case_grouped_gemm({3, 0, 5, 2}, 2, 1536, 2048, dt);
    case_grouped_gemm({2, 1, 0, 3}, 1, 72, 2050, dt);

    for (int64_t t : {0, 1, 7, 769}) case_rms_norm(t, 80, false, dt);
    case_rms_norm(7, 5125, true, dt);
    case_rms_norm(769, 64, true, dt);
    case_rms_norm(7 * 12, 128, false, dt);  // per-head view [T * heads, head_dim]

    case_silu_and_mul(0, 64, dt);
    case_silu_and_mul(1, 64, dt);
    case_silu_and_mul(7, 1000, dt);
    case_silu_and_mul(769, 80, dt);

    for (RopeLayout layout : {RopeLayout::kNeox, RopeLayout::kInterleaved}) {
      case_rope(1, 6, 6, 64, 64, layout, dt);
      case_rope(7, 12, 3, 128, 128, layout, dt);
      case_rope(7, 20, 5, 80, 32, layout, dt);  // partial rotary: dims 32..79 untouched
      case_rope(769, 6, 2, 64, 64, layout, dt);
      case_rope(33, 8, 2, 128, 128, layout, dt, 40960, 131072);  // long-context positions
    }

    case_kv_cache_write(1, 2, 64, 16, dt);
    case_kv_cache_write(7, 3, 80, 16, dt);
    case_kv_cache_write(769, 2, 128, 16, dt);

    // Prefill: GQA ratios 1, 4, 8; odd head_dim; prior context; zero new tokens; lengths
    // not multiples of the block size; shuffled blocks.
    case_attention_prefill({6, 6, 64, 16}, {7}, {0}, dt);
    case_attention_prefill({6, 6, 64, 16}, {1}, {0}, dt);
    case_attention_prefill({12, 3, 80, 16}, {1, 7, 20}, {0, 13, 40}, dt);
    case_attention_prefill({24, 3, 128, 16}, {5, 0, 9, 1}, {3, 17, 0, 33}, dt);
    case_attention_prefill({20, 5, 64, 8}, {0, 0}, {4, 9}, dt);
    case_attention_prefill({6, 2, 64, 16}, {500, 269}, {0, 37}, dt);
    // D 256: the only prefill configuration past 48 KB of shared memory (the opt-in).
    case_attention_prefill({8, 2, 256, 16}, {40, 7}, {0, 33}, dt);
    // 40 queries on 1000 cached tokens (a chunked prefill's later chunk).
    case_attention_prefill({8, 2, 128, 16}, {40}, {1000}, dt);
    // 64 sequences of one new token each over different contexts (decode through prefill).
    {
      std::vector<int32_t> ones(64, 1), ctx(64);
      for (int i = 0; i < 64; ++i) ctx[i] = (i * 37) % 101;
      case_attention_prefill({8, 2, 64, 16}, ones, ctx, dt);
    }

    // Decode: context 1 and contexts spanning several blocks.
    case_attention_decode({6, 6, 64, 16}, {1}, dt);
    case_attention_decode({12, 3, 80, 16}, {1, 17, 64, 100, 33}, dt);
    case_attention_decode({24, 3, 128, 16}, {48, 1, 7}, dt);
    case_attention_decode({20, 20, 64, 8}, {769}, dt);
    // A sequence with no context (zeros), one of 1, one past 4096 (many splits).
    case_attention_decode({8, 2, 64, 16}, {0, 1, 4097}, dt);
    // Groups of 16 query heads per KV head (two full chunks of 8 in the CUDA kernel), and
    // groups of 12 (a partial second chunk).
    case_attention_decode({32, 2, 128, 16}, {37, 300}, dt);
    case_attention_decode({24, 2, 128, 16}, {1, 129, 700}, dt);
    // D 256 (the kernels' largest head_dim), and a K cache view 2 elements into its buffer
    // (no 16-byte K loads possible).
    case_attention_decode({8, 2, 256, 16}, {5, 300}, dt);
    case_attention_decode({8, 2, 128, 16}, {33, 250}, dt, 0, 2);

    case_router_topk(1, 8, 2, true, false, dt);
    case_router_topk(7, 60, 4, false, false, dt);
    case_router_topk(769, 8, 2, true, false, dt);
    case_router_topk(769, 16, 8, false, true, dt);
    case_router_topk(7, 5, 5, true, true, dt);

    case_moe_permute(0, 2, 64, dt);
    case_moe_permute(7, 2, 80, dt);
    case_moe_permute(769, 8, 64, dt);
    case_moe_unpermute(0, 2, 64, dt);
    case_moe_unpermute(7, 2, 80, dt);
    case_moe_unpermute(769, 8, 64, dt);

    case_sample_greedy(7, 1000, dt);
    case_sample_greedy(3, 50257, dt);
    case_sample_degenerate(16, 1000, dt);
    case_sample_distribution(4000, 0.8f, 0, 1.f, dt);
    case_sample_distribution(4000, 1.f, 3, 1.f, dt);  // top-3 splits the 1.25 tie
    case_sample_distribution(4000, 1.2f, 8, 0.7f, dt);

    case_embedding(0, 100, 80, 0, dt);
    case_embedding(1, 100, 80, 0, dt);
    case_embedding(7, 100, 80, 50, dt);
    case_embedding(769, 1000, 64, 1000, dt);

    case_add({7, 5125}, dt);
    case_add({769, 64}, dt);
    case_add({0, 64}, dt);

    for (DType to : kFloatDtypes) case_convert(1000, dt, to);

    case_errors(dt);
  }

  // moe_assign (integer outputs, exact). Hand-worked expectations first.
  for (DropPolicy p : {DropPolicy::kOrder, DropPolicy::kPriorityMax, DropPolicy::kPrioritySum}) {
    // Capacity 0: everything dropped.
    case_moe_assign_hand("cap0", 3, 1, 2, {0, 1, 0}, {0.5f, 0.6f, 0.7f}, 0, p, {-1, -1, -1},
                         {0, 0, 0});
    // Capacity exactly filled, nothing dropped (equal weights: priority keeps token order).
    case_moe_assign_hand("cap_exact", 4, 1, 2, {0, 1, 0, 1}, {0.5f, 0.5f, 0.5f, 0.5f}, 2, p,
                         {0, 2, 1, 3}, {0, 2, 4});
    // Unlimited capacity; ids -1 and 2 belong to other ranks.
    case_moe_assign_hand("no_limit_foreign_ids", 3, 2, 2, {0, -1, 2, 1, 0, 0},
                         {0.6f, 0.4f, 0.7f, 0.3f, 0.5f, 0.5f}, -1, p, {0, -1, -1, 3, 1, 2},
                         {0, 3, 4});
    // GShard: every top-1 before any top-2. Token 0's second choice (expert 1) comes after
    // token 1's first choice (expert 1), so it is dropped even though token 0 is first.
    case_moe_assign_hand("top1_before_top2", 2, 2, 2, {0, 1, 1, 0}, {0.6f, 0.4f, 0.6f, 0.4f}, 1, p,
                         {0, -1, 1, -1}, {0, 1, 2});
  }
  // Priority vs order drop different tokens: one expert, capacity 1.
  const std::vector<int32_t> one_ids = {0, 0, 0};
  const std::vector<float> one_w = {0.2f, 0.9f, 0.5f};
  case_moe_assign_hand("prio_vs_order", 3, 1, 1, one_ids, one_w, 1, DropPolicy::kOrder, {0, -1, -1},
                       {0, 1});
  case_moe_assign_hand("prio_vs_order", 3, 1, 1, one_ids, one_w, 1, DropPolicy::kPriorityMax,
                       {-1, 0, -1}, {0, 1});
  // Max vs sum priority: token 0 [0.6, 0.05] wins on max, token 1 [0.5, 0.4] on sum.
  const std::vector<int32_t> ms_ids = {0, 1, 0, 2};
  const std::vector<float> ms_w = {0.6f, 0.05f, 0.5f, 0.4f};
  case_moe_assign_hand("max_vs_sum", 2, 2, 3, ms_ids, ms_w, 1, DropPolicy::kPriorityMax,
                       {0, 1, -1, 2}, {0, 1, 2, 3});
  case_moe_assign_hand("max_vs_sum", 2, 2, 3, ms_ids, ms_w, 1, DropPolicy::kPrioritySum,
                       {-1, 1, 0, 2}, {0, 1, 2, 3});
  case_moe_assign_hand("zero_tokens", 0, 2, 4, {}, {}, 5, DropPolicy::kPrioritySum, {},
                       {0, 0, 0, 0, 0});
  // Qwen3-30B-A3B routing of a 4096-token prefill (E 128, k 8), and E 512.
  for (DropPolicy p : {DropPolicy::kOrder, DropPolicy::kPriorityMax, DropPolicy::kPrioritySum}) {
    case_moe_assign_random(4096, 8, 128, 128, 320, p);  // ceil(1.25 * k * T / E)
    case_moe_assign_random(4096, 8, 128, 128, -1, p);
    case_moe_assign_random(4096, 8, 512, 512, 80, p);
  }
  // Decode attention as a graph step sees it: Llama-3-8B's heads (Hq 32 / Hk 8, D 128) over
  // one sequence of 1000 tokens in a table 2560 blocks wide (40960 positions), so the splits
  // are planned from the table width and most of them find no positions.
  case_attention_decode({32, 8, 128, 16}, {1000}, DType::kBF16, 2560);
  case_gemm_vocab(1, 151936, 2048, 1);
  case_sample_vocab(64, 151936, 0.7f, 50, 0.9f);

  for (DropPolicy p : {DropPolicy::kOrder, DropPolicy::kPriorityMax, DropPolicy::kPrioritySum}) {
    case_moe_assign_random(769, 2, 8, 8, 50, p);    // heavy dropping
    case_moe_assign_random(769, 2, 8, 8, 241, p);   // ceil(1.25 * k * T / E)
    case_moe_assign_random(769, 8, 64, 16, -1, p);  // dropless; 48 experts elsewhere
    case_moe_assign_random(7, 2, 16, 4, 1, p);      // some local experts get no tokens
  }
}

const std::vector<Case>& cases() {
  static const bool built = (build_cases(), true);
  (void)built;
  return registry();
}

// ============================== gtest plumbing ================================================

class BackendOps : public ::testing::TestWithParam<std::tuple<std::string, int>> {};

TEST_P(BackendOps, MatchesReference) {
  const auto& [kind, index] = GetParam();
  const Case& c = cases()[static_cast<size_t>(index)];
  BackendSlot& slot = backend_for(kind);
  if (!slot.backend) GTEST_SKIP() << slot.skip_reason << " (case " << c.name << ")";
  Backend& be = *slot.backend;
  if (!be.supports(c.op, c.dtype))
    GTEST_SKIP() << be.name() << " does not support " << op_name(c.op) << " for "
                 << dtype_name(c.dtype);
  SCOPED_TRACE(fmt::format("case {} on backend {}", c.name, be.name()));
  c.run(be);
}

std::string case_test_name(const ::testing::TestParamInfo<BackendOps::ParamType>& info) {
  std::string s = fmt::format("{}_{}_{}", std::get<0>(info.param),
                              cases()[std::get<1>(info.param)].name, std::get<1>(info.param));
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

INSTANTIATE_TEST_SUITE_P(All, BackendOps,
                         ::testing::Combine(::testing::Values(std::string("cpu"),
                                                              std::string("cuda")),
                                            ::testing::Range(0, static_cast<int>(cases().size()))),
                         case_test_name);

// ---- graphs: a capture records the ops; replays read whatever the buffers hold by then -----

// Writes host values into an existing device buffer (what a runner does before a replay).
void rewrite(Backend& be, const Tensor& host, Tensor& dev) {
  Status st = be.copy(host, dev);
  ASSERT_TRUE(st.ok()) << st.to_string();
}

class BackendGraphs : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

// One graph: y = grouped_gemm(x, w, offsets) then z = rms_norm(y) (two ops, so order
// matters), captured before any input holds data. Three replays with new x and new offsets
// (an empty expert, offsets[E] < R, then every row in one expert) must each match the
// reference for that replay's inputs, and leave rows past offsets[E] as they were. On CUDA
// this is the device-offset grouped GEMM; eagerly, grouped_gemm reads offsets on the host.
TEST_P(BackendGraphs, ReplaysReadTheCurrentInputs) {
  const auto& [kind, dt] = GetParam();
  BackendSlot& slot = backend_for(kind);
  if (!slot.backend) GTEST_SKIP() << slot.skip_reason;
  Backend& be = *slot.backend;
  if (!be.supports_graphs()) GTEST_SKIP() << be.name() << " has no graphs";
  const int64_t E = 4, R = 13, N = 24, K = 40;
  const float eps = 1e-6f;
  Rng rng(seed_of(fmt::format("graphs/{}", short_dtype(dt))));
  F64 w, norm_w;
  Tensor dw = upload(be, host_floats(rand_floats(rng, E * N * K), {E, N, K}, dt, &w));
  Tensor dnw = upload(be, host_floats(rand_floats(rng, N, 0.5f, 1.5f), {N}, dt, &norm_w));
  Tensor dx = poisoned(be, {R, K}, dt), doffs = poisoned(be, {E + 1}, DType::kI32);
  Tensor dy = poisoned(be, {R, N}, dt), dz = poisoned(be, {R, N}, dt);
  const int64_t key = 7001;
  SW_ASSERT_OK(be.begin_graph_capture());
  Status st = be.grouped_gemm(dx, dw, doffs, dy);
  if (st.ok()) st = be.rms_norm(dy, dnw, eps, dz);
  const Status ended = be.end_graph_capture(key);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_TRUE(ended.ok()) << ended.to_string();
  ASSERT_TRUE(be.has_graph(key));

  const std::vector<std::vector<int32_t>> offsets = {
      {0, 3, 3, 8, 10}, {0, 1, 5, 6, 13}, {0, 0, 0, 0, 13}};
  for (size_t rep = 0; rep < offsets.size(); ++rep) {
    SCOPED_TRACE(fmt::format("replay {} on {}", rep, be.name()));
    const std::vector<int32_t>& offs = offsets[rep];
    F64 x;
    Tensor hx = host_floats(rand_floats(rng, R * K), {R, K}, dt, &x);
    rewrite(be, hx, dx);
    rewrite(be, Tensor::from_ints(offs, {E + 1}), doffs);
    rewrite(be, poison_host({R, N}, dt), dy);
    rewrite(be, poison_host({R, N}, dt), dz);
    SW_ASSERT_OK(be.replay_graph(key));
    const int64_t used = offs[E];
    F64 want_y(static_cast<size_t>(used * N)), want_z(want_y.size());
    for (int64_t ex = 0; ex < E; ++ex)
      for (int64_t r = offs[ex]; r < offs[ex + 1]; ++r)
        for (int64_t j = 0; j < N; ++j) {
          double acc = 0;
          for (int64_t p = 0; p < K; ++p) acc += x[r * K + p] * w[(ex * N + j) * K + p];
          want_y[r * N + j] = round_to(dt, acc);  // z reads y as stored
        }
    for (int64_t r = 0; r < used; ++r) {
      double ss = 0;
      for (int64_t j = 0; j < N; ++j) ss += want_y[r * N + j] * want_y[r * N + j];
      const double inv = 1.0 / std::sqrt(ss / static_cast<double>(N) + eps);
      for (int64_t j = 0; j < N; ++j) want_z[r * N + j] = want_y[r * N + j] * inv * norm_w[j];
    }
    Tensor y = download(be, dy), z = download(be, dz);
    expect_nmse(y.rows(0, used), want_y, tol_for(dt, 1e-10), "grouped_gemm rows < offsets[E]");
    expect_nmse(z.rows(0, used), want_z, tol_for(dt), "rms_norm of them");
    if (used < R)
      expect_bits_equal(y.rows(used, R), poison_host({R - used, N}, dt),
                        "rows past offsets[E] must be untouched");
  }
  be.clear_graphs();
  EXPECT_FALSE(be.has_graph(key));
}

// What cannot be recorded says so at capture time, and the capture can still be ended.
TEST_P(BackendGraphs, SamplingIsRefusedWhileCapturing) {
  const auto& [kind, dt] = GetParam();
  BackendSlot& slot = backend_for(kind);
  if (!slot.backend) GTEST_SKIP() << slot.skip_reason;
  Backend& be = *slot.backend;
  if (!be.supports_graphs()) GTEST_SKIP() << be.name() << " has no graphs";
  Tensor logits = poisoned(be, {2, 10}, DType::kF32), out = poisoned(be, {2}, DType::kI32);
  SW_ASSERT_OK(be.begin_graph_capture());
  const Status sampled = be.sample(logits, {SamplingRow{}, SamplingRow{}}, out);
  SW_ASSERT_OK(be.end_graph_capture(7002));
  EXPECT_EQ(sampled.code(), StatusCode::kUnimplemented) << sampled.to_string();
  EXPECT_NE(sampled.message().find("graph"), std::string::npos) << sampled.message();
  be.clear_graphs();
}

TEST_P(BackendGraphs, SynchronizeIsRefusedWhileCapturing) {
  const auto& [kind, dt] = GetParam();
  BackendSlot& slot = backend_for(kind);
  if (!slot.backend) GTEST_SKIP() << slot.skip_reason;
  Backend& be = *slot.backend;
  if (!be.supports_graphs()) GTEST_SKIP() << be.name() << " has no graphs";
  Tensor x = poisoned(be, {4, 8}, dt);
  SW_ASSERT_OK(be.begin_graph_capture());
  const Status synced = be.synchronize();
  const Status added = be.add(x, x);  // the capture is still usable after the refusal
  SW_ASSERT_OK(be.end_graph_capture(7003));
  EXPECT_EQ(synced.code(), StatusCode::kInvalidArgument) << synced.to_string();
  EXPECT_NE(synced.message().find("captur"), std::string::npos) << synced.message();
  EXPECT_TRUE(added.ok()) << added.to_string();
  SW_ASSERT_OK(be.synchronize());  // and allowed again once the capture has ended
  be.clear_graphs();
}

// The device-offset grouped GEMM at MoE shapes, captured once and replayed with new offsets:
// Qwen3-30B-A3B's gate/up (N 1536, K 2048: the 16-byte main loop), K 2050 (rows not 16-byte
// aligned: the scalar loads and the tail), and 128 experts with 0-20 rows each (N 40: a
// partial second column tile).
struct CapturedGroupedShape {
  int64_t e, n, k;
  std::vector<std::vector<int32_t>> offsets;  // one expert-offset table per replay
};

std::vector<int32_t> random_offsets(Rng& rng, int64_t e, int max_rows) {
  std::uniform_int_distribution<int> rows(0, max_rows);
  std::vector<int32_t> offs(static_cast<size_t>(e + 1), 0);
  for (int64_t i = 0; i < e; ++i) offs[i + 1] = offs[i] + rows(rng);
  return offs;
}

TEST_P(BackendGraphs, GroupedGemmAtMoeShapesReplays) {
  const auto& [kind, dt] = GetParam();
  BackendSlot& slot = backend_for(kind);
  if (!slot.backend) GTEST_SKIP() << slot.skip_reason;
  Backend& be = *slot.backend;
  if (!be.supports_graphs()) GTEST_SKIP() << be.name() << " has no graphs";
  Rng rng(seed_of(fmt::format("graphs-moe/{}", short_dtype(dt))));
  std::vector<CapturedGroupedShape> shapes = {
      {4, 1536, 2048, {{0, 3, 3, 8, 10}, {0, 1, 5, 6, 13}}},
      {4, 96, 2050, {{0, 2, 9, 9, 13}, {0, 0, 0, 0, 13}}},
      {128, 40, 2048, {random_offsets(rng, 128, 20), random_offsets(rng, 128, 20)}},
  };
  for (auto& o : shapes[2].offsets)  // a few experts with no rows for certain
    for (int64_t i = 0; i < 128; i += 9) {
      const int32_t rows_i = o[i + 1] - o[i];
      for (int64_t j = i + 1; j <= 128; ++j) o[j] -= rows_i;
    }
  for (const CapturedGroupedShape& sh : shapes) {
    SCOPED_TRACE(fmt::format("E{} N{} K{} on {}", sh.e, sh.n, sh.k, be.name()));
    int64_t r = 0;
    for (const auto& o : sh.offsets) r = std::max<int64_t>(r, o.back() + 2);
    F64 w;
    Tensor dw =
        upload(be, host_floats(rand_floats(rng, sh.e * sh.n * sh.k), {sh.e, sh.n, sh.k}, dt, &w));
    Tensor dx = poisoned(be, {r, sh.k}, dt), doffs = poisoned(be, {sh.e + 1}, DType::kI32);
    Tensor dy = poisoned(be, {r, sh.n}, dt);
    const int64_t key = 7100 + sh.k;
    SW_ASSERT_OK(be.begin_graph_capture());
    const Status st = be.grouped_gemm(dx, dw, doffs, dy);
    SW_ASSERT_OK(be.end_graph_capture(key));
    ASSERT_TRUE(st.ok()) << st.to_string();
    for (const auto& offs : sh.offsets) {
      F64 x;
      rewrite(be, host_floats(rand_floats(rng, r * sh.k), {r, sh.k}, dt, &x), dx);
      rewrite(be, Tensor::from_ints(offs, {sh.e + 1}), doffs);
      rewrite(be, poison_host({r, sh.n}, dt), dy);
      SW_ASSERT_OK(be.replay_graph(key));
      const int64_t used = offs[sh.e];
      F64 want(static_cast<size_t>(used * sh.n));
      for (int64_t ex = 0; ex < sh.e; ++ex)
        for (int64_t row = offs[ex]; row < offs[ex + 1]; ++row)
          for (int64_t j = 0; j < sh.n; ++j) {
            double acc = 0;
            const double* xr = &x[row * sh.k];
            const double* wr = &w[(ex * sh.n + j) * sh.k];
            for (int64_t p = 0; p < sh.k; ++p) acc += xr[p] * wr[p];
            want[row * sh.n + j] = acc;
          }
      Tensor y = download(be, dy);
      expect_nmse(y.rows(0, used), want, tol_for(dt, 1e-10), "rows < offsets[E]");
      expect_bits_equal(y.rows(used, r), poison_host({r - used, sh.n}, dt),
                        "rows past offsets[E] must be untouched");
    }
    be.clear_graphs();
  }
}

INSTANTIATE_TEST_SUITE_P(All, BackendGraphs,
                         ::testing::Combine(::testing::Values(std::string("cpu-graphs"),
                                                              std::string("cuda")),
                                            ::testing::Values(DType::kF32, DType::kBF16)),
                         [](const ::testing::TestParamInfo<BackendGraphs::ParamType>& info) {
                           return fmt::format("{}_{}",
                                              std::get<0>(info.param) == "cuda" ? "cuda" : "cpu",
                                              short_dtype(std::get<1>(info.param)));
                         });

#if SHARDWISE_TEST_CUDA
// The caching allocator out of device memory: outside a capture it gives its cached blocks
// back and retries; while a graph is being captured it must fail at once and keep them
// (cudaFree would invalidate the capture). Runs the allocator alone on device 0.
TEST(CudaAllocator, OutOfMemoryWhileCapturingKeepsTheCache) {
  if (cuda_device_count() <= 0) GTEST_SKIP() << "no CUDA device: cuda_device_count() == 0";
  cuda::CachingDeviceAllocator a;
  {
    auto block = a.allocate(size_t{4} << 20);
    ASSERT_TRUE(block.ok()) << block.status().to_string();
  }  // back in the cache
  const int64_t cached = a.stats().reserved_bytes;
  ASSERT_GE(cached, int64_t{4} << 20);
  const size_t too_big = size_t{1} << 50;  // 1 PiB: no device has it
  a.begin_capture();
  auto during = a.allocate(too_big);
  (void)a.end_capture();
  ASSERT_FALSE(during.ok());
  EXPECT_EQ(during.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(during.status().message().find("captured"), std::string::npos)
      << during.status().message();
  EXPECT_EQ(a.stats().reserved_bytes, cached) << "cached blocks were freed while capturing";
  auto after = a.allocate(too_big);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(a.stats().reserved_bytes, 0) << "outside a capture the cache is released first";
}
#endif

// The case table itself covers every op in kernels::Op, so a new op cannot go untested.
TEST(BackendOpsTable, CoversEveryOp) {
  std::set<Op> seen;
  for (const Case& c : cases()) seen.insert(c.op);
  for (int op = 0; op <= static_cast<int>(Op::kConvert); ++op)
    EXPECT_TRUE(seen.count(static_cast<Op>(op))) << "no case for " << op_name(static_cast<Op>(op));
}

}  // namespace
}  // namespace sw::kernels

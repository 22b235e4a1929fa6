// CPU GEMM and grouped (per-expert) GEMM through OpenBLAS cblas_sgemm. bfloat16/float16
// operands are widened to float32 scratch first and the result rounded once on store.
#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/cpu_ops.h"

namespace sw::kernels::cpu {
namespace {

// c[m, n] = a[m, k] @ b[n, k]^T + beta * c, all row-major float32.
void sgemm_nt(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float beta,
              float* c) {
  if (m == 0 || n == 0) return;
  // BLAS may skip reading C when beta == 0 or k == 0; zero it so stale NaNs never survive.
  if (beta == 0.f) std::fill(c, c + m * n, 0.f);
  if (k == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a,
              static_cast<blasint>(std::max<int64_t>(k, 1)), b,
              static_cast<blasint>(std::max<int64_t>(k, 1)), beta, c, static_cast<blasint>(n));
}

}  // namespace

Status gemm(const Tensor& x, const Tensor& w, Tensor& out, const Tensor* bias, bool accumulate) {
  SW_RETURN_IF_ERROR(validate_gemm(Device::kCpu, x, w, out, bias));
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  if (m == 0 || n == 0) return Status::ok_status();

  const bool f32 = x.dtype() == DType::kF32;
  std::vector<float> xs, ws, cs;
  const float* a = f32 ? x.data_as<float>() : (xs = to_f32(x)).data();
  const float* b = f32 ? w.data_as<float>() : (ws = to_f32(w)).data();
  float* c = f32 ? out.data_as<float>() : nullptr;
  if (!f32) {
    cs.resize(static_cast<size_t>(m * n));
    c = cs.data();
    if (accumulate) load_row(out.data(), out.dtype(), 0, m * n, c);
  }
  float beta = accumulate ? 1.f : 0.f;
  if (bias) {
    std::vector<float> bv = to_f32(*bias);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) c[r * n + j] = (accumulate ? c[r * n + j] : 0.f) + bv[j];
    beta = 1.f;
  }
  sgemm_nt(m, n, k, a, b, beta, c);
  if (!f32) store_row(out.data(), out.dtype(), 0, m * n, c);
  return Status::ok_status();
}

Status grouped_gemm(const Tensor& x, const Tensor& w, const Tensor& expert_offsets, Tensor& out) {
  SW_RETURN_IF_ERROR(validate_grouped_gemm(Device::kCpu, x, w, expert_offsets, out));
  const int64_t k = x.dim(1), e = w.dim(0), n = w.dim(1);
  const int32_t* offs = expert_offsets.data_as<int32_t>();
  SW_RETURN_IF_ERROR(validate_expert_offsets(offs, e, x));

  const bool f32 = x.dtype() == DType::kF32;
  std::vector<float> xs, ws, cs;
  const float* a = f32 ? x.data_as<float>() : (xs = to_f32(x.rows(0, offs[e]))).data();
  for (int64_t ex = 0; ex < e; ++ex) {
    const int64_t row0 = offs[ex], rows = offs[ex + 1] - offs[ex];
    if (rows == 0) continue;
    const float* b;
    if (f32) {
      b = w.data_as<float>() + ex * n * k;
    } else {
      ws.resize(static_cast<size_t>(n * k));
      load_row(w.data(), w.dtype(), ex * n * k, n * k, ws.data());
      b = ws.data();
    }
    if (f32) {
      sgemm_nt(rows, n, k, a + row0 * k, b, 0.f, out.data_as<float>() + row0 * n);
    } else {
      cs.resize(static_cast<size_t>(rows * n));
      sgemm_nt(rows, n, k, a + row0 * k, b, 0.f, cs.data());
      store_row(out.data(), out.dtype(), row0 * n, rows * n, cs.data());
    }
  }
  return Status::ok_status();
}

}  // namespace sw::kernels::cpu

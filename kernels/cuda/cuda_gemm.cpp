// GemmRunner (see cuda_gemm.h). Row-major out = x @ w^T is column-major out^T = w^T-view @ x:
// A = w stored [K x N] col-major (ld K) with op T, B = x stored [K x M] (ld K), C = D =
// out [N x M] (ld N); the BIAS epilogue adds a length-N vector to every column of D (only for a
// 16-byte aligned bias; otherwise the bias kernel adds it after the GEMM).
#include "kernels/cuda/cuda_gemm.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm_epilogue.cuh"

namespace sw::kernels::cuda {
namespace {

cudaDataType_t data_type(ElemType t) {
  switch (t) {
    case ElemType::kF32: return CUDA_R_32F;
    case ElemType::kBF16: return CUDA_R_16BF;
    case ElemType::kF16: return CUDA_R_16F;
  }
  return CUDA_R_32F;
}

int alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && (a % static_cast<uintptr_t>(align)) != 0) align /= 2;
  return align;
}

}  // namespace

GemmRunner::~GemmRunner() {
  for (auto& [key, plan] : plans_) {
    if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
    if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
    if (plan.c) cublasLtMatrixLayoutDestroy(plan.c);
    if (plan.op) cublasLtMatmulDescDestroy(plan.op);
  }
  if (lt_) cublasLtDestroy(lt_);
  if (blas_) cublasDestroy(blas_);
}

Status GemmRunner::init(cudaStream_t stream, void* workspace, size_t workspace_bytes) {
  stream_ = stream;
  workspace_ = workspace;
  workspace_bytes_ = workspace_bytes;
  SW_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&lt_));
  SW_CUBLAS_RETURN_IF_ERROR(cublasCreate(&blas_));
  SW_CUBLAS_RETURN_IF_ERROR(cublasSetStream(blas_, stream_));
  SW_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));  // no TF32
  SW_CUBLAS_RETURN_IF_ERROR(cublasSetWorkspace(blas_, workspace_, workspace_bytes_));
  return Status::ok_status();
}

Result<GemmRunner::Plan*> GemmRunner::plan_for(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return &it->second;
  // Prefill token counts vary without bound: keep the cache from growing forever (plans are
  // cheap to rebuild; nothing refers to them between calls).
  if (plans_.size() >= 4096) {
    for (auto& [k, old] : plans_) {
      cublasLtMatrixLayoutDestroy(old.a);
      cublasLtMatrixLayoutDestroy(old.b);
      cublasLtMatrixLayoutDestroy(old.c);
      cublasLtMatmulDescDestroy(old.op);
    }
    plans_.clear();
  }
  const auto [m, n, k, type_int, bias, accumulate, al_x, al_w, al_out, al_bias] = key;
  (void)accumulate;
  (void)al_bias;  // part of the key only: a plan is reused for one bias alignment
  const cudaDataType_t t = data_type(static_cast<ElemType>(type_int));
  Plan plan;
  SW_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  SW_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)));
  SW_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    SW_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    SW_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
        plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof(t)));
  }
  SW_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.a, t, static_cast<uint64_t>(k),
                                                       static_cast<uint64_t>(n), k));
  SW_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.b, t, static_cast<uint64_t>(k),
                                                       static_cast<uint64_t>(m), k));
  SW_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan.c, t, static_cast<uint64_t>(n),
                                                       static_cast<uint64_t>(m), n));
  cublasLtMatmulPreference_t pref = nullptr;
  SW_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  const uint32_t aa = static_cast<uint32_t>(al_w), ab = static_cast<uint32_t>(al_x),
                 ac = static_cast<uint32_t>(al_out);
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa,
                                              sizeof(aa));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab,
                                              sizeof(ab));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac,
                                              sizeof(ac));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac,
                                              sizeof(ac));
  if (st == CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulHeuristicResult_t result{};
    int count = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(lt_, plan.op, plan.a, plan.b, plan.c,
                                                             plan.c, pref, 1, &result, &count);
    // No algorithm is not an error: run() falls back to cublasGemmEx for this shape.
    if (hs == CUBLAS_STATUS_SUCCESS && count > 0) {
      plan.algo = result.algo;
      plan.has_algo = true;
    }
  }
  cublasLtMatmulPreferenceDestroy(pref);
  SW_CUBLAS_RETURN_IF_ERROR(st);
  return &plans_.emplace(key, plan).first->second;
}

Status GemmRunner::run(const void* x, const void* w, void* out, const void* bias, bool accumulate,
                       int64_t m, int64_t n, int64_t k, ElemType type) {
  if (m == 0 || n == 0) return Status::ok_status();
  if (!lt_) return internal_error("GemmRunner::run before init");
  const size_t es = elem_size(type);
  if (k == 0) {  // no products: out = (accumulate ? out : 0) + bias
    if (!accumulate)
      SW_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, static_cast<size_t>(m * n) * es, stream_));
  } else {
    // The heuristic has no preference for the bias pointer's alignment, and the BIAS epilogue
    // can refuse a bias view that is not 16-byte aligned at run time; such a bias is added by
    // the epilogue kernel after a plain cuBLASLt GEMM instead.
    const bool epilogue_bias = bias != nullptr && alignment_of(bias) >= kLtBiasAlignment;
    const Key key{m,
                  n,
                  k,
                  static_cast<int>(type),
                  epilogue_bias,
                  accumulate,
                  alignment_of(x),
                  alignment_of(w),
                  alignment_of(out),
                  epilogue_bias ? alignment_of(bias) : 0};
    SW_ASSIGN_OR_RETURN(Plan * plan, plan_for(key));
    const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
    if (plan->has_algo) {
      if (epilogue_bias)
        SW_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(
            plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
      SW_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(lt_, plan->op, &alpha, w, plan->a, x, plan->b, &beta,
                                               out, plan->c, out, plan->c, &plan->algo, workspace_,
                                               workspace_bytes_, stream_));
      ++lt_calls_;
      if (bias == nullptr || epilogue_bias) return Status::ok_status();
    } else {
      const cudaDataType_t t = data_type(type);
      SW_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(
          blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
          static_cast<int>(k), &alpha, w, t, static_cast<int>(k), x, t, static_cast<int>(k), &beta,
          out, t, static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      ++fallback_calls_;
    }
  }
  if (bias) {
    ++bias_kernel_calls_;
    BiasAddParams bp;
    bp.out = out;
    bp.out_type = type;
    bp.bias = bias;
    bp.bias_type = type;
    bp.rows = m;
    bp.cols = n;
    SW_CUDA_RETURN_IF_ERROR(launch_bias_add(bp, stream_));
  }
  return Status::ok_status();
}

}  // namespace sw::kernels::cuda

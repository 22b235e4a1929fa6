// Op names and the backend factories that do not depend on CUDA being built.
#include "kernels/backend.h"

namespace sw::kernels {

const char* op_name(Op op) {
  switch (op) {
    case Op::kGemm: return "gemm";
    case Op::kGroupedGemm: return "grouped_gemm";
    case Op::kRmsNorm: return "rms_norm";
    case Op::kRope: return "rope";
    case Op::kKvCacheWrite: return "kv_cache_write";
    case Op::kAttentionPrefill: return "attention_prefill";
    case Op::kAttentionDecode: return "attention_decode";
    case Op::kSiluAndMul: return "silu_and_mul";
    case Op::kRouterTopk: return "router_topk";
    case Op::kMoeAssign: return "moe_assign";
    case Op::kMoePermute: return "moe_permute";
    case Op::kMoeUnpermute: return "moe_unpermute";
    case Op::kSample: return "sample";
    case Op::kEmbedding: return "embedding";
    case Op::kAdd: return "add";
    case Op::kConvert: return "convert";
  }
  return "unknown";
}

}  // namespace sw::kernels

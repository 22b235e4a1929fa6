// Expert capacity: how many assignments one expert accepts from one source rank's tokens.
// Extend: a new sizing rule (e.g. a minimum capacity) is another function here, not a flag.
#pragma once

#include <cstdint>
#include <optional>

namespace sw::moe {

// Slots per expert per source rank for a layer with `num_experts` experts, `top_k` choices
// per token and `num_local_tokens` tokens on this (source) rank:
//   capacity = ceil(capacity_factor * top_k * num_local_tokens / num_experts)
// C = 1 gives every expert exactly its share of a perfectly balanced load; C < 1 forces
// drops, C > 1 leaves headroom. std::nullopt means dropless and returns -1 (the value
// kernels::Backend::moe_assign and MoeOptions::capacity read as "no limit").
// Requires capacity_factor > 0 (when given), top_k >= 1, num_local_tokens >= 0 and
// num_experts >= 1; aborts otherwise (callers validate configuration first). The product is
// computed in double and guarded against rounding noise (C * k * T / E = 2.0000000001 -> 2).
int64_t expert_capacity(std::optional<double> capacity_factor, int top_k, int64_t num_local_tokens,
                        int num_experts);

}  // namespace sw::moe

// expert_capacity: ceil(C * k * T_local / E), or -1 for dropless.
#include "moe/capacity.h"

#include <algorithm>
#include <cmath>

#include "common/status.h"

namespace sw::moe {

int64_t expert_capacity(std::optional<double> capacity_factor, int top_k, int64_t num_local_tokens,
                        int num_experts) {
  if (!capacity_factor) return -1;
  SW_CHECK(*capacity_factor > 0 && std::isfinite(*capacity_factor));
  SW_CHECK(top_k >= 1 && num_local_tokens >= 0 && num_experts >= 1);
  const double exact = *capacity_factor * static_cast<double>(top_k) *
                       static_cast<double>(num_local_tokens) / static_cast<double>(num_experts);
  // 0.1 * 2 * 10 / 2 is 1.0000000000000002 in double: snap values within 1e-9 (relative) of
  // an integer to it before taking the ceiling, so decimal factors give the obvious answer.
  const double nearest = std::round(exact);
  if (std::abs(exact - nearest) <= 1e-9 * std::max(1.0, nearest))
    return static_cast<int64_t>(nearest);
  return static_cast<int64_t>(std::ceil(exact));
}

}  // namespace sw::moe

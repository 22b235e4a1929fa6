// Load-based instance choice with round-robin ties.
#include "coordinator/instance_router.h"

namespace sw::coordinator {

namespace {

// -1: a is less loaded than b, 1: more, 0: equal.
int compare(const InstanceLoad& a, const InstanceLoad& b) {
  if (a.queued_tokens != b.queued_tokens) return a.queued_tokens < b.queued_tokens ? -1 : 1;
  if (a.running != b.running) return a.running < b.running ? -1 : 1;
  // Larger free share first: a.free / a.total vs b.free / b.total without rounding.
  const __int128 lhs = static_cast<__int128>(a.free_blocks) * b.total_blocks;
  const __int128 rhs = static_cast<__int128>(b.free_blocks) * a.total_blocks;
  if (lhs != rhs) return lhs > rhs ? -1 : 1;
  return 0;
}

}  // namespace

int InstanceRouter::choose(const std::vector<InstanceLoad>& loads) {
  const int n = static_cast<int>(loads.size());
  int best = -1;
  // Visit in round-robin order from the one after the previous choice: the first of equals wins.
  for (int k = 1; k <= n; ++k) {
    const int i = (last_ + k) % n;
    if (!loads[i].accepts) continue;
    if (best < 0 || compare(loads[i], loads[best]) < 0) best = i;
  }
  if (best >= 0) last_ = best;
  return best;
}

}  // namespace sw::coordinator

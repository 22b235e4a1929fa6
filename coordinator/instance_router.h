// InstanceRouter: which instance of a pool takes a new request. Load-based, so replicas fill
// evenly and a busy or KV-starved instance is passed over; ties go round robin. Add a policy
// (e.g. prefix-cache affinity): another choose() rule, selected by config.
#pragma once

#include <cstdint>
#include <vector>

namespace sw::coordinator {

struct InstanceLoad {
  bool accepts = true;        // alive, of the right role, and the request fits its KV pool
  int64_t queued_tokens = 0;  // prompt tokens of requests waiting for admission there
  int64_t running = 0;        // sequences admitted there
  int64_t free_blocks = 0;    // KV blocks free (over its dp groups)
  int64_t total_blocks = 1;
};

class InstanceRouter {
 public:
  // The least loaded instance that accepts: fewest queued tokens, then fewest running
  // sequences, then the largest share of free KV blocks; among equals, round robin from the
  // one after the previous choice. -1 when none accepts.
  int choose(const std::vector<InstanceLoad>& loads);

 private:
  int last_ = -1;
};

}  // namespace sw::coordinator

// KvBlockManager: the one place that decides KV blocks — a KvBlockPool per (instance, dp
// group) of the engine. The scheduler allocates a step's blocks here and ships the resulting
// block tables to the workers, which only execute them (vLLM's KV cache manager, owned by the
// scheduler). Add a kind of allocation (e.g. a transfer's destination blocks): a method here
// that keeps every pool's invariants.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "coordinator/kv_block_pool.h"
#include "worker/step_metadata.h"

namespace sw::coordinator {

class KvBlockManager {
 public:
  // Adds an instance of `num_groups` dp groups, each with its own pool; returns its index.
  int add_instance(int num_groups, int64_t num_blocks, int block_size);

  int num_instances() const { return static_cast<int>(pools_.size()); }
  int num_groups(int instance) const { return static_cast<int>(pools_.at(instance).size()); }
  KvBlockPool& pool(int instance, int group) { return pools_.at(instance).at(group); }
  const KvBlockPool& pool(int instance, int group) const { return pools_.at(instance).at(group); }
  int64_t num_blocks(int instance) const { return pools_.at(instance).at(0).num_blocks(); }
  int block_size(int instance) const { return pools_.at(instance).at(0).block_size(); }
  int64_t num_free_blocks(int instance) const;  // summed over the instance's groups

  // Grows sequence `seq_id` of a group by `num_tokens` (adding the sequence on first use) and
  // describes that chunk for the workers: start position, block table, copy-on-write copies
  // (appended to `copies`). Nothing changes when the pool is short of blocks.
  Result<worker::StepSequence> append(int instance, int group, int64_t seq_id,
                                      const std::vector<int32_t>& new_tokens,
                                      std::vector<worker::BlockCopy>* copies);
  Status free(int instance, int group, int64_t seq_id);
  // Frees every sequence of an instance (it is gone).
  void release_instance(int instance);

  // No sequence anywhere and every block free.
  bool all_free() const;
  Status check_invariants() const;

 private:
  std::vector<std::vector<KvBlockPool>> pools_;  // [instance][dp group]
};

}  // namespace sw::coordinator

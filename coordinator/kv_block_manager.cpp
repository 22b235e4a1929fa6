// Block decisions for every instance and dp group.
#include "coordinator/kv_block_manager.h"

#include <fmt/format.h>

namespace sw::coordinator {

int KvBlockManager::add_instance(int num_groups, int64_t num_blocks, int block_size) {
  SW_CHECK_MSG(num_groups >= 1, "KvBlockManager: {} dp groups", num_groups);
  std::vector<KvBlockPool> groups;
  for (int g = 0; g < num_groups; ++g) groups.emplace_back(num_blocks, block_size);
  pools_.push_back(std::move(groups));
  return static_cast<int>(pools_.size()) - 1;
}

int64_t KvBlockManager::num_free_blocks(int instance) const {
  int64_t n = 0;
  for (const KvBlockPool& p : pools_.at(instance)) n += p.num_free_blocks();
  return n;
}

Result<worker::StepSequence> KvBlockManager::append(int instance, int group, int64_t seq_id,
                                                    const std::vector<int32_t>& new_tokens,
                                                    std::vector<worker::BlockCopy>* copies) {
  KvBlockPool& p = pool(instance, group);
  const bool added = !p.has_sequence(seq_id);
  if (added) SW_RETURN_IF_ERROR(p.add_sequence(seq_id));
  worker::StepSequence s;
  s.seq_id = seq_id;
  s.start_pos = p.num_tokens(seq_id);
  Status st = p.append(seq_id, static_cast<int64_t>(new_tokens.size()), copies);
  if (!st.ok()) {
    if (added) (void)p.free_sequence(seq_id);
    return st.with_context(fmt::format("instance {} dp group {}", instance, group));
  }
  s.tokens = new_tokens;
  s.block_table = p.block_table(seq_id);
  return s;
}

Status KvBlockManager::free(int instance, int group, int64_t seq_id) {
  return pool(instance, group).free_sequence(seq_id);
}

void KvBlockManager::release_instance(int instance) {
  for (KvBlockPool& p : pools_.at(instance)) p = KvBlockPool(p.num_blocks(), p.block_size());
}

bool KvBlockManager::all_free() const {
  for (const auto& groups : pools_)
    for (const KvBlockPool& p : groups)
      if (p.num_sequences() != 0 || p.num_free_blocks() != p.num_blocks()) return false;
  return true;
}

Status KvBlockManager::check_invariants() const {
  for (size_t i = 0; i < pools_.size(); ++i)
    for (size_t g = 0; g < pools_[i].size(); ++g) {
      Status st = pools_[i][g].check_invariants();
      if (!st.ok()) return st.with_context(fmt::format("instance {} dp group {}", i, g));
    }
  return Status();
}

}  // namespace sw::coordinator

// KvBlockPool: bookkeeping for the paged KV cache — fixed-size blocks, a free list, per-
// sequence block tables and reference counts (forked sequences share blocks; appending into
// a shared, partly filled block copies it first). It owns no cache memory: the runner keeps
// the [num_blocks, block_size, kv_heads, head_dim] tensors and applies the copies it returns.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "worker/step_metadata.h"

namespace sw::coordinator {

using worker::BlockCopy;

class KvBlockPool {
 public:
  KvBlockPool(int64_t num_blocks, int block_size);

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  bool has_sequence(int64_t seq_id) const { return seqs_.count(seq_id) != 0; }
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }
  // Blocks needed for `num_tokens` more tokens of a sequence (0 for an unknown one = new).
  int64_t blocks_needed(int64_t seq_id, int64_t num_tokens) const;
  // Blocks a new sequence of `num_tokens` tokens takes.
  int64_t blocks_for(int64_t num_tokens) const {
    return (num_tokens + block_size_ - 1) / block_size_;
  }

  Status add_sequence(int64_t seq_id);
  // Grows the sequence to hold `num_tokens` more tokens. On failure nothing changes and the
  // error says how many blocks were needed and how many are free. Appending into a shared
  // last block copies it: the copy is appended to `copies` for the caller to perform.
  Status append(int64_t seq_id, int64_t num_tokens, std::vector<BlockCopy>* copies);
  // `dst` shares all of `src`'s blocks (reference counts go up).
  Status fork(int64_t src, int64_t dst);
  Status free_sequence(int64_t seq_id);

  int64_t num_tokens(int64_t seq_id) const;
  const std::vector<int32_t>& block_table(int64_t seq_id) const;
  // Slot (block * block_size + offset) of token position `pos` of a sequence.
  int64_t slot(int64_t seq_id, int64_t pos) const;

  // Every block is free xor referenced; reference counts equal the number of tables holding
  // the block; tables cover exactly their token counts; the free list has no duplicates.
  Status check_invariants() const;

 private:
  struct Seq {
    std::vector<int32_t> blocks;
    int64_t num_tokens = 0;
  };
  int32_t take_free_block();
  int block_size_;
  std::vector<int32_t> ref_counts_;
  std::vector<int32_t> free_;  // stack: last freed is reused first
  std::map<int64_t, Seq> seqs_;
};

}  // namespace sw::coordinator

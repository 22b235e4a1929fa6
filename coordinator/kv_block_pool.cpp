// KV block bookkeeping.
#include "coordinator/kv_block_pool.h"

#include <algorithm>

namespace sw::coordinator {

KvBlockPool::KvBlockPool(int64_t num_blocks, int block_size)
    : block_size_(block_size), ref_counts_(static_cast<size_t>(num_blocks), 0) {
  SW_CHECK_MSG(num_blocks >= 0 && block_size > 0, "KvBlockPool({}, {})", num_blocks, block_size);
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

int64_t KvBlockPool::blocks_needed(int64_t seq_id, int64_t num_tokens) const {
  auto it = seqs_.find(seq_id);
  int64_t have_tokens = it == seqs_.end() ? 0 : it->second.num_tokens;
  int64_t have_blocks = it == seqs_.end() ? 0 : static_cast<int64_t>(it->second.blocks.size());
  int64_t need = (have_tokens + num_tokens + block_size_ - 1) / block_size_ - have_blocks;
  // A shared, partly filled last block needs a private copy before it is written.
  if (it != seqs_.end() && num_tokens > 0 && have_tokens % block_size_ != 0 &&
      ref_counts_[it->second.blocks.back()] > 1)
    ++need;
  return std::max<int64_t>(need, 0);
}

Status KvBlockPool::add_sequence(int64_t seq_id) {
  if (!seqs_.emplace(seq_id, Seq{}).second)
    return invalid_argument("KV pool: sequence {} already exists", seq_id);
  return Status();
}

int32_t KvBlockPool::take_free_block() {
  int32_t b = free_.back();
  free_.pop_back();
  ref_counts_[b] = 1;
  return b;
}

Status KvBlockPool::append(int64_t seq_id, int64_t num_tokens, std::vector<BlockCopy>* copies) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return not_found("KV pool: unknown sequence {}", seq_id);
  if (num_tokens < 0)
    return invalid_argument("KV pool: append of {} tokens to sequence {}", num_tokens, seq_id);
  const int64_t need = blocks_needed(seq_id, num_tokens);
  if (need > num_free_blocks())
    return resource_exhausted(
        "KV cache out of blocks: sequence {} needs {} more block(s) of {} tokens for {} new "
        "token(s), "
        "{} of {} free",
        seq_id, need, block_size_, num_tokens, num_free_blocks(), num_blocks());
  Seq& s = it->second;
  if (num_tokens > 0 && s.num_tokens % block_size_ != 0 && ref_counts_[s.blocks.back()] > 1) {
    int32_t shared = s.blocks.back();
    int32_t fresh = take_free_block();
    --ref_counts_[shared];
    s.blocks.back() = fresh;
    if (copies) copies->push_back({shared, fresh});
  }
  s.num_tokens += num_tokens;
  while (static_cast<int64_t>(s.blocks.size()) * block_size_ < s.num_tokens)
    s.blocks.push_back(take_free_block());
  return Status();
}

Status KvBlockPool::fork(int64_t src, int64_t dst) {
  auto it = seqs_.find(src);
  if (it == seqs_.end()) return not_found("KV pool: fork from unknown sequence {}", src);
  if (seqs_.count(dst))
    return invalid_argument("KV pool: fork target sequence {} already exists", dst);
  for (int32_t b : it->second.blocks) ++ref_counts_[b];
  Seq copy = it->second;
  seqs_.emplace(dst, std::move(copy));
  return Status();
}

Status KvBlockPool::free_sequence(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  if (it == seqs_.end()) return not_found("KV pool: free of unknown sequence {}", seq_id);
  for (auto b = it->second.blocks.rbegin(); b != it->second.blocks.rend(); ++b)
    if (--ref_counts_[*b] == 0) free_.push_back(*b);
  seqs_.erase(it);
  return Status();
}

int64_t KvBlockPool::num_tokens(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  SW_CHECK_MSG(it != seqs_.end(), "KV pool: unknown sequence {}", seq_id);
  return it->second.num_tokens;
}

const std::vector<int32_t>& KvBlockPool::block_table(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  SW_CHECK_MSG(it != seqs_.end(), "KV pool: unknown sequence {}", seq_id);
  return it->second.blocks;
}

int64_t KvBlockPool::slot(int64_t seq_id, int64_t pos) const {
  const auto& blocks = block_table(seq_id);
  SW_CHECK_MSG(pos >= 0 && pos / block_size_ < static_cast<int64_t>(blocks.size()),
               "KV pool: position {} outside sequence {}", pos, seq_id);
  return static_cast<int64_t>(blocks[pos / block_size_]) * block_size_ + pos % block_size_;
}

Status KvBlockPool::check_invariants() const {
  std::vector<int32_t> refs(ref_counts_.size(), 0);
  for (const auto& [id, s] : seqs_) {
    int64_t want = (s.num_tokens + block_size_ - 1) / block_size_;
    if (static_cast<int64_t>(s.blocks.size()) != want)
      return internal_error("sequence {} has {} blocks for {} tokens", id, s.blocks.size(),
                            s.num_tokens);
    for (int32_t b : s.blocks) {
      if (b < 0 || b >= num_blocks())
        return internal_error("sequence {} holds invalid block {}", id, b);
      ++refs[b];
    }
  }
  std::vector<char> is_free(ref_counts_.size(), 0);
  for (int32_t b : free_) {
    if (b < 0 || b >= num_blocks()) return internal_error("free list holds invalid block {}", b);
    if (is_free[b]) return internal_error("block {} is on the free list twice", b);
    is_free[b] = 1;
  }
  for (size_t b = 0; b < refs.size(); ++b) {
    if (refs[b] != ref_counts_[b])
      return internal_error("block {} has ref count {} but {} tables hold it", b, ref_counts_[b],
                            refs[b]);
    if ((refs[b] == 0) != static_cast<bool>(is_free[b]))
      return internal_error("block {} is {} but has {} references", b,
                            is_free[b] ? "free" : "not free", refs[b]);
  }
  return Status();
}

}  // namespace sw::coordinator

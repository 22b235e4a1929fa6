// Bpe: the `tokenizers` BPE model (models/bpe/model.rs + word.rs) — vocab, ranked merges,
// byte_fallback, unk_token/fuse_unk, ignore_merges, continuing_subword_prefix and
// end_of_word_suffix — with the same priority-queue merge and a per-thread cache of words.
// Extend: a new option goes into from_json and merge_word, as in model.rs.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sw::tokenizer {

// Open-addressing map from strings to ids (the vocab: ~10^5 short keys, read-mostly).
class StringIdMap {
 public:
  void reserve(size_t n);
  void insert(std::string_view key, int32_t id);  // a repeated key keeps the last id
  int32_t find(std::string_view key) const;       // -1 when absent
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0, len = 0;
    int32_t id = -1;  // -1: empty
  };
  std::vector<Slot> slots_;
  std::string arena_;
  size_t size_ = 0;
  size_t mask_ = 0;
};

class Bpe {
 public:
  ~Bpe();
  // `model`: tokenizer.json's "model" object with "type": "BPE".
  static Result<std::unique_ptr<Bpe>> from_json(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized piece (non-empty, well-formed UTF-8) to `out`.
  void tokenize(std::string_view piece, std::vector<int32_t>& out) const;

  int32_t token_to_id(std::string_view token) const { return vocab_.find(token); }
  const std::string* id_to_token(int32_t id) const;
  // vocab.len(): where added tokens not in the vocab start.
  size_t vocab_count() const { return vocab_.size(); }
  int64_t max_id() const { return static_cast<int64_t>(vocab_r_.size()) - 1; }

 private:
  Bpe() = default;
  void merge_word(std::string_view w, std::vector<int32_t>& out) const;
  // (rank, new_id) of merging the pair (a, b); rank -1 when there is none.
  std::pair<int32_t, int32_t> find_merge(int32_t a, int32_t b) const;

  StringIdMap vocab_;
  std::vector<std::string> vocab_r_;
  std::vector<uint8_t> has_r_;
  struct MergeSlot {
    uint64_t key = ~0ull;
    int32_t rank = -1, new_id = -1;
  };
  std::vector<MergeSlot> merges_;
  size_t merge_mask_ = 0;
  std::optional<std::string> unk_token_;
  std::string prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256];  // <0xXX> tokens for byte_fallback, -1 if absent
  uint64_t cache_id_ = 0;
};

}  // namespace sw::tokenizer

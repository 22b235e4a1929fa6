// The BPE model (see bpe.h): loading vocab and merges from tokenizer.json, merge_word and
// Word::merge_all ported from models/bpe/{model,word}.rs, and the per-thread word cache.
#include "tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <unordered_map>

#include "tokenizer/unicode.h"

namespace sw::tokenizer {
namespace {

uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x243F6A8885A308D3ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  std::memcpy(&w, s.data() + i, s.size() - i);
  h = (h ^ w) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 32;
  return h * 0xBF58476D1CE4E5B9ull;
}

uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDull;
  x ^= x >> 33;
  return x;
}

constexpr size_t kCacheCapacity = 1 << 16;  // words per thread and model (HF: 10000)
constexpr size_t kCacheMaxLength = 256;     // HF's MAX_LENGTH: longer words are not cached

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return hash_bytes(s); }
};
struct SvEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};
using WordCache = std::unordered_map<std::string, std::vector<int32_t>, SvHash, SvEq>;

WordCache& thread_cache(uint64_t id) {
  thread_local std::unordered_map<uint64_t, WordCache> caches;
  thread_local uint64_t last_id = 0;
  thread_local WordCache* last = nullptr;
  if (last_id != id || last == nullptr) {
    last = &caches[id];
    last_id = id;
  }
  return *last;
}

std::atomic<uint64_t> next_cache_id{1};

struct Symbol {
  int32_t c;
  int32_t prev, next;
  uint32_t len;
};

struct Merge {
  int32_t pos, rank, new_id;
  // std::priority_queue pops the largest: lowest rank first, then lowest position.
  bool operator<(const Merge& o) const {
    if (rank != o.rank) return rank > o.rank;
    return pos > o.pos;
  }
};

}  // namespace

void StringIdMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  size_ = 0;
  arena_.clear();
}

void StringIdMap::insert(std::string_view key, int32_t id) {
  if (slots_.empty() || (size_ + 1) * 2 > slots_.size()) {
    std::vector<Slot> old = std::move(slots_);
    std::string old_arena = std::move(arena_);
    reserve(std::max<size_t>(16, (size_ + 1) * 2));
    for (const Slot& s : old) {
      if (s.id >= 0) insert(std::string_view(old_arena).substr(s.offset, s.len), s.id);
    }
  }
  const uint64_t h = hash_bytes(key);
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.id < 0) {
      s.hash = h;
      s.offset = static_cast<uint32_t>(arena_.size());
      s.len = static_cast<uint32_t>(key.size());
      s.id = id;
      arena_.append(key);
      ++size_;
      return;
    }
    if (s.hash == h && std::string_view(arena_).substr(s.offset, s.len) == key) {
      s.id = id;
      return;
    }
  }
}

int32_t StringIdMap::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  const uint64_t h = hash_bytes(key);
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.id < 0) return -1;
    if (s.hash == h && s.len == key.size() &&
        std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0) {
      return s.id;
    }
  }
}

Bpe::~Bpe() = default;

Result<std::unique_ptr<Bpe>> Bpe::from_json(const nlohmann::json& m) {
  std::unique_ptr<Bpe> bpe(new Bpe());
  bpe->cache_id_ = next_cache_id.fetch_add(1);
  if (auto it = m.find("dropout"); it != m.end() && !it->is_null()) {
    const double d = it->get<double>();
    if (d != 0.0) return unimplemented("BPE dropout {} is not supported (null only)", d);
  }
  auto opt_string = [&](const char* key) -> std::optional<std::string> {
    auto it = m.find(key);
    if (it == m.end() || it->is_null()) return std::nullopt;
    return it->get<std::string>();
  };
  auto opt_bool = [&](const char* key) {
    auto it = m.find(key);
    return it != m.end() && !it->is_null() && it->get<bool>();
  };
  bpe->unk_token_ = opt_string("unk_token");
  bpe->prefix_ = opt_string("continuing_subword_prefix").value_or("");
  bpe->suffix_ = opt_string("end_of_word_suffix").value_or("");
  bpe->fuse_unk_ = opt_bool("fuse_unk");
  bpe->byte_fallback_ = opt_bool("byte_fallback");
  bpe->ignore_merges_ = opt_bool("ignore_merges");

  const auto& vocab = m.at("vocab");
  if (!vocab.is_object()) return invalid_argument("model.vocab: expected an object");
  bpe->vocab_.reserve(vocab.size());
  int64_t max_id = -1;
  for (const auto& [tok, idj] : vocab.items()) {
    const int64_t id = idj.get<int64_t>();
    if (id < 0 || id >= (int64_t{1} << 26)) {
      return invalid_argument("model.vocab: id {} of '{}' out of range", id, tok);
    }
    bpe->vocab_.insert(tok, static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  if (max_id >= static_cast<int64_t>(16 * vocab.size() + 65536)) {
    return invalid_argument("model.vocab: ids up to {} for {} tokens are too sparse", max_id,
                            vocab.size());
  }
  bpe->vocab_r_.resize(static_cast<size_t>(max_id + 1));
  bpe->has_r_.assign(static_cast<size_t>(max_id + 1), 0);
  for (const auto& [tok, idj] : vocab.items()) {
    const auto id = idj.get<size_t>();
    bpe->vocab_r_[id] = tok;
    bpe->has_r_[id] = 1;
  }
  for (int b = 0; b < 256; ++b) {
    char code[8];
    std::snprintf(code, sizeof code, "<0x%02X>", b);
    bpe->byte_ids_[b] = bpe->vocab_.find(code);
  }

  const auto& merges = m.at("merges");
  if (!merges.is_array()) return invalid_argument("model.merges: expected a list");
  size_t cap = 16;
  while (cap < merges.size() * 2) cap <<= 1;
  bpe->merges_.assign(cap, MergeSlot{});
  bpe->merge_mask_ = cap - 1;
  int32_t rank = 0;
  std::string merged;
  for (const auto& mj : merges) {
    std::string a, b;
    if (mj.is_string()) {
      const std::string line = mj.get<std::string>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t sp = line.find(' ');
      if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
        return invalid_argument("model.merges[{}]: '{}' is not two tokens", rank, line);
      }
      a = line.substr(0, sp);
      b = line.substr(sp + 1);
    } else {
      if (!mj.is_array() || mj.size() != 2) {
        return invalid_argument("model.merges[{}]: expected \"a b\" or [a, b]", rank);
      }
      a = mj.at(0).get<std::string>();
      b = mj.at(1).get<std::string>();
    }
    const int32_t a_id = bpe->vocab_.find(a), b_id = bpe->vocab_.find(b);
    if (a_id < 0) return invalid_argument("model.merges[{}]: '{}' is not in the vocab", rank, a);
    if (b_id < 0) return invalid_argument("model.merges[{}]: '{}' is not in the vocab", rank, b);
    if (b.size() < bpe->prefix_.size()) {
      return invalid_argument("model.merges[{}]: '{}' is shorter than the prefix", rank, b);
    }
    merged = a;
    merged.append(b, bpe->prefix_.size());
    const int32_t new_id = bpe->vocab_.find(merged);
    if (new_id < 0) {
      return invalid_argument("model.merges[{}]: '{}' is not in the vocab", rank, merged);
    }
    const uint64_t key = (static_cast<uint64_t>(a_id) << 32) | static_cast<uint32_t>(b_id);
    for (size_t i = mix64(key) & bpe->merge_mask_;; i = (i + 1) & bpe->merge_mask_) {
      MergeSlot& s = bpe->merges_[i];
      if (s.rank < 0 || s.key == key) {  // a repeated pair keeps the last rank, as HashMap does
        s = {key, rank, new_id};
        break;
      }
    }
    ++rank;
  }
  return bpe;
}

const std::string* Bpe::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_r_.size() || !has_r_[id]) return nullptr;
  return &vocab_r_[id];
}

std::pair<int32_t, int32_t> Bpe::find_merge(int32_t a, int32_t b) const {
  const uint64_t key = (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
  for (size_t i = mix64(key) & merge_mask_;; i = (i + 1) & merge_mask_) {
    const MergeSlot& s = merges_[i];
    if (s.rank < 0) return {-1, -1};
    if (s.key == key) return {s.rank, s.new_id};
  }
}

void Bpe::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  auto add = [&](int32_t c, size_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({c, n - 1, -1, static_cast<uint32_t>(len)});
  };
  bool have_unk = false;
  int32_t unk_id = -1;
  size_t unk_len = 0;
  const int32_t unk_vocab_id = unk_token_ ? vocab_.find(*unk_token_) : -1;
  std::string with_affix;
  size_t i = 0;
  while (i < w.size()) {
    const size_t start = i;
    i = std::min(w.size(), i + unicode::utf8_len(static_cast<unsigned char>(w[i])));
    const size_t byte_len = i - start;
    std::string_view s = w.substr(start, byte_len);
    if ((!prefix_.empty() && start != 0) || (!suffix_.empty() && i == w.size())) {
      with_affix.clear();
      if (start != 0) with_affix += prefix_;
      with_affix += s;
      if (i == w.size()) with_affix += suffix_;
      s = with_affix;
    }
    const int32_t id = vocab_.find(s);
    if (id >= 0) {
      if (have_unk) {
        add(unk_id, unk_len);
        have_unk = false;
      }
      add(id, byte_len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      if (all) {
        for (unsigned char b : s) add(byte_ids_[b], 1);
        continue;
      }
    }
    if (unk_token_ && unk_vocab_id >= 0) {
      if (have_unk && fuse_unk_) {
        unk_len += byte_len;
      } else {
        if (have_unk) add(unk_id, unk_len);
        have_unk = true;
        unk_id = unk_vocab_id;
        unk_len = byte_len;
      }
    }
  }
  if (have_unk) add(unk_id, unk_len);

  // Word::merge_all without dropout.
  thread_local std::vector<Merge> queue_storage;
  struct Queue {  // std::priority_queue over a reused vector
    std::vector<Merge>& v;
    bool empty() const { return v.empty(); }
    const Merge& top() const { return v.front(); }
    void push(const Merge& m) {
      v.push_back(m);
      std::push_heap(v.begin(), v.end());
    }
    void pop() {
      std::pop_heap(v.begin(), v.end());
      v.pop_back();
    }
  } queue{queue_storage};
  queue_storage.clear();
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    const auto [r, nid] = find_merge(symbols[k].c, symbols[k + 1].c);
    if (r >= 0) queue.push({static_cast<int32_t>(k), r, nid});
  }
  const auto n = static_cast<int32_t>(symbols.size());
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const int32_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    const auto [r0, target_id] = find_merge(cur.c, right.c);
    if (r0 < 0 || target_id != top.new_id) continue;
    cur.c = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next > -1 && right.next < n) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      const auto [r, nid] = find_merge(symbols[cur.prev].c, cur.c);
      if (r >= 0) queue.push({cur.prev, r, nid});
    }
    if (cur.next >= 0 && cur.next < n) {
      const auto [r, nid] = find_merge(cur.c, symbols[cur.next].c);
      if (r >= 0) queue.push({top.pos, r, nid});
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) out.push_back(s.c);
  }
}

void Bpe::tokenize(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    const int32_t id = vocab_.find(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  WordCache& cache = thread_cache(cache_id_);
  if (auto it = cache.find(piece); it != cache.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t first = out.size();
  merge_word(piece, out);
  if (piece.size() < kCacheMaxLength && cache.size() < kCacheCapacity) {
    cache.emplace(std::string(piece), std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

}  // namespace sw::tokenizer

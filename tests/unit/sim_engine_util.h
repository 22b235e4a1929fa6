// Helpers for engine tests without a model (test_scheduler, test_serve, test_loadgen): a fake
// ModelConfig, a deterministic fake model for SimulatedExecutor, and the tokens a request must
// produce under it — computed here without any scheduler, as the independent reference.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "coordinator/simulated_executor.h"
#include "model/model_config.h"

namespace sw::coordinator {

constexpr int64_t kVocab = 500;

inline model::ModelConfig fake_model(std::vector<int> eos = {}) {
  model::ModelConfig m;
  m.source = "fake";
  m.model_type = "fake";
  m.vocab_size = kVocab;
  m.max_position_embeddings = 4096;
  m.eos_token_ids = std::move(eos);
  return m;
}

// A deterministic fake model: the next token is a hash of the whole sequence.
inline SimulatedModel hashed_model() {
  SimulatedModel s;
  s.vocab_size = kVocab;
  s.next_token = [](const std::vector<int32_t>& t) {
    uint64_t h = 1469598103934665603ull;
    for (int32_t x : t) h = (h ^ static_cast<uint64_t>(x + 7)) * 1099511628211ull;
    return static_cast<int32_t>((h >> 17) % kVocab);
  };
  return s;
}

// What a request must produce: the fake model's chain from its prompt, stopping at eos.
inline std::vector<int32_t> expected_tokens(const SimulatedModel& model, std::vector<int32_t> seq,
                                            int64_t max_new, const std::vector<int>& eos = {}) {
  std::vector<int32_t> out;
  while (static_cast<int64_t>(out.size()) < max_new) {
    const int32_t t = model.next_token(seq);
    out.push_back(t);
    seq.push_back(t);
    if (std::find(eos.begin(), eos.end(), t) != eos.end()) break;
  }
  return out;
}

inline std::vector<int32_t> prompt(int n, int salt = 0) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 31 + salt * 17 + 3) % kVocab));
  return p;
}

}  // namespace sw::coordinator

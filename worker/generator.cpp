// Continuous-batching generation loop over a StepExecutor (a local runner or a worker pool).
#include "worker/generator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>

namespace sw::worker {

namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct SeqState {
  size_t index = 0;  // request index
  int64_t seq_id = 0;
  int group = -1;               // KV group (dp group); -1 until admitted
  std::vector<int32_t> tokens;  // prompt + generated: what the cache must hold
  int64_t num_prompt = 0;
  int64_t num_cached = 0;  // tokens already in the KV cache
};

}  // namespace

Generator::Generator(StepExecutor& executor, SchedulerOptions options)
    : runner_(executor), options_(options) {}

Result<std::vector<GenerationResult>> Generator::generate(
    const std::vector<GenerationRequest>& requests) {
  const auto& cfg = runner_.config();
  const int num_groups = runner_.num_kv_groups();
  auto pool = [&](int g) -> KvBlockPool& { return runner_.kv_pool(g); };
  const auto t0 = Clock::now();
  stats_ = GenerationStats{};
  std::vector<GenerationResult> results(requests.size());
  std::deque<SeqState> waiting;
  std::vector<SeqState> running;
  static int64_t next_seq_id = 1;

  int64_t min_blocks = pool(0).num_blocks();
  for (int g = 1; g < num_groups; ++g) min_blocks = std::min(min_blocks, pool(g).num_blocks());
  const int block_size = pool(0).block_size();
  // A request that can never run is rejected with its reason; the others still run.
  auto check = [&](const GenerationRequest& r) -> Status {
    if (r.prompt_ids.empty()) return invalid_argument("empty prompt");
    if (r.max_new_tokens < 1)
      return invalid_argument("max_new_tokens must be >= 1, got {}", r.max_new_tokens);
    const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.max_new_tokens;
    if (total > cfg.max_position_embeddings)
      return invalid_argument("prompt ({}) + max_new_tokens ({}) exceeds the model's context of {}",
                              r.prompt_ids.size(), r.max_new_tokens, cfg.max_position_embeddings);
    const int64_t blocks = (total + block_size - 1) / block_size;
    if (blocks > min_blocks)
      return resource_exhausted("needs {} KV blocks for {} tokens but the cache has only {}",
                                blocks, total, min_blocks);
    for (int32_t t : r.prompt_ids)
      if (t < 0 || t >= cfg.vocab_size)
        return invalid_argument("token id {} is outside the vocabulary [0, {})", t, cfg.vocab_size);
    return Status();
  };
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    const int64_t total = static_cast<int64_t>(r.prompt_ids.size()) + r.max_new_tokens;
    if (Status st = check(r); !st.ok()) {
      results[i].prompt_ids = r.prompt_ids;
      results[i].finish_reason = "error";
      results[i].error = fmt::format("request {}: {}", i, st.message());
      continue;
    }
    results[i].prompt_ids = r.prompt_ids;
    if (r.return_logits)
      results[i].logits = Tensor::empty({total - 1, cfg.vocab_size}, DType::kF32);
    SeqState s;
    s.index = i;
    s.seq_id = next_seq_id++;
    s.tokens = r.prompt_ids;
    s.num_prompt = static_cast<int64_t>(r.prompt_ids.size());
    stats_.prompt_tokens += s.num_prompt;
    waiting.push_back(std::move(s));
  }

  auto is_eos = [&](int32_t t) {
    return std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), t) !=
           cfg.eos_token_ids.end();
  };

  // Preempts running[i]: frees its blocks and puts it back at the front of the queue, to be
  // recomputed from its prompt and the tokens generated so far (vLLM's recompute policy).
  auto preempt = [&](size_t i) -> Status {
    SeqState victim = std::move(running[i]);
    running.erase(running.begin() + static_cast<int64_t>(i));
    SW_RETURN_IF_ERROR(runner_.free_sequence(victim.seq_id, victim.group));
    spdlog::debug("preempting request {}: KV group {} is full, it will be recomputed", victim.index,
                  victim.group);
    victim.num_cached = 0;
    victim.group = -1;
    victim.seq_id = next_seq_id++;
    ++results[victim.index].num_preemptions;
    ++stats_.num_preemptions;
    waiting.push_front(std::move(victim));
    return Status();
  };

  while (!waiting.empty() || !running.empty()) {
    // `running` holds every admitted sequence in admission order (newest last): decoders
    // (prompt cached, one token per step) and prefills still being chunked.
    auto is_decoding = [](const SeqState& s) {
      return s.num_cached == static_cast<int64_t>(s.tokens.size()) - 1;
    };
    // ---- Decoders first; in a group short of blocks, preempt its newest sequence ----------
    std::vector<int64_t> free_blocks(static_cast<size_t>(num_groups));
    for (bool again = true; again;) {
      again = false;
      std::vector<int64_t> need(static_cast<size_t>(num_groups), 0);
      for (const auto& s : running)
        if (is_decoding(s)) need[s.group] += pool(s.group).blocks_needed(s.seq_id, 1);
      for (int g = 0; g < num_groups && !again; ++g) {
        free_blocks[g] = pool(g).num_free_blocks() - need[g];
        if (free_blocks[g] >= 0) continue;
        for (size_t i = running.size(); i-- > 0;)
          if (running[i].group == g) {
            SW_RETURN_IF_ERROR(preempt(i));
            break;
          }
        again = true;
      }
    }
    std::vector<int64_t> chunk_len(running.size(), 0);
    int64_t budget = options_.max_num_batched_tokens;
    for (size_t i = 0; i < running.size(); ++i)
      if (is_decoding(running[i])) {
        chunk_len[i] = 1;
        --budget;
      }
    // ---- Prefill chunks: sequences already admitted first, then the queue ----------------
    auto take_chunk = [&](SeqState& s, int g) -> int64_t {
      const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - s.num_cached;
      const int64_t chunk = std::min(remaining, budget);
      if (chunk <= 0) return 0;
      const int64_t need = pool(g).blocks_needed(s.seq_id, chunk);
      if (need > free_blocks[g]) return 0;
      free_blocks[g] -= need;
      budget -= chunk;
      return chunk;
    };
    for (size_t i = 0; i < running.size(); ++i)
      if (!is_decoding(running[i])) chunk_len[i] = take_chunk(running[i], running[i].group);
    while (!waiting.empty() && budget > 0 &&
           static_cast<int>(running.size()) < options_.max_num_seqs) {
      SeqState& s = waiting.front();
      // A new (or preempted) sequence goes to the group with the most free blocks.
      const int g = static_cast<int>(std::max_element(free_blocks.begin(), free_blocks.end()) -
                                     free_blocks.begin());
      const int64_t chunk = take_chunk(s, g);
      if (chunk == 0) break;
      s.group = g;
      running.push_back(std::move(s));
      waiting.pop_front();
      chunk_len.push_back(chunk);
    }
    if (std::all_of(chunk_len.begin(), chunk_len.end(), [](int64_t n) { return n == 0; })) {
      // Admitted prefills hold blocks the others need: give way, newest first.
      if (running.empty())
        return internal_error("scheduler made no progress: {} waiting, {} KV group(s) full",
                              waiting.size(), num_groups);
      SW_RETURN_IF_ERROR(preempt(running.size() - 1));
      continue;
    }

    std::vector<SequenceInput> batch;
    std::vector<size_t> in_batch;  // batch entry -> index in running
    for (size_t i = 0; i < running.size(); ++i) {
      if (chunk_len[i] == 0) continue;
      SeqState& s = running[i];
      const auto& req = requests[s.index];
      SequenceInput in;
      in.seq_id = s.seq_id;
      in.kv_group = s.group;
      const int64_t begin = s.num_cached;
      in.tokens.assign(s.tokens.begin() + begin, s.tokens.begin() + begin + chunk_len[i]);
      in.sample =
          begin + chunk_len[i] == static_cast<int64_t>(s.tokens.size());  // last chunk or decode
      in.sampling = req.sampling;
      in.sampling.offset =
          static_cast<uint64_t>(s.tokens.size() - static_cast<size_t>(s.num_prompt));
      in.keep_logits = req.return_logits;
      batch.push_back(std::move(in));
      in_batch.push_back(i);
    }
    SW_ASSIGN_OR_RETURN(StepResult out, runner_.step(batch));
    ++stats_.num_steps;
    for (size_t l = 0; l < out.moe_metrics.size(); ++l) {
      if (stats_.moe_layers.size() <= l) stats_.moe_layers.emplace_back();
      auto& acc = stats_.moe_layers[l];
      const auto& m = out.moe_metrics[l];
      acc.tokens_per_expert.resize(m.tokens_per_expert.size(), 0);
      for (size_t e = 0; e < m.tokens_per_expert.size(); ++e)
        acc.tokens_per_expert[e] += m.tokens_per_expert[e];
      acc.num_assignments += m.num_assignments;
      acc.num_dropped += m.num_dropped;
    }

    // ---- Commit: cache counts, logits, sampled tokens, finished sequences ------------------
    std::vector<char> finished(running.size(), 0);
    for (size_t b = 0; b < batch.size(); ++b) {
      SeqState& s = running[in_batch[b]];
      const auto& req = requests[s.index];
      auto& res = results[s.index];
      const int64_t begin = s.num_cached;
      s.num_cached += static_cast<int64_t>(batch[b].tokens.size());
      if (req.return_logits && out.logits_row[b] >= 0) {
        const int64_t V = cfg.vocab_size;
        for (size_t j = 0; j < batch[b].tokens.size(); ++j) {
          const int64_t pos = begin + static_cast<int64_t>(j);
          if (pos >= res.logits.dim(0)) break;  // logits after the last token are not reported
          std::memcpy(
              res.logits.data_as<float>() + pos * V,
              out.logits.data_as<float>() + (out.logits_row[b] + static_cast<int64_t>(j)) * V,
              static_cast<size_t>(V) * sizeof(float));
        }
      }
      if (!batch[b].sample) continue;  // prompt not fully cached yet: next chunk in a later step
      const int32_t tok = out.sampled[b];
      s.tokens.push_back(tok);
      res.output_ids.push_back(tok);
      ++stats_.generated_tokens;
      if (res.output_ids.size() == 1) res.ttft_ms = ms_since(t0);
      const bool stop = !req.ignore_eos && is_eos(tok);
      if (stop || static_cast<int>(res.output_ids.size()) >= req.max_new_tokens) {
        res.finish_reason = stop ? "stop" : "length";
        res.total_ms = ms_since(t0);
        if (req.return_logits)
          res.logits = res.logits.rows(0, static_cast<int64_t>(s.tokens.size()) - 1);
        SW_RETURN_IF_ERROR(runner_.free_sequence(s.seq_id, s.group));
        finished[in_batch[b]] = 1;
      }
    }
    std::vector<SeqState> still;
    for (size_t i = 0; i < running.size(); ++i)
      if (!finished[i]) still.push_back(std::move(running[i]));
    running = std::move(still);
  }
  for (auto& m : stats_.moe_layers) {
    int64_t kept = 0, max_load = 0;
    for (int64_t n : m.tokens_per_expert) {
      kept += n;
      max_load = std::max(max_load, n);
    }
    m.imbalance = kept > 0 ? static_cast<double>(max_load) *
                                 static_cast<double>(m.tokens_per_expert.size()) /
                                 static_cast<double>(kept)
                           : 0.0;
  }
  stats_.wall_ms = ms_since(t0);
  return results;
}

}  // namespace sw::worker

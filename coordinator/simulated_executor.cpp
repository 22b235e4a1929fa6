// A fake model over a simulated, checked KV cache.
#include "coordinator/simulated_executor.h"

#include <fmt/format.h>

#include <thread>

namespace sw::coordinator {

namespace {

uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  return h * 0xBF58476D1CE4E5B9ull;
}

uint64_t hash_tokens(const std::vector<int32_t>& tokens) {
  uint64_t h = 0x12345678ull + tokens.size();
  for (int32_t t : tokens) h = mix(h, static_cast<uint64_t>(static_cast<uint32_t>(t)));
  return h;
}

}  // namespace

float simulated_logit(const std::vector<int32_t>& tokens, int64_t v) {
  const uint64_t h = mix(hash_tokens(tokens), static_cast<uint64_t>(v));
  return static_cast<float>(h >> 40) / static_cast<float>(1 << 24);
}

void SimulatedKvNetwork::post(uint64_t transfer, std::vector<int32_t> tokens) {
  Delivery d;
  d.tokens = std::move(tokens);
  d.ready = Clock::now();
  if (drop_ > 0) {
    --drop_;
    d.dropped = true;
  } else if (stall_ > 0) {
    --stall_;
    d.ready += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(stall_s_));
  }
  in_flight_[transfer] = std::move(d);
  ++posted_;
}

std::optional<std::vector<int32_t>> SimulatedKvNetwork::take(uint64_t transfer) {
  auto it = in_flight_.find(transfer);
  if (it == in_flight_.end() || it->second.dropped || Clock::now() < it->second.ready)
    return std::nullopt;
  std::vector<int32_t> tokens = std::move(it->second.tokens);
  in_flight_.erase(it);
  return tokens;
}

SimulatedExecutor::SimulatedExecutor(int num_groups, int64_t num_blocks, int block_size,
                                     SimulatedModel model, SimulatedTiming timing,
                                     SimulatedKvNetwork* network)
    : block_size_(block_size),
      num_blocks_(num_blocks),
      model_(std::move(model)),
      timing_(timing),
      cache_(static_cast<size_t>(num_groups),
             std::vector<Slot>(static_cast<size_t>(num_blocks * block_size))),
      network_(network) {
  if (!model_.next_token) {
    const int64_t V = model_.vocab_size;
    model_.next_token = [V](const std::vector<int32_t>& t) {
      return static_cast<int32_t>(hash_tokens(t) % static_cast<uint64_t>(V));
    };
  }
}

Result<StepOutput> SimulatedExecutor::run(const worker::StepCommand& cmd) {
  if (cmd.groups.size() != cache_.size())
    return invalid_argument("simulated instance: step for {} dp groups, expected {}",
                            cmd.groups.size(), cache_.size());
  StepOutput out;
  for (size_t g = 0; g < cmd.groups.size(); ++g) {
    std::vector<Slot>& cache = cache_[g];
    const worker::StepMetadata& meta = cmd.groups[g];
    auto slot_of = [&](const worker::StepSequence& s, int64_t pos) -> Result<int64_t> {
      const int64_t b = pos / block_size_;
      if (b >= static_cast<int64_t>(s.block_table.size()))
        return invalid_argument("sequence {}: position {} is past its block table of {}", s.seq_id,
                                pos, s.block_table.size());
      const int32_t block = s.block_table[static_cast<size_t>(b)];
      if (block < 0 || block >= num_blocks_)
        return invalid_argument("sequence {}: block {} outside [0, {})", s.seq_id, block,
                                num_blocks_);
      return int64_t{block} * block_size_ + pos % block_size_;
    };
    for (const worker::BlockCopy& cp : meta.copies)
      for (int k = 0; k < block_size_; ++k)
        cache[static_cast<size_t>(cp.dst) * block_size_ + k] =
            cache[static_cast<size_t>(cp.src) * block_size_ + k];
    worker::StepResult res;
    res.sampled.assign(meta.seqs.size(), -1);
    res.logits_row.assign(meta.seqs.size(), -1);
    std::vector<float> logits;
    int64_t rows = 0;
    for (size_t i = 0; i < meta.seqs.size(); ++i) {
      const worker::StepSequence& s = meta.seqs[i];
      std::vector<int32_t> seq;
      for (int64_t p = 0; p < s.start_pos; ++p) {
        SW_ASSIGN_OR_RETURN(int64_t slot, slot_of(s, p));
        const Slot& c = cache[static_cast<size_t>(slot)];
        if (c.seq_id != s.seq_id || c.pos != p)
          return data_loss(
              "dp group {}: sequence {} reads position {} from slot {}, which holds sequence {} "
              "position {}: its KV was overwritten or never written",
              g, s.seq_id, p, slot, c.seq_id, c.pos);
        seq.push_back(c.token);
      }
      if (s.keep_logits) res.logits_row[i] = rows;
      for (size_t j = 0; j < s.tokens.size(); ++j) {
        const int64_t p = s.start_pos + static_cast<int64_t>(j);
        SW_ASSIGN_OR_RETURN(int64_t slot, slot_of(s, p));
        cache[static_cast<size_t>(slot)] = Slot{s.seq_id, p, s.tokens[j]};
        seq.push_back(s.tokens[j]);
        if (s.keep_logits) {
          for (int64_t v = 0; v < model_.vocab_size; ++v) logits.push_back(simulated_logit(seq, v));
          ++rows;
        }
      }
      if (s.sample && !s.tokens.empty()) res.sampled[i] = model_.next_token(seq);
    }
    if (rows > 0) res.logits = Tensor::from_floats(logits, {rows, model_.vocab_size});
    out.groups.push_back(std::move(res));
  }
  // The KV of sequences finishing their prefill leaves with the step.
  for (const worker::KvSendOrder& o : cmd.kv_sends) SW_RETURN_IF_ERROR(post(o));
  return out;
}

Status SimulatedExecutor::post(const worker::KvSendOrder& o) {
  if (!network_) return unimplemented("simulated instance: no KV network");
  if (o.dp_group < 0 || o.dp_group >= static_cast<int>(cache_.size()))
    return invalid_argument("KV transfer {}: dp group {}", o.transfer, o.dp_group);
  std::vector<int32_t> tokens;
  for (int64_t p = 0; p < o.num_tokens; ++p) {
    const size_t b = static_cast<size_t>(p / block_size_);
    if (b >= o.blocks.size() || o.blocks[b] < 0 || o.blocks[b] >= num_blocks_)
      return invalid_argument("KV transfer {}: position {} is outside its blocks", o.transfer, p);
    const Slot& c = cache_[static_cast<size_t>(o.dp_group)]
                          [static_cast<size_t>(o.blocks[b]) * block_size_ + p % block_size_];
    if (c.seq_id != o.seq_id || c.pos != p)
      return data_loss(
          "KV transfer {}: sequence {} position {} is not in its slot (sequence {} position {} "
          "is): the send order names the wrong blocks",
          o.transfer, o.seq_id, p, c.seq_id, c.pos);
    tokens.push_back(c.token);
  }
  network_->post(o.transfer, std::move(tokens));
  return Status();
}

Status SimulatedExecutor::expect_kv(const worker::KvRecvOrder& order) {
  if (!network_) return unimplemented("simulated instance: no KV network");
  expected_[order.transfer] = order;
  return Status();
}

Status SimulatedExecutor::send_kv(const worker::KvSendOrder& order) { return post(order); }

Status SimulatedExecutor::cancel_kv(uint64_t transfer) {
  expected_.erase(transfer);
  if (network_) network_->cancel(transfer);
  return Status();
}

std::vector<KvTransferEvent> SimulatedExecutor::poll_kv() {
  std::vector<KvTransferEvent> out;
  for (auto it = expected_.begin(); it != expected_.end();) {
    auto tokens = network_->take(it->first);
    if (!tokens) {
      ++it;
      continue;
    }
    const worker::KvRecvOrder& o = it->second;
    KvTransferEvent e;
    e.transfer = o.transfer;
    if (static_cast<int64_t>(tokens->size()) != o.num_tokens) {
      e.status = data_loss("KV transfer {}: {} tokens arrived, {} expected", o.transfer,
                           tokens->size(), o.num_tokens);
    } else {
      for (int64_t p = 0; p < o.num_tokens; ++p) {
        const size_t b = static_cast<size_t>(p / block_size_);
        cache_[static_cast<size_t>(o.dp_group)]
              [static_cast<size_t>(o.blocks[b]) * block_size_ + p % block_size_] =
                  Slot{o.seq_id, p, (*tokens)[static_cast<size_t>(p)]};
      }
      e.bytes = o.num_tokens * static_cast<int64_t>(sizeof(int32_t));
      e.first_part_us = e.done_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count();
    }
    out.push_back(std::move(e));
    it = expected_.erase(it);
  }
  return out;
}

std::string SimulatedExecutor::kv_missing(uint64_t transfer) const {
  return expected_.count(transfer) ? "[simulated rank]" : "";
}

Status SimulatedExecutor::submit(const worker::StepCommand& command) {
  if (pending_) return internal_error("simulated instance: a step is already in flight");
  if (shut_down_) return unavailable("simulated instance: shut down");
  history_.push_back(command);
  int64_t tokens = 0;
  for (const auto& g : command.groups)
    for (const auto& s : g.seqs) tokens += static_cast<int64_t>(s.tokens.size());
  const double seconds = timing_.base_s + timing_.per_token_s * static_cast<double>(tokens);
  Result<StepOutput> out = fail_next_ ? Result<StepOutput>(*fail_next_) : run(command);
  fail_next_.reset();
  pending_ = Pending{std::move(out), Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                        std::chrono::duration<double>(seconds))};
  return Status();
}

Result<std::optional<StepOutput>> SimulatedExecutor::poll() {
  if (!pending_ || Clock::now() < pending_->ready) return std::optional<StepOutput>();
  Result<StepOutput> out = std::move(pending_->output);
  pending_.reset();
  if (!out.ok()) return out.status();
  return std::optional<StepOutput>(std::move(out).value());
}

void SimulatedExecutor::wait(double max_s) {
  auto until = Clock::now() +
               std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(max_s));
  if (pending_) until = std::min(until, pending_->ready);
  // Transfers being waited for arrive in their own time: look again soon.
  if (!expected_.empty()) until = std::min(until, Clock::now() + std::chrono::milliseconds(1));
  std::this_thread::sleep_until(until);
}

Status SimulatedExecutor::shutdown() {
  if (pending_) return internal_error("simulated instance: shutdown with a step in flight");
  shut_down_ = true;
  return Status();
}

}  // namespace sw::coordinator

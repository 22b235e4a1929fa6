// Scheduling, preemption and commit of steps; the request lifecycle transitions.
#include "coordinator/scheduler.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

namespace sw::coordinator {

namespace {

class DecodePriorityPolicy final : public SchedulerPolicy {
 public:
  std::vector<Request*> order(const std::vector<Request*>& running) const override {
    std::vector<Request*> out = running;
    std::stable_partition(out.begin(), out.end(), [](Request* r) { return r->is_decoding(); });
    return out;
  }
};

class FcfsPolicy final : public SchedulerPolicy {
 public:
  std::vector<Request*> order(const std::vector<Request*>& running) const override {
    return running;
  }
};

}  // namespace

const char* scheduler_policy_name(SchedulerPolicyKind k) {
  return k == SchedulerPolicyKind::kFcfs ? "fcfs" : "decode_priority";
}

Result<SchedulerPolicyKind> parse_scheduler_policy(const std::string& name) {
  if (name == "decode_priority") return SchedulerPolicyKind::kDecodePriority;
  if (name == "fcfs") return SchedulerPolicyKind::kFcfs;
  return invalid_argument("scheduler policy '{}': expected decode_priority or fcfs", name);
}

std::unique_ptr<SchedulerPolicy> make_scheduler_policy(SchedulerPolicyKind kind) {
  if (kind == SchedulerPolicyKind::kFcfs) return std::make_unique<FcfsPolicy>();
  return std::make_unique<DecodePriorityPolicy>();
}

const char* transfer_failure_policy_name(TransferFailurePolicy p) {
  return p == TransferFailurePolicy::kFail ? "fail" : "recompute";
}

const char* instance_role_name(InstanceRole r) {
  switch (r) {
    case InstanceRole::kMixed: return "mixed";
    case InstanceRole::kPrefill: return "prefill";
    case InstanceRole::kDecode: return "decode";
  }
  return "?";
}

int64_t ScheduledStep::num_tokens() const {
  int64_t n = 0;
  for (const auto& g : chunks)
    for (const ScheduledChunk& c : g) n += c.num_tokens;
  return n;
}

Scheduler::Scheduler(model::ModelConfig model, SchedulerOptions options)
    : model_(std::move(model)), options_(options), policy_(make_scheduler_policy(options.policy)) {
  if (options_.max_model_len <= 0) options_.max_model_len = model_.max_position_embeddings;
  SW_CHECK_MSG(options_.max_num_seqs >= 1 && options_.max_num_batched_tokens >= 1,
               "scheduler: max_num_seqs {} and max_num_batched_tokens {} must be >= 1",
               options_.max_num_seqs, options_.max_num_batched_tokens);
}

int Scheduler::add_instance(const InstanceSpec& spec) {
  const int i = kv_.add_instance(spec.num_kv_groups, spec.num_kv_blocks, spec.kv_block_size);
  stats_.preemptions_by_instance.push_back(0);
  Instance inst;
  inst.spec = spec;
  if (inst.spec.name.empty()) inst.spec.name = fmt::format("instance {}", i);
  instances_.push_back(std::move(inst));
  return i;
}

// ---- Admission -----------------------------------------------------------------------------

int64_t Scheduler::blocks_for(const Request& r, int instance) const {
  const int64_t total = r.num_prompt() + r.spec.max_new_tokens;
  const int bs = kv_.block_size(instance);
  return (total + bs - 1) / bs;
}

Status Scheduler::check_fits(const RequestSpec& spec) const {
  return check_request_fits(spec, model_.vocab_size, options_.max_model_len);
}

std::vector<InstanceLoad> Scheduler::loads(const Request& r) const {
  std::vector<InstanceLoad> out(instances_.size());
  for (size_t i = 0; i < instances_.size(); ++i) {
    const Instance& inst = instances_[i];
    InstanceLoad& l = out[i];
    const int ii = static_cast<int>(i);
    l.accepts = inst.alive && inst.spec.role != InstanceRole::kDecode &&
                blocks_for(r, ii) <= kv_.num_blocks(ii);
    for (const Request* w : inst.waiting) l.queued_tokens += w->num_uncached();
    l.running = static_cast<int64_t>(inst.running.size());
    l.free_blocks = kv_.num_free_blocks(ii);
    l.total_blocks = std::max<int64_t>(1, kv_.num_blocks(ii) * kv_.num_groups(ii));
  }
  return out;
}

Result<int64_t> Scheduler::add(RequestSpec spec, Clock::time_point arrival) {
  SW_RETURN_IF_ERROR(check_fits(spec));
  auto req = std::make_unique<Request>();
  Request& r = *req;
  r.spec = std::move(spec);
  r.tokens = r.spec.prompt_ids;
  r.arrival = arrival;
  const int inst = router_.choose(loads(r));
  if (inst < 0) {
    int64_t largest = 0;
    for (int i = 0; i < num_instances(); ++i)
      if (instances_[i].alive) largest = std::max(largest, kv_.num_blocks(i));
    if (largest == 0) return unavailable("no instance is alive to take the request");
    return resource_exhausted(
        "needs {} KV blocks of {} tokens for {} tokens, but the largest KV pool has {}",
        (r.num_prompt() + r.spec.max_new_tokens + kv_.block_size(0) - 1) / kv_.block_size(0),
        kv_.block_size(0), r.num_prompt() + r.spec.max_new_tokens, largest);
  }
  r.id = next_request_id_++;
  r.instance = inst;
  if (r.spec.return_logits)
    r.logits =
        Tensor::empty({r.num_prompt() + r.spec.max_new_tokens - 1, model_.vocab_size}, DType::kF32);
  stats_.prompt_tokens += r.num_prompt();
  instances_[inst].waiting.push_back(&r);
  ++num_unfinished_;
  spdlog::debug("request {}: queued on {} ({} prompt tokens, max_new_tokens {})", r.id,
                instances_[inst].spec.name, r.num_prompt(), r.spec.max_new_tokens);
  const int64_t id = r.id;
  requests_.emplace(id, std::move(req));
  return id;
}

// ---- Transitions ---------------------------------------------------------------------------

void Scheduler::transition(Request& r, RequestState to, const char* why) {
  spdlog::debug("request {}: {} -> {} ({})", r.id, request_state_name(r.state),
                request_state_name(to), why);
  r.state = to;
}

void Scheduler::release_placement(Request& r) {
  if (r.transfer != 0) cancel_transfer(r.transfer);
  std::erase(transferring_, &r);
  if (r.instance >= 0) {
    Instance& inst = instances_[r.instance];
    if (r.seq_id >= 0 && inst.alive) {
      Status st = kv_.free(r.instance, r.kv_group, r.seq_id);
      SW_CHECK_MSG(st.ok(), "request {}: {}", r.id, st.message());
    }
    std::erase(inst.running, &r);
    std::erase(inst.waiting, &r);
  }
  r.seq_id = -1;
  r.kv_group = -1;
  r.num_cached = 0;
}

void Scheduler::admit(Request& r, int group) {
  Instance& inst = instances_[r.instance];
  SW_CHECK(!inst.waiting.empty() && inst.waiting.front() == &r);
  inst.waiting.pop_front();
  inst.running.push_back(&r);
  r.kv_group = group;
  r.seq_id = next_seq_id_++;
  r.num_cached = 0;
  if (r.admitted == Clock::time_point{}) r.admitted = Clock::now();
  transition(r, RequestState::kPrefilling,
             fmt::format("{} dp group {}, sequence {}", inst.spec.name, group, r.seq_id).c_str());
}

void Scheduler::preempt(Request& r, const char* why) {
  const int instance = r.instance;
  release_placement(r);
  r.instance = instance;
  instances_[instance].waiting.push_front(&r);
  ++r.num_preemptions;
  ++stats_.num_preemptions;
  ++stats_.preemptions_by_instance[static_cast<size_t>(instance)];
  transition(r, RequestState::kQueued, why);
}

void Scheduler::end(Request& r, RequestState state, FinishReason reason, std::string error) {
  release_placement(r);
  r.finish_reason = reason;
  r.error = std::move(error);
  r.finished = Clock::now();
  if (r.spec.return_logits && r.logits.defined())
    r.logits = r.logits.rows(0, std::max<int64_t>(0, static_cast<int64_t>(r.tokens.size()) - 1));
  --num_unfinished_;
  transition(r, state, finish_reason_name(reason));
}

Status Scheduler::abort(int64_t id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return not_found("request {}: unknown (or already released)", id);
  Request& r = *it->second;
  if (!is_terminal(r.state)) end(r, RequestState::kAborted, FinishReason::kAbort);
  return Status();
}

const Request* Scheduler::request(int64_t id) const {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : it->second.get();
}

void Scheduler::release(int64_t id) {
  auto it = requests_.find(id);
  if (it != requests_.end() && is_terminal(it->second->state)) requests_.erase(it);
}

// ---- Scheduling ----------------------------------------------------------------------------

int64_t Scheduler::fit(const Request& r, int instance, int group, int64_t want,
                       int64_t free_blocks) const {
  const KvBlockPool& pool = kv_.pool(instance, group);
  if (pool.blocks_needed(r.seq_id, want) <= free_blocks) return want;
  int64_t lo = 0, hi = want;  // blocks_needed grows with the token count: largest n that fits
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (pool.blocks_needed(r.seq_id, mid) <= free_blocks)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

Result<std::optional<ScheduledStep>> Scheduler::schedule(int instance) {
  Instance& inst = instances_.at(instance);
  if (!inst.alive) return std::optional<ScheduledStep>();
  const int groups = kv_.num_groups(instance);
  auto chunk_cap = [&](int64_t budget) {
    const int64_t t = options_.long_prefill_token_threshold;
    return t > 0 ? std::min(budget, t) : budget;
  };
  // Each pass either builds the step or preempts one sequence and starts over, so it ends.
  while (!inst.running.empty() || !inst.waiting.empty()) {
    std::vector<int64_t> free(static_cast<size_t>(groups));
    for (int g = 0; g < groups; ++g) free[g] = kv_.pool(instance, g).num_free_blocks();
    int64_t budget = options_.max_num_batched_tokens;
    std::vector<std::pair<Request*, int64_t>> plan;
    int short_group = -1;
    for (Request* r : policy_->order(inst.running)) {
      const int g = r->kv_group;
      int64_t want = r->is_decode_ready() ? 1 : std::min(r->num_uncached(), chunk_cap(budget));
      if (want > budget || want <= 0) continue;  // no budget left this step
      // A decode needs its block; a prefill chunk shrinks to what the free blocks hold.
      if (!r->is_decode_ready()) want = fit(*r, instance, g, want, free[g]);
      const int64_t need = want > 0 ? kv_.pool(instance, g).blocks_needed(r->seq_id, want) : 0;
      if (want == 0 || need > free[g]) {
        short_group = g;
        break;
      }
      free[g] -= need;
      budget -= want;
      plan.emplace_back(r, want);
    }
    if (short_group >= 0) {
      // Out of blocks: the youngest sequence of that dp group makes room (it may be the one
      // that asked), to be recomputed later.
      auto victim = std::find_if(inst.running.rbegin(), inst.running.rend(),
                                 [&](Request* r) { return r->kv_group == short_group; });
      SW_CHECK(victim != inst.running.rend());
      preempt(**victim, fmt::format("preempted: {} dp group {} is out of KV blocks", inst.spec.name,
                                    short_group)
                            .c_str());
      continue;
    }
    while (!inst.waiting.empty() && budget > 0 &&
           static_cast<int>(inst.running.size()) < options_.max_num_seqs) {
      Request* r = inst.waiting.front();
      // A new sequence goes to the dp group with the most free blocks (the first of equals),
      // and only with its whole first chunk: a partial one would be preempted again at once.
      const int g = static_cast<int>(std::max_element(free.begin(), free.end()) - free.begin());
      const int64_t want = std::min(r->num_uncached(), chunk_cap(budget));
      const int64_t need = kv_.pool(instance, g).blocks_for(want);
      if (need > free[g]) break;  // first come first served: nobody overtakes the head
      admit(*r, g);
      free[g] -= need;
      budget -= want;
      plan.emplace_back(r, want);
    }
    if (plan.empty()) {
      // Prefilled requests waiting to hand their KV to a decode instance hold blocks here:
      // the queue waits for them.
      // So do blocks reserved here for KV on its way from a prefill instance.
      bool held = std::any_of(transferring_.begin(), transferring_.end(),
                              [&](const Request* r) { return r->instance == instance; });
      for (const auto& [id, t] : transfers_) held = held || t.dst_instance == instance;
      if (held) return std::optional<ScheduledStep>();
      // Otherwise impossible while add() admits only requests that fit an empty pool; say so
      // loudly rather than spin.
      return internal_error("{}: no progress possible with {} running and {} waiting",
                            inst.spec.name, inst.running.size(), inst.waiting.size());
    }
    return std::optional<ScheduledStep>(build_step(instance, plan));
  }
  return std::optional<ScheduledStep>();
}

ScheduledStep Scheduler::build_step(int instance,
                                    const std::vector<std::pair<Request*, int64_t>>& plan) {
  const int groups = kv_.num_groups(instance);
  ScheduledStep step;
  step.instance = instance;
  step.command.groups.resize(static_cast<size_t>(groups));
  step.chunks.resize(static_cast<size_t>(groups));
  for (const auto& [r, n] : plan) {
    const int g = r->kv_group;
    const std::vector<int32_t> chunk(r->tokens.begin() + r->num_cached,
                                     r->tokens.begin() + r->num_cached + n);
    auto seq = kv_.append(instance, g, r->seq_id, chunk,
                          &step.command.groups[static_cast<size_t>(g)].copies);
    SW_CHECK_MSG(seq.ok(), "request {}: blocks counted free are not: {}", r->id,
                 seq.status().message());
    SW_CHECK_MSG(seq->start_pos == r->num_cached, "request {}: cache holds {} tokens, expected {}",
                 r->id, seq->start_pos, r->num_cached);
    worker::StepSequence s = std::move(seq).value();
    s.sample = r->num_cached + n == static_cast<int64_t>(r->tokens.size());
    s.sampling = r->spec.sampling;
    s.sampling.offset = static_cast<uint64_t>(r->output_ids.size());
    s.keep_logits = r->spec.return_logits;
    // A prefill instance's last chunk: reserve the decode side now, so that each layer's KV
    // can leave during this step (unless the first token is also the last).
    if (s.sample && instances_[instance].spec.role == InstanceRole::kPrefill &&
        static_cast<int64_t>(r->output_ids.size()) + 1 < r->spec.max_new_tokens) {
      if (Transfer* t = reserve_transfer(*r, static_cast<int64_t>(r->tokens.size()))) {
        // The deadline starts when the step that sends it has ended (src_done).
        step.command.kv_sends.push_back(send_order(*t, s.block_table));
      }
    }
    step.chunks[static_cast<size_t>(g)].push_back({r->id, r->seq_id, n, s.sample});
    step.command.groups[static_cast<size_t>(g)].seqs.push_back(std::move(s));
    stats_.computed_tokens += n;
  }
  return step;
}

// ---- Commit --------------------------------------------------------------------------------

Status Scheduler::update_from_output(const ScheduledStep& step, const StepOutput& out,
                                     std::vector<RequestOutput>* outputs) {
  const auto now = Clock::now();
  const int64_t V = model_.vocab_size;
  for (size_t g = 0; g < step.chunks.size(); ++g) {
    const worker::StepResult& res = out.groups.at(g);
    for (size_t j = 0; j < step.chunks[g].size(); ++j) {
      const ScheduledChunk& c = step.chunks[g][j];
      auto it = requests_.find(c.request_id);
      if (it == requests_.end()) continue;
      Request& r = *it->second;
      // Aborted or preempted while the step ran: what it computed is no longer wanted.
      if (is_terminal(r.state) || r.seq_id != c.seq_id || r.instance != step.instance) continue;
      const int64_t begin = r.num_cached;
      r.num_cached += c.num_tokens;
      if (r.spec.return_logits && res.logits_row[j] >= 0) {
        for (int64_t k = 0; k < c.num_tokens; ++k) {
          const int64_t pos = begin + k;
          if (pos >= r.logits.dim(0)) break;  // logits after the last token are not reported
          std::memcpy(r.logits.data_as<float>() + pos * V,
                      res.logits.data_as<float>() + (res.logits_row[j] + k) * V,
                      static_cast<size_t>(V) * sizeof(float));
        }
      }
      if (!c.sample) continue;  // prompt not fully cached yet: its next chunk comes later
      const int32_t tok = res.sampled[j];
      if (tok < 0 || tok >= V)
        return internal_error("{}: sampled token {} for request {} is outside [0, {})",
                              instances_[step.instance].spec.name, tok, r.id, V);
      r.tokens.push_back(tok);
      r.output_ids.push_back(tok);
      r.token_times.push_back(now);
      if (r.output_ids.size() == 1) r.first_token = now;
      ++stats_.generated_tokens;
      if (r.state == RequestState::kPrefilling &&
          instances_[step.instance].spec.role != InstanceRole::kPrefill)
        transition(r, RequestState::kDecoding, "prefilled");
      RequestOutput o;
      o.id = r.id;
      o.new_tokens.push_back(tok);
      const bool stop = !r.spec.ignore_eos &&
                        std::find(model_.eos_token_ids.begin(), model_.eos_token_ids.end(), tok) !=
                            model_.eos_token_ids.end();
      if (stop || static_cast<int64_t>(r.output_ids.size()) >= r.spec.max_new_tokens) {
        end(r, RequestState::kFinished, stop ? FinishReason::kStop : FinishReason::kLength);
      } else if (instances_[step.instance].spec.role == InstanceRole::kPrefill) {
        // Prefilled: its KV goes to a decode instance (already on its way when the decode side
        // had room at scheduling time). It holds its blocks here until that side has them.
        Instance& inst = instances_[step.instance];
        std::erase(inst.running, &r);
        transferring_.push_back(&r);
        r.prefill_done_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
        transition(r, RequestState::kTransferring, "prefill done");
        auto t = r.transfer != 0 ? transfers_.find(r.transfer) : transfers_.end();
        if (t == transfers_.end()) {
          r.transfer_wait_deadline =
              now + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(options_.kv_transfer_timeout_s));
        } else {
          // Its layers left during the step; the deadline counts from the step's end, so a
          // long prefill does not eat into it.
          t->second.src_done = true;
          t->second.deadline =
              now + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(options_.kv_transfer_timeout_s));
          if (t->second.dst_done) finalize_transfer(t->second);
        }
      }
      o.state = r.state;
      o.finish_reason = r.finish_reason;
      if (outputs) outputs->push_back(std::move(o));
    }
  }
  return Status();
}

void Scheduler::fail_instance(int instance, const Status& why,
                              std::vector<RequestOutput>* outputs) {
  Instance& inst = instances_.at(instance);
  if (!inst.alive) return;
  spdlog::error("{} is lost: {}", inst.spec.name, why.message());
  // Transfers into it are dropped: their requests wait for room on another decode instance,
  // their prefill blocks still held.
  std::vector<uint64_t> into;
  for (const auto& [id, t] : transfers_)
    if (t.dst_instance == instance) into.push_back(id);
  for (uint64_t id : into) {
    Request& r = *transfers_.at(id).request;
    cancel_transfer(id);
    r.transfer_wait_deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(options_.kv_transfer_timeout_s));
  }
  // Every request whose KV it held starts over elsewhere, oldest first: admitted, queued, and
  // prefilled ones waiting to hand their KV over.
  std::vector<Request*> moving(inst.running.begin(), inst.running.end());
  moving.insert(moving.end(), inst.waiting.begin(), inst.waiting.end());
  for (Request* r : transferring_)
    if (r->instance == instance) moving.push_back(r);
  inst.alive = false;
  inst.running.clear();
  inst.waiting.clear();
  for (Request* r : moving) {
    if (r->transfer != 0) cancel_transfer(r->transfer);
    std::erase(transferring_, r);
  }
  kv_.release_instance(instance);  // its blocks went with it
  const std::string lost = fmt::format("{} was lost: {}", inst.spec.name, why.message());
  for (Request* r : moving) requeue_or_fail(*r, lost, outputs);
}

// ---- Disaggregation ------------------------------------------------------------------------

void Scheduler::report(const Request& r, std::vector<RequestOutput>* outputs) const {
  if (!outputs) return;
  RequestOutput o;
  o.id = r.id;
  o.state = r.state;
  o.finish_reason = r.finish_reason;
  o.error = r.error;
  outputs->push_back(std::move(o));
}

Scheduler::Transfer* Scheduler::reserve_transfer(Request& r, int64_t num_tokens) {
  // Decode instances by load; one accepts when it is alive, could hold the whole request, has
  // a sequence slot, and a dp group with room for the KV now.
  std::vector<InstanceLoad> loads(instances_.size());
  std::vector<int64_t> incoming(instances_.size(), 0);
  for (const auto& [id, t] : transfers_) ++incoming[static_cast<size_t>(t.dst_instance)];
  for (size_t i = 0; i < instances_.size(); ++i) {
    const Instance& inst = instances_[i];
    const int ii = static_cast<int>(i);
    InstanceLoad& l = loads[i];
    // Its own preempted sequences come first: no new hand-over while they wait.
    l.accepts = inst.alive && inst.spec.role == InstanceRole::kDecode && inst.waiting.empty() &&
                blocks_for(r, ii) <= kv_.num_blocks(ii) &&
                static_cast<int64_t>(inst.running.size()) + incoming[i] < options_.max_num_seqs;
    if (!l.accepts) continue;
    bool room = false;
    for (int g = 0; g < kv_.num_groups(ii); ++g)
      room = room || kv_.pool(ii, g).blocks_for(num_tokens) <= kv_.pool(ii, g).num_free_blocks();
    l.accepts = room;
    for (const Request* w : inst.waiting) l.queued_tokens += w->num_uncached();
    l.running = static_cast<int64_t>(inst.running.size()) + incoming[i];
    l.free_blocks = kv_.num_free_blocks(ii);
    l.total_blocks = std::max<int64_t>(1, kv_.num_blocks(ii) * kv_.num_groups(ii));
  }
  const int d = decode_router_.choose(loads);
  if (d < 0) return nullptr;
  int g = 0;
  for (int k = 1; k < kv_.num_groups(d); ++k)
    if (kv_.pool(d, k).num_free_blocks() > kv_.pool(d, g).num_free_blocks()) g = k;
  Transfer t;
  t.id = next_transfer_++;
  t.request = &r;
  t.src_instance = r.instance;
  t.src_group = r.kv_group;
  t.src_seq = r.seq_id;
  t.dst_instance = d;
  t.dst_group = g;
  t.dst_seq = next_seq_id_++;
  t.num_tokens = num_tokens;
  const std::vector<int32_t> tokens(r.tokens.begin(), r.tokens.begin() + num_tokens);
  auto seq = kv_.append(d, g, t.dst_seq, tokens, nullptr);
  SW_CHECK_MSG(seq.ok(), "request {}: decode blocks counted free are not: {}", r.id,
               seq.status().message());
  KvAction expect;
  expect.kind = KvAction::Kind::kExpect;
  expect.instance = d;
  expect.recv.transfer = t.id;
  expect.recv.dp_group = g;
  expect.recv.seq_id = t.dst_seq;
  expect.recv.blocks = seq->block_table;
  expect.recv.num_tokens = num_tokens;
  expect.recv.src_pool = instances_[r.instance].spec.pool;
  expect.recv.dst_pool = instances_[d].spec.pool;
  expect.recv.timeout_s = options_.kv_transfer_timeout_s;
  kv_actions_.push_back(std::move(expect));
  r.transfer = t.id;
  spdlog::debug("request {}: KV transfer {} of {} tokens from {} dp {} to {} dp {}", r.id, t.id,
                num_tokens, instances_[t.src_instance].spec.name, t.src_group,
                instances_[d].spec.name, g);
  return &transfers_.emplace(t.id, t).first->second;
}

worker::KvSendOrder Scheduler::send_order(const Transfer& t,
                                          const std::vector<int32_t>& src_blocks) const {
  worker::KvSendOrder o;
  o.transfer = t.id;
  o.dp_group = t.src_group;
  o.seq_id = t.src_seq;
  const int bs = kv_.block_size(t.src_instance);
  o.blocks.assign(src_blocks.begin(),
                  src_blocks.begin() + std::min<int64_t>(static_cast<int64_t>(src_blocks.size()),
                                                         (t.num_tokens + bs - 1) / bs));
  o.num_tokens = t.num_tokens;
  o.src_pool = instances_[t.src_instance].spec.pool;
  o.dst_pool = instances_[t.dst_instance].spec.pool;
  o.dst_instance = t.dst_instance;
  o.dst_group = t.dst_group;
  o.timeout_s = options_.kv_transfer_timeout_s;
  return o;
}

void Scheduler::cancel_transfer(uint64_t id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  const Transfer& t = it->second;
  for (int inst : {t.src_instance, t.dst_instance}) {
    if (!instances_[inst].alive) continue;
    KvAction a;
    a.kind = KvAction::Kind::kCancel;
    a.instance = inst;
    a.transfer = id;
    kv_actions_.push_back(a);
  }
  if (instances_[t.dst_instance].alive) {
    Status st = kv_.free(t.dst_instance, t.dst_group, t.dst_seq);
    SW_CHECK_MSG(st.ok(), "transfer {}: {}", id, st.message());
  }
  if (t.request->transfer == id) t.request->transfer = 0;
  transfers_.erase(it);
}

void Scheduler::finalize_transfer(Transfer& t) {
  Request& r = *t.request;
  // Acknowledged: now the prefill side may let the blocks go.
  Status st = kv_.free(t.src_instance, t.src_group, t.src_seq);
  SW_CHECK_MSG(st.ok(), "request {}: {}", r.id, st.message());
  std::erase(transferring_, &r);
  r.prefill_instance = t.src_instance;
  r.instance = t.dst_instance;
  r.kv_group = t.dst_group;
  r.seq_id = t.dst_seq;
  r.num_cached = t.num_tokens;
  SW_CHECK_MSG(r.is_decode_ready(), "request {}: {} tokens moved for {} held", r.id, t.num_tokens,
               r.tokens.size());
  r.kv_bytes = t.event.bytes;
  const int64_t span = t.event.done_us - t.event.first_part_us;
  r.kv_transfer_ms = static_cast<double>(span) / 1000.0;
  r.kv_hidden_share =
      span > 0 ? std::clamp(static_cast<double>(r.prefill_done_us - t.event.first_part_us) /
                                static_cast<double>(span),
                            0.0, 1.0)
               : 1.0;
  ++stats_.kv_transfers;
  stats_.kv_bytes += t.event.bytes;
  r.transfer = 0;
  const std::string to = instances_[t.dst_instance].spec.name;
  transfers_.erase(t.id);
  instances_[r.instance].running.push_back(&r);
  transition(r, RequestState::kDecoding, fmt::format("KV on {}", to).c_str());
}

void Scheduler::on_kv_event(int instance, const KvTransferEvent& e,
                            std::vector<RequestOutput>* outputs) {
  auto it = transfers_.find(e.transfer);
  if (it == transfers_.end() || it->second.dst_instance != instance) return;  // cancelled
  Transfer& t = it->second;
  if (!e.status.ok()) {
    Request& r = *t.request;
    transfer_failed(
        r,
        fmt::format("KV transfer {} from {} to {}: {}", t.id, instances_[t.src_instance].spec.name,
                    instances_[t.dst_instance].spec.name, e.status.message()),
        outputs);
    return;
  }
  t.dst_done = true;
  t.event = e;
  if (t.src_done) finalize_transfer(t);
}

void Scheduler::requeue_or_fail(Request& r, const std::string& why,
                                std::vector<RequestOutput>* outputs) {
  r.kv_group = -1;
  r.seq_id = -1;
  r.num_cached = 0;
  r.instance = -1;
  const int to = router_.choose(loads(r));
  if (to < 0) {
    end(r, RequestState::kFailed, FinishReason::kError,
        fmt::format("{}; no other instance can take the request", why));
    report(r, outputs);
    return;
  }
  r.instance = to;
  instances_[to].waiting.push_back(&r);
  ++r.num_preemptions;
  ++stats_.num_preemptions;
  transition(r, RequestState::kQueued,
             fmt::format("{}: recomputed on {}", why, instances_[to].spec.name).c_str());
}

void Scheduler::transfer_failed(Request& r, const std::string& why,
                                std::vector<RequestOutput>* outputs) {
  ++stats_.kv_transfer_failures;
  spdlog::warn("request {}: {}", r.id, why);
  if (options_.on_transfer_failure == TransferFailurePolicy::kFail) {
    end(r, RequestState::kFailed, FinishReason::kError, why);  // frees both sides
    report(r, outputs);
    return;
  }
  release_placement(r);  // both sides' blocks; the request starts over on a prefill instance
  requeue_or_fail(r, why, outputs);
}

void Scheduler::advance_transfers(Clock::time_point now, std::vector<RequestOutput>* outputs) {
  const auto timeout = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(options_.kv_transfer_timeout_s));
  // Finished prefills still waiting for decode room, oldest first.
  for (Request* r : std::vector<Request*>(transferring_)) {
    if (r->transfer != 0) continue;
    if (now > r->transfer_wait_deadline) {
      transfer_failed(*r,
                      fmt::format("no decode instance had room for the KV of {} tokens within "
                                  "{:.1f} s (cluster.kv_transfer_timeout_s)",
                                  r->num_cached, options_.kv_transfer_timeout_s),
                      outputs);
      continue;
    }
    Transfer* t = reserve_transfer(*r, r->num_cached);
    if (!t) break;  // first come first served: the next ones wait too
    t->src_done = true;
    t->deadline = now + timeout;
    KvAction send;
    send.kind = KvAction::Kind::kSend;
    send.instance = t->src_instance;
    send.send = send_order(*t, kv_.pool(t->src_instance, t->src_group).block_table(t->src_seq));
    kv_actions_.push_back(std::move(send));
  }
  std::vector<uint64_t> late;
  for (const auto& [id, t] : transfers_)
    if (now > t.deadline && t.src_done) late.push_back(id);
  for (uint64_t id : late) {
    Transfer& t = transfers_.at(id);
    const std::string missing = kv_missing_ ? kv_missing_(t.dst_instance, id) : "";
    transfer_failed(
        *t.request,
        fmt::format("KV transfer {} from {} to {} was not acknowledged within {:.1f} s "
                    "(cluster.kv_transfer_timeout_s){}{}",
                    id, instances_[t.src_instance].spec.name, instances_[t.dst_instance].spec.name,
                    options_.kv_transfer_timeout_s,
                    missing.empty() ? "" : "; ranks that did not answer: ", missing),
        outputs);
  }
}

}  // namespace sw::coordinator

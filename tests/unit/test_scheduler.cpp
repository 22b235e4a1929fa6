// The engine and its scheduler without a model: SimulatedExecutor instances (a fake model over
// a simulated KV cache that checks every block table) record each step, so the scheduler's
// choices are asserted exactly — chunk sizes, admission order, which sequence is preempted and
// how often, each policy's batch, where the router sends a request — and every request's
// tokens are checked against the fake model's chain from its prompt, computed here without
// any scheduler. Scenarios are worked out by hand in the comments.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "coordinator/engine.h"
#include "coordinator/simulated_executor.h"
#include "sim_engine_util.h"

namespace sw::coordinator {
namespace {

InstanceSpec instance(int64_t blocks, int block_size = 4, int groups = 1,
                      InstanceRole role = InstanceRole::kMixed) {
  InstanceSpec s;
  s.num_kv_blocks = blocks;
  s.kv_block_size = block_size;
  s.num_kv_groups = groups;
  s.role = role;
  s.pool = role == InstanceRole::kDecode ? 1 : 0;
  return s;
}
InstanceSpec prefill(int64_t blocks, int groups = 1) {
  return instance(blocks, 4, groups, InstanceRole::kPrefill);
}
InstanceSpec decode(int64_t blocks, int groups = 1) {
  return instance(blocks, 4, groups, InstanceRole::kDecode);
}

SchedulerOptions options(int64_t budget, int max_seqs = 256,
                         SchedulerPolicyKind policy = SchedulerPolicyKind::kDecodePriority,
                         int64_t threshold = 0) {
  SchedulerOptions o;
  o.max_num_batched_tokens = budget;
  o.max_num_seqs = max_seqs;
  o.policy = policy;
  o.long_prefill_token_threshold = threshold;
  return o;
}

struct Harness {
  SimulatedModel model;
  SimulatedKvNetwork network;  // carries KV between prefill and decode instances
  std::unique_ptr<Engine> engine;
  std::vector<SimulatedExecutor*> sims;

  Harness(SchedulerOptions options, std::vector<InstanceSpec> instances, std::vector<int> eos = {},
          SimulatedModel m = hashed_model())
      : model(std::move(m)) {
    EngineOptions eo;
    eo.scheduler = options;
    engine = std::make_unique<Engine>(fake_model(eos), eo);
    for (const InstanceSpec& spec : instances) {
      auto sim = std::make_unique<SimulatedExecutor>(spec.num_kv_groups, spec.num_kv_blocks,
                                                     spec.kv_block_size, model, SimulatedTiming{},
                                                     &network);
      sims.push_back(sim.get());
      engine->add_instance(spec, std::move(sim));
    }
  }
  int64_t add(std::vector<int32_t> prompt_ids, int64_t max_new, bool ignore_eos = true) {
    RequestSpec r;
    r.prompt_ids = std::move(prompt_ids);
    r.max_new_tokens = max_new;
    r.ignore_eos = ignore_eos;
    auto id = engine->add(r);
    EXPECT_TRUE(id.ok()) << id.status().to_string();
    return id.ok() ? *id : -1;
  }
  // One engine iteration that never waits: commits the step in flight, submits the next.
  std::vector<RequestOutput> step() {
    auto out = engine->step(0);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? *out : std::vector<RequestOutput>{};
  }
  void run_to_end(int max_steps = 100000) {
    for (int i = 0; i < max_steps && (engine->has_unfinished() || engine->busy()); ++i) step();
    ASSERT_FALSE(engine->has_unfinished()) << "requests left after " << max_steps << " steps";
  }
  const Request& req(int64_t id) { return *engine->request(id); }
  RequestState state(int64_t id) { return req(id).state; }
  const std::vector<worker::StepCommand>& history(int i = 0) { return sims[i]->history(); }
  const std::vector<worker::StepSequence>& last_seqs(int i = 0) {
    return history(i).back().groups[0].seqs;
  }
  bool all_free() {
    return engine->scheduler().kv().all_free() && engine->scheduler().kv().check_invariants().ok();
  }
};

// (tokens, start position, sample) of one scheduled sequence, for exact comparisons.
using Chunk = std::tuple<int64_t, int64_t, bool>;
Chunk chunk_of(const worker::StepSequence& s) {
  return {static_cast<int64_t>(s.tokens.size()), s.start_pos, s.sample};
}

// ---- lifecycle -----------------------------------------------------------------------------

TEST(EngineLifecycle, QueuedPrefillingInChunksDecodingFinished) {
  Harness h(options(4), {instance(100)});
  const auto p = prompt(10);
  const int64_t a = h.add(p, 3);
  EXPECT_EQ(h.state(a), RequestState::kQueued);
  // Budget 4: the 10-token prompt goes as 4 + 4 + 2 (the last chunk samples), then 2 decodes.
  const std::vector<Chunk> want = {
      {4, 0, false}, {4, 4, false}, {2, 8, true}, {1, 10, true}, {1, 11, true}};
  const std::vector<RequestState> after = {RequestState::kPrefilling, RequestState::kPrefilling,
                                           RequestState::kPrefilling, RequestState::kDecoding,
                                           RequestState::kDecoding};
  for (size_t i = 0; i < want.size(); ++i) {
    h.step();  // commits step i - 1, submits step i
    SCOPED_TRACE("step " + std::to_string(i));
    ASSERT_EQ(h.history().size(), i + 1);
    EXPECT_EQ(chunk_of(h.last_seqs()[0]), want[i]);
    EXPECT_EQ(h.state(a), after[i]);
  }
  h.step();
  EXPECT_EQ(h.state(a), RequestState::kFinished);
  const Request& r = h.req(a);
  EXPECT_EQ(r.output_ids, expected_tokens(h.model, p, 3));
  EXPECT_EQ(r.finish_reason, FinishReason::kLength);
  EXPECT_EQ(r.token_times.size(), 3u);
  EXPECT_LE(r.arrival, r.first_token);
  EXPECT_LE(r.first_token, r.finished);
  EXPECT_TRUE(h.all_free());
}

TEST(EngineLifecycle, EosStopsUnlessIgnored) {
  // The fake model emits token 7 once the sequence holds 6 tokens: the third output.
  SimulatedModel m;
  m.vocab_size = kVocab;
  m.next_token = [](const std::vector<int32_t>& t) { return t.size() == 6 ? 7 : 40; };
  Harness h(options(64), {instance(64)}, {7}, m);
  const int64_t stops = h.add(prompt(4), 10, /*ignore_eos=*/false);
  const int64_t ignores = h.add(prompt(4, 1), 10, /*ignore_eos=*/true);
  h.run_to_end();
  EXPECT_EQ(h.req(stops).output_ids, (std::vector<int32_t>{40, 40, 7}));
  EXPECT_EQ(h.req(stops).finish_reason, FinishReason::kStop);
  EXPECT_EQ(h.req(ignores).output_ids.size(), 10u);
  EXPECT_EQ(h.req(ignores).finish_reason, FinishReason::kLength);
  EXPECT_TRUE(h.all_free());
}

// Abort in every state frees what the request held at once (its step may still be in flight),
// later steps leave it out, and the others still get exactly their tokens.
TEST(EngineLifecycle, AbortInEveryStateFreesEverything) {
  Harness h(options(4, /*max_seqs=*/2), {instance(40)});
  const int64_t prefilling = h.add(prompt(12, 1), 4);  // 3 chunks at budget 4
  const int64_t decoding = h.add(prompt(2, 2), 6);
  const int64_t queued = h.add(prompt(3, 3), 4);
  const int64_t survivor = h.add(prompt(5, 4), 5);
  h.step();  // step 1: `prefilling` takes the whole budget; the others wait
  ASSERT_EQ(h.state(prefilling), RequestState::kPrefilling);
  ASSERT_EQ(h.state(queued), RequestState::kQueued);
  ASSERT_TRUE(h.engine->abort(queued).ok());
  EXPECT_EQ(h.state(queued), RequestState::kAborted);
  const int64_t prefill_seq = h.req(prefilling).seq_id;
  ASSERT_TRUE(h.engine->abort(prefilling).ok());  // its step is still in flight
  EXPECT_EQ(h.state(prefilling), RequestState::kAborted);
  EXPECT_EQ(h.engine->scheduler().kv().num_free_blocks(0), 40) << "blocks freed at once";
  while (h.state(decoding) != RequestState::kDecoding) h.step();
  const int64_t decode_seq = h.req(decoding).seq_id;
  const size_t steps_before = h.history().size();  // the last of these may hold it
  ASSERT_TRUE(h.engine->abort(decoding).ok());
  EXPECT_EQ(h.req(decoding).finish_reason, FinishReason::kAbort);
  EXPECT_TRUE(h.engine->abort(decoding).ok()) << "aborting an ended request changes nothing";
  EXPECT_EQ(h.state(decoding), RequestState::kAborted);
  EXPECT_EQ(h.engine->abort(12345).code(), StatusCode::kNotFound);
  h.run_to_end();
  EXPECT_EQ(h.state(survivor), RequestState::kFinished);
  EXPECT_EQ(h.req(survivor).output_ids, expected_tokens(h.model, prompt(5, 4), 5));
  for (size_t i = 1; i < h.history().size(); ++i)
    for (const auto& s : h.history()[i].groups[0].seqs) {
      EXPECT_NE(s.seq_id, prefill_seq) << "step " << i;
      if (i >= steps_before) {
        EXPECT_NE(s.seq_id, decode_seq) << "step " << i;
      }
    }
  EXPECT_TRUE(h.req(queued).output_ids.empty());
  EXPECT_TRUE(h.all_free());
  h.engine->release(queued);
  EXPECT_EQ(h.engine->request(queued), nullptr);
}

TEST(EngineLifecycle, RequestsThatCanNeverRunAreRejectedAndNothingIsKept) {
  Harness h(options(16), {instance(4)});  // 16 tokens of KV
  RequestSpec r;
  r.prompt_ids = prompt(10);
  r.max_new_tokens = 7;  // 17 tokens: 5 blocks
  auto too_big = h.engine->add(r);
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.status().message().find("needs 5 KV blocks of 4 tokens for 17 tokens, but "
                                            "the largest KV pool has 4"),
            std::string::npos)
      << too_big.status().message();
  r.max_new_tokens = 2;
  r.prompt_ids = {1, static_cast<int32_t>(kVocab)};
  EXPECT_NE(h.engine->add(r).status().message().find("token id 500 is outside the vocabulary"),
            std::string::npos);
  r.prompt_ids = {};
  EXPECT_NE(h.engine->add(r).status().message().find("empty prompt"), std::string::npos);
  r.prompt_ids = {1};
  r.sampling.top_p = 0;
  EXPECT_NE(h.engine->add(r).status().message().find("top_p must be in (0, 1]"), std::string::npos);
  EXPECT_FALSE(h.engine->has_unfinished());
  EXPECT_TRUE(h.history().empty());
}

// Requests added while others run join the next step: continuous batching across arrivals.
TEST(EngineLifecycle, ArrivalsJoinTheRunningBatch) {
  Harness h(options(64), {instance(100)});
  const int64_t a = h.add(prompt(6, 1), 20);
  h.step();
  h.step();  // a decodes
  ASSERT_EQ(h.state(a), RequestState::kDecoding);
  const int64_t b = h.add(prompt(9, 2), 3);
  h.step();  // commits a's decode, submits a's next decode with b's prompt
  const auto& seqs = h.last_seqs();
  ASSERT_EQ(seqs.size(), 2u);
  EXPECT_EQ(chunk_of(seqs[0]), (Chunk{1, 7, true}));  // a: decode at position 7
  EXPECT_EQ(chunk_of(seqs[1]), (Chunk{9, 0, true}));  // b: its whole prompt
  h.run_to_end();
  EXPECT_EQ(h.req(a).output_ids, expected_tokens(h.model, prompt(6, 1), 20));
  EXPECT_EQ(h.req(b).output_ids, expected_tokens(h.model, prompt(9, 2), 3));
}

// ---- preemption ----------------------------------------------------------------------------

// Three requests of 4 prompt tokens and 8 new ones need 3 blocks of 4 each; the cache has 7.
// Step 1 admits all three (1 block each), step 2 gives each its second block (1 free), steps
// 3-5 stay inside those blocks, and step 6 needs a third block for each with 1 free: A takes
// it, B finds none, so the youngest — C — is preempted (an oldest-first victim would be A).
// C waits until A and B finish (step 8), then is recomputed from its prompt and its 5 tokens
// (9 tokens, 3 blocks) and decodes twice more: 11 steps, exactly one preemption, of C.
TEST(EnginePreemption, TheYoungestSequenceIsPreemptedAndRecomputed) {
  for (auto policy : {SchedulerPolicyKind::kDecodePriority, SchedulerPolicyKind::kFcfs}) {
    SCOPED_TRACE(scheduler_policy_name(policy));
    Harness h(options(64, 256, policy), {instance(7)});
    const int64_t a = h.add(prompt(4, 1), 8), b = h.add(prompt(4, 2), 8),
                  c = h.add(prompt(4, 3), 8);
    h.run_to_end();
    EXPECT_EQ(h.req(a).num_preemptions, 0);
    EXPECT_EQ(h.req(b).num_preemptions, 0);
    EXPECT_EQ(h.req(c).num_preemptions, 1);
    for (int64_t id : {a, b, c})
      EXPECT_EQ(h.req(id).output_ids, expected_tokens(h.model, h.req(id).spec.prompt_ids, 8))
          << "request " << id;
    ASSERT_EQ(h.history().size(), 11u);
    EXPECT_EQ(h.history()[5].groups[0].seqs.size(), 2u) << "step 6 runs A and B only";
    const auto& recompute = h.history()[8].groups[0].seqs;
    ASSERT_EQ(recompute.size(), 1u);
    EXPECT_EQ(chunk_of(recompute[0]), (Chunk{9, 0, true})) << "C recomputes 4 + 5 tokens";
    EXPECT_EQ(h.engine->scheduler().stats().num_preemptions, 1);
    EXPECT_TRUE(h.all_free());
  }
}

// Two sequences of 8 prompt tokens in 5 blocks of 4: both admitted (2 blocks each, 1 free);
// at the first decode both need a third block: A gets it, B (the youngest) is preempted, and
// B is admitted again only when its whole recompute (9 tokens, 3 blocks) fits, after A ends
// (a partial re-admission would be preempted again at once).
TEST(EnginePreemption, ARecomputeWaitsUntilItsWholeChunkFits) {
  Harness h(options(16), {instance(5)});
  const int64_t a = h.add(prompt(8, 1), 4), b = h.add(prompt(8, 2), 4);
  h.run_to_end();
  EXPECT_EQ(h.req(a).num_preemptions, 0);
  EXPECT_EQ(h.req(b).num_preemptions, 1) << "no thrash: one preemption only";
  std::vector<size_t> batch_sizes;
  for (const auto& c : h.history()) batch_sizes.push_back(c.groups[0].seqs.size());
  EXPECT_EQ(batch_sizes, (std::vector<size_t>{2, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(h.req(b).output_ids, expected_tokens(h.model, prompt(8, 2), 4));
}

// ---- policies ------------------------------------------------------------------------------

TEST(EnginePolicy, OrderOfAnInstancesSequences) {
  Request d1, p1, d2, p2;
  for (Request* r : {&d1, &p1, &d2, &p2}) r->tokens = {1, 2, 3};
  d1.state = d2.state = RequestState::kDecoding;
  p1.state = p2.state = RequestState::kPrefilling;
  p2.num_cached = 2;  // its last prompt token left: still a prefill
  const std::vector<Request*> running = {&p1, &d1, &p2, &d2};  // admission order
  EXPECT_EQ(make_scheduler_policy(SchedulerPolicyKind::kFcfs)->order(running), running);
  EXPECT_EQ(make_scheduler_policy(SchedulerPolicyKind::kDecodePriority)->order(running),
            (std::vector<Request*>{&d1, &d2, &p1, &p2}));
  EXPECT_EQ(parse_scheduler_policy("fcfs").value(), SchedulerPolicyKind::kFcfs);
  EXPECT_FALSE(parse_scheduler_policy("lifo").ok());
}

// Blocks of 4 tokens, 6 of them; budget 7, chunks of at most 5 tokens. A (22-token prompt)
// is admitted first with [0, 5) (2 blocks), B (2 tokens) with [0, 2) (1 block) and samples.
// Steps 2 and 3: B decodes positions 2 and 3 inside its block; A takes [5, 10) and [10, 15),
// one new block each: 5 of 6 blocks used. Step 4: A's [15, 20) needs a new block, and so does
// B's decode of position 4; 1 block is free.
//   decode_priority: B decodes first and takes it; A's chunk shrinks to the one token left in
//     its last block: [B: 1 token at 4, A: 1 token at 15], nobody preempted.
//   fcfs: A (the oldest) takes the block for [15, 20); B finds none and, being the youngest,
//     is preempted. That frees B's block, which takes B's recompute back in with the 2 tokens
//     of budget left: [A: 5 tokens at 15, B: 2 tokens at 0].
TEST(EnginePolicy, DecodesOrTheOldestGetTheLastBlock) {
  for (auto policy : {SchedulerPolicyKind::kDecodePriority, SchedulerPolicyKind::kFcfs}) {
    SCOPED_TRACE(scheduler_policy_name(policy));
    Harness h(options(7, 256, policy, 5), {instance(6)});
    const int64_t a = h.add(prompt(22, 1), 2);
    const int64_t b = h.add(prompt(2, 2), 10);
    for (int i = 0; i < 4; ++i) h.step();
    ASSERT_EQ(h.history().size(), 4u);
    EXPECT_EQ(h.history()[0].groups[0].seqs.size(), 2u);
    std::vector<Chunk> step4;
    for (const auto& s : h.last_seqs()) step4.push_back(chunk_of(s));
    if (policy == SchedulerPolicyKind::kDecodePriority) {
      EXPECT_EQ(step4, (std::vector<Chunk>{{1, 4, true}, {1, 15, false}}));
      EXPECT_EQ(h.req(b).num_preemptions, 0);
    } else {
      EXPECT_EQ(step4, (std::vector<Chunk>{{5, 15, false}, {2, 0, false}}));
      EXPECT_EQ(h.req(b).num_preemptions, 1);
      EXPECT_EQ(h.state(b), RequestState::kPrefilling);
    }
    h.run_to_end();
    EXPECT_EQ(h.req(a).output_ids, expected_tokens(h.model, prompt(22, 1), 2));
    EXPECT_EQ(h.req(b).output_ids, expected_tokens(h.model, prompt(2, 2), 10));
    EXPECT_TRUE(h.all_free());
  }
}

// Chunk sizes under a step budget and a per-prompt cap, and first-come-first-served admission:
// budget 8, chunks of at most 3. A (7 tokens), B (5), C (1) arrive in that order.
//   step 1: A 3, B 3, then C's whole 1-token prompt fits the 2 left (and samples).
//   step 2: C decodes first, then A 3 (6 of 7) and B 2 (done, samples).
//   step 3: the decoders B and C (admission order), then A's last token (samples).
TEST(EnginePolicy, ChunkSizesFollowTheBudgetAndTheCap) {
  Harness h(options(8, 256, SchedulerPolicyKind::kDecodePriority, 3), {instance(100)});
  const int64_t a = h.add(prompt(7, 1), 2), b = h.add(prompt(5, 2), 2), c = h.add(prompt(1, 3), 3);
  std::map<int64_t, int64_t> seq_to_req;
  std::vector<std::vector<std::pair<int64_t, Chunk>>> got;
  for (int i = 0; i < 3; ++i) {
    h.step();
    for (int64_t id : {a, b, c}) seq_to_req[h.req(id).seq_id] = id;
    std::vector<std::pair<int64_t, Chunk>> step;
    for (const auto& s : h.last_seqs()) step.emplace_back(seq_to_req.at(s.seq_id), chunk_of(s));
    got.push_back(step);
  }
  using P = std::pair<int64_t, Chunk>;
  EXPECT_EQ(got[0], (std::vector<P>{{a, {3, 0, false}}, {b, {3, 0, false}}, {c, {1, 0, true}}}));
  EXPECT_EQ(got[1], (std::vector<P>{{c, {1, 1, true}}, {a, {3, 3, false}}, {b, {2, 3, true}}}));
  EXPECT_EQ(got[2], (std::vector<P>{{b, {1, 5, true}}, {c, {1, 2, true}}, {a, {1, 6, true}}}));
  h.run_to_end();
  EXPECT_EQ(h.req(c).output_ids, expected_tokens(h.model, prompt(1, 3), 3));
}

// ---- several instances -------------------------------------------------------------------

TEST(EngineRouter, LeastQueuedTokensThenFewestRunningThenRoundRobin) {
  Harness h(options(64), {instance(100), instance(100), instance(100)});
  // Empty instances tie: round robin from instance 0.
  const int64_t r1 = h.add(prompt(10), 2);  // -> 0 (queued tokens 10, 0, 0)
  const int64_t r2 = h.add(prompt(5), 2);   // -> 1 (ties 1 and 2: the one after 0)
  const int64_t r3 = h.add(prompt(5), 2);   // -> 2 (queued 10, 5, 0)
  const int64_t r4 = h.add(prompt(1), 2);   // -> 1 (queued 10, 5, 5: first of equals after 2)
  EXPECT_EQ(h.req(r1).instance, 0);
  EXPECT_EQ(h.req(r2).instance, 1);
  EXPECT_EQ(h.req(r3).instance, 2);
  EXPECT_EQ(h.req(r4).instance, 1);
  h.step();                                // everything admitted: no queued tokens; running 1, 2, 1
  const int64_t r5 = h.add(prompt(3), 2);  // fewest running: 0 or 2 -> round robin after 1: 2
  EXPECT_EQ(h.req(r5).instance, 2);
  const int64_t r6 = h.add(prompt(3), 2);  // queued 0, 0, 3 -> running 1, 2 -> 0
  EXPECT_EQ(h.req(r6).instance, 0);
  h.run_to_end();
  for (int64_t id : {r1, r2, r3, r4, r5, r6})
    EXPECT_EQ(h.req(id).output_ids, expected_tokens(h.model, h.req(id).spec.prompt_ids, 2));
}

TEST(EngineRouter, AnInstanceTooSmallForTheRequestIsPassedOver) {
  Harness h(options(64), {instance(2), instance(100)});  // instance 0: 8 tokens of KV
  const int64_t small = h.add(prompt(3), 1);             // fits both: -> 0
  const int64_t big = h.add(prompt(10), 2);              // 12 tokens: only instance 1 holds it
  const int64_t next = h.add(prompt(1), 1);              // queued 3 vs 10 -> 0
  EXPECT_EQ(h.req(small).instance, 0);
  EXPECT_EQ(h.req(big).instance, 1);
  EXPECT_EQ(h.req(next).instance, 0);
  h.run_to_end();
  EXPECT_TRUE(h.all_free());
}

// A lost instance's requests are recomputed on the others; with none left they fail with the
// reason. The engine keeps serving and says which instance it lost.
TEST(EngineRouter, ALostInstancesRequestsMoveToTheOthers) {
  Harness h(options(64), {instance(100), instance(100)});
  h.sims[0]->fail_next_step(unavailable("worker rank(s) [3] lost: no heartbeat for 3.0 s"));
  const int64_t a = h.add(prompt(6, 1), 4);  // -> 0, whose first step fails
  const int64_t b = h.add(prompt(6, 2), 4);  // -> 1
  h.run_to_end();
  EXPECT_EQ(h.req(a).instance, 1);
  EXPECT_EQ(h.req(a).num_preemptions, 1);
  EXPECT_EQ(h.req(a).output_ids, expected_tokens(h.model, prompt(6, 1), 4));
  EXPECT_EQ(h.req(b).output_ids, expected_tokens(h.model, prompt(6, 2), 4));
  EXPECT_FALSE(h.engine->health().ok());
  EXPECT_NE(h.engine->health().message().find("instance 0"), std::string::npos);
  EXPECT_NE(h.engine->health().message().find("rank(s) [3] lost"), std::string::npos);
  EXPECT_FALSE(h.engine->scheduler().instance_alive(0));
  const int64_t c = h.add(prompt(2), 1);  // new requests avoid the lost instance
  EXPECT_EQ(h.req(c).instance, 1);
  h.run_to_end();

  Harness alone(options(64), {instance(100)});
  alone.sims[0]->fail_next_step(unavailable("rank 1 failed: boom"));
  const int64_t d = alone.add(prompt(3), 2);
  alone.run_to_end();
  EXPECT_EQ(alone.state(d), RequestState::kFailed);
  EXPECT_EQ(alone.req(d).finish_reason, FinishReason::kError);
  EXPECT_NE(alone.req(d).error.find("no other instance can take the request"), std::string::npos);
  EXPECT_NE(alone.req(d).error.find("rank 1 failed: boom"), std::string::npos);
  EXPECT_FALSE(alone.engine->add(RequestSpec{{1}, 1, {}, false, false}).ok());
}

// ---- load ----------------------------------------------------------------------------------

// 1000 requests of random lengths (some longer than a chunk) arrive over time at two
// instances of two dp groups each, whose KV pools are small enough to force preemption.
// Every request ends with exactly its tokens — streamed once each, none lost or duplicated —
// and every pool is empty at the end.
TEST(EngineLoad, ThousandRequestsArrivingOverTimeThroughTightPools) {
  Harness h(options(48, 24, SchedulerPolicyKind::kDecodePriority, 24),
            {instance(24, 4, 2), instance(24, 4, 2)});
  std::mt19937 rng(2026);
  std::uniform_int_distribution<int> prompt_len(1, 60), new_len(1, 30);
  std::poisson_distribution<int> arrivals(1.2);
  std::map<int64_t, std::vector<int32_t>> streamed;
  std::map<int64_t, int> finished_reports;
  std::vector<int64_t> ids;
  auto consume = [&](const std::vector<RequestOutput>& outs) {
    for (const RequestOutput& o : outs) {
      auto& s = streamed[o.id];
      s.insert(s.end(), o.new_tokens.begin(), o.new_tokens.end());
      if (o.finished()) ++finished_reports[o.id];
    }
  };
  int added = 0;
  while (added < 1000 || h.engine->has_unfinished() || h.engine->busy()) {
    for (int n = added < 1000 ? arrivals(rng) : 0; n > 0 && added < 1000; --n, ++added)
      ids.push_back(h.add(prompt(prompt_len(rng), added), new_len(rng)));
    consume(h.step());
  }
  ASSERT_EQ(ids.size(), 1000u);
  int64_t preempted = 0;
  for (int64_t id : ids) {
    const Request& r = h.req(id);
    ASSERT_EQ(r.state, RequestState::kFinished) << "request " << id;
    ASSERT_EQ(r.output_ids, expected_tokens(h.model, r.spec.prompt_ids, r.spec.max_new_tokens))
        << "request " << id;
    EXPECT_EQ(streamed[id], r.output_ids) << "request " << id;
    EXPECT_EQ(finished_reports[id], 1) << "request " << id;
    preempted += r.num_preemptions;
  }
  EXPECT_GT(preempted, 10) << "the pools were meant to be tight";
  EXPECT_GT(h.history(0).size(), 50u);
  EXPECT_GT(h.history(1).size(), 50u);
  EXPECT_TRUE(h.all_free());
}

// ---- disaggregation ------------------------------------------------------------------------

SchedulerOptions disagg(int64_t budget, double timeout_s = 30,
                        TransferFailurePolicy policy = TransferFailurePolicy::kRecompute) {
  SchedulerOptions o = options(budget);
  o.kv_transfer_timeout_s = timeout_s;
  o.on_transfer_failure = policy;
  return o;
}

// queued -> prefilling (prefill instance) -> transferring (KV leaves with the prefill step;
// the prefill blocks stay held until the decode side has everything) -> decoding (decode
// instance, its own blocks) -> finished.
TEST(EngineDisaggregation, ARequestPassesThroughTransferring) {
  Harness h(disagg(64), {prefill(100), decode(100)});
  h.network.stall_next(1, 0.05);  // long enough to see `transferring`
  const int64_t a = h.add(prompt(6, 1), 4);
  h.step();
  EXPECT_EQ(h.state(a), RequestState::kPrefilling);
  EXPECT_EQ(h.req(a).instance, 0);
  ASSERT_EQ(h.history(0).size(), 1u);
  ASSERT_EQ(h.history(0)[0].kv_sends.size(), 1u) << "the KV leaves with the prefill step";
  EXPECT_EQ(h.history(0)[0].kv_sends[0].num_tokens, 6);
  h.step();
  EXPECT_EQ(h.state(a), RequestState::kTransferring);
  EXPECT_EQ(h.req(a).output_ids.size(), 1u) << "the first token comes from the prefill";
  EXPECT_LT(h.engine->scheduler().kv().num_free_blocks(0), 100) << "prefill blocks held";
  EXPECT_LT(h.engine->scheduler().kv().num_free_blocks(1), 100) << "decode blocks reserved";
  while (h.state(a) == RequestState::kTransferring) h.step();
  EXPECT_EQ(h.state(a), RequestState::kDecoding);
  EXPECT_EQ(h.req(a).instance, 1);
  EXPECT_EQ(h.engine->scheduler().kv().num_free_blocks(0), 100) << "freed after the ack";
  h.run_to_end();
  EXPECT_EQ(h.state(a), RequestState::kFinished);
  EXPECT_EQ(h.req(a).output_ids, expected_tokens(h.model, prompt(6, 1), 4));
  EXPECT_GT(h.req(a).kv_bytes, 0);
  EXPECT_EQ(h.engine->scheduler().stats().kv_transfers, 1);
  EXPECT_EQ(h.history(0).size(), 1u) << "the prefill instance ran the prefill only";
  for (const auto& c : h.history(1)) EXPECT_TRUE(c.kv_sends.empty());
  EXPECT_TRUE(h.all_free());
}

// The decode pool holds one of the two requests at a time (3 blocks of 4; each needs 2 for its
// prompt and 3 in all): B's prefill finishes, B waits in `transferring` with its prefill blocks
// held, and its KV is sent on its own (not within a step) once A has finished.
TEST(EngineDisaggregation, NoDecodeRoomWaitsInTransferringThenSendsAlone) {
  Harness h(disagg(64), {prefill(100), decode(3)});
  const int64_t a = h.add(prompt(6, 1), 4), b = h.add(prompt(6, 2), 4);
  h.step();
  ASSERT_EQ(h.history(0).back().kv_sends.size(), 1u) << "room for A's KV only";
  h.step();
  EXPECT_EQ(h.state(a), RequestState::kDecoding);
  EXPECT_EQ(h.state(b), RequestState::kTransferring);
  bool b_waited_while_a_decoded = false;
  while (h.state(b) == RequestState::kTransferring) {
    b_waited_while_a_decoded |= h.state(a) == RequestState::kDecoding;
    h.step();
  }
  EXPECT_TRUE(b_waited_while_a_decoded);
  EXPECT_EQ(h.state(a), RequestState::kFinished);
  h.run_to_end();
  EXPECT_EQ(h.history(0).size(), 1u) << "B's KV was sent by itself, not by a step";
  EXPECT_EQ(h.network.posted(), 2);
  EXPECT_EQ(h.req(a).output_ids, expected_tokens(h.model, prompt(6, 1), 4));
  EXPECT_EQ(h.req(b).output_ids, expected_tokens(h.model, prompt(6, 2), 4));
  EXPECT_TRUE(h.all_free());
}

// A stalled transfer past kv_transfer_timeout_s: under `fail` the request ends with an error
// naming both instances and the ranks that never answered, the others are served, and both
// sides' blocks are freed; under `recompute` it is prefilled again and gets its tokens.
TEST(EngineDisaggregation, AStalledTransferFailsOrIsRecomputedByPolicy) {
  for (auto policy : {TransferFailurePolicy::kFail, TransferFailurePolicy::kRecompute}) {
    SCOPED_TRACE(transfer_failure_policy_name(policy));
    Harness h(disagg(64, 0.2, policy), {prefill(100), decode(100)});
    h.network.stall_next(1, 30);
    const auto t0 = Clock::now();
    const int64_t a = h.add(prompt(5, 1), 3), b = h.add(prompt(7, 2), 3);
    while (h.engine->has_unfinished()) ASSERT_TRUE(h.engine->step(0.01).ok());
    const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
    EXPECT_GE(waited, 0.2);
    EXPECT_LT(waited, 5.0) << "bounded by the deadline, not the stall";
    EXPECT_EQ(h.req(b).output_ids, expected_tokens(h.model, prompt(7, 2), 3));
    EXPECT_EQ(h.engine->scheduler().stats().kv_transfer_failures, 1);
    if (policy == TransferFailurePolicy::kFail) {
      EXPECT_EQ(h.state(a), RequestState::kFailed);
      const std::string& e = h.req(a).error;
      EXPECT_NE(e.find("from instance 0 to instance 1 was not acknowledged within 0.2 s"),
                std::string::npos)
          << e;
      EXPECT_NE(e.find("ranks that did not answer: [simulated rank]"), std::string::npos) << e;
    } else {
      EXPECT_EQ(h.state(a), RequestState::kFinished);
      EXPECT_EQ(h.req(a).num_preemptions, 1);
      EXPECT_EQ(h.req(a).output_ids, expected_tokens(h.model, prompt(5, 1), 3));
    }
    EXPECT_TRUE(h.all_free());
  }
}

TEST(EngineDisaggregation, AbortInTransferringFreesBothSides) {
  Harness h(disagg(64), {prefill(50), decode(50)});
  h.network.stall_next(1, 30);
  const int64_t a = h.add(prompt(9, 1), 5);
  while (h.state(a) != RequestState::kTransferring) h.step();
  EXPECT_LT(h.engine->scheduler().kv().num_free_blocks(0), 50);
  EXPECT_LT(h.engine->scheduler().kv().num_free_blocks(1), 50);
  ASSERT_TRUE(h.engine->abort(a).ok());
  EXPECT_EQ(h.state(a), RequestState::kAborted);
  EXPECT_TRUE(h.all_free()) << "prefill and decode blocks freed at once";
  h.step();
  EXPECT_FALSE(h.engine->scheduler().transfers_pending());
  // A later request reuses the freed blocks and gets its tokens.
  const int64_t b = h.add(prompt(9, 2), 5);
  h.run_to_end();
  EXPECT_EQ(h.req(b).output_ids, expected_tokens(h.model, prompt(9, 2), 5));
}

// Decode instances preempt like any other when their blocks run out; the youngest recomputes
// there, and every request still gets its tokens.
TEST(EngineDisaggregation, DecodeSidePreemptionRecomputesOnTheDecodeInstance) {
  Harness h(disagg(64), {prefill(100), decode(7)});
  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(h.add(prompt(4, i), 8));
  h.run_to_end();
  int preempted = 0;
  for (int64_t id : ids) {
    EXPECT_EQ(h.req(id).output_ids, expected_tokens(h.model, h.req(id).spec.prompt_ids, 8));
    EXPECT_EQ(h.req(id).instance, 1);
    preempted += h.req(id).num_preemptions;
  }
  EXPECT_GT(preempted, 0);
  EXPECT_TRUE(h.all_free());
}

// A decode instance is lost while its request decodes: the request starts over (prefill
// again, transfer to the other decode instance) and gets its tokens.
TEST(EngineDisaggregation, ALostDecodeInstancesRequestsArePrefilledAgain) {
  Harness h(disagg(64), {prefill(100), decode(100), decode(100)});
  const int64_t a = h.add(prompt(5, 1), 6);
  while (h.state(a) != RequestState::kDecoding) h.step();
  const int first = h.req(a).instance;
  h.sims[static_cast<size_t>(first)]->fail_next_step(unavailable("rank 9 lost"));
  h.run_to_end();
  EXPECT_EQ(h.state(a), RequestState::kFinished);
  EXPECT_NE(h.req(a).instance, first);
  EXPECT_EQ(h.req(a).num_preemptions, 1);
  EXPECT_EQ(h.req(a).output_ids, expected_tokens(h.model, prompt(5, 1), 6));
  EXPECT_FALSE(h.engine->health().ok());
}

// 1000 requests over time through a prefill instance and two decode instances (dp 2 each)
// whose pools force preemption on the decode side: every request gets exactly its tokens.
TEST(EngineDisaggregation, ThousandRequestsThroughTightDecodePools) {
  Harness h(disagg(48), {prefill(96, 2), decode(24, 2), decode(24, 2)});
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> prompt_len(1, 60), new_len(1, 30);
  std::poisson_distribution<int> arrivals(1.0);
  std::vector<int64_t> ids;
  std::map<int64_t, std::vector<int32_t>> streamed;
  while (ids.size() < 1000 || h.engine->has_unfinished() || h.engine->busy()) {
    for (int n = ids.size() < 1000 ? arrivals(rng) : 0; n > 0 && ids.size() < 1000; --n)
      ids.push_back(h.add(prompt(prompt_len(rng), static_cast<int>(ids.size())), new_len(rng)));
    for (const RequestOutput& o : h.step())
      streamed[o.id].insert(streamed[o.id].end(), o.new_tokens.begin(), o.new_tokens.end());
  }
  int64_t preempted = 0, moved = 0;
  for (int64_t id : ids) {
    const Request& r = h.req(id);
    ASSERT_EQ(r.state, RequestState::kFinished) << "request " << id << ": " << r.error;
    ASSERT_EQ(r.output_ids, expected_tokens(h.model, r.spec.prompt_ids, r.spec.max_new_tokens))
        << "request " << id;
    EXPECT_EQ(streamed[id], r.output_ids);
    preempted += r.num_preemptions;
    moved += r.spec.max_new_tokens > 1 ? 1 : 0;
  }
  EXPECT_GT(preempted, 10);
  EXPECT_GE(h.engine->scheduler().stats().kv_transfers, moved);
  EXPECT_TRUE(h.all_free());
}

}  // namespace
}  // namespace sw::coordinator

// Request: one generation request inside the Engine — what the client asked (RequestSpec),
// where it lives (instance, dp group, KV sequence), what it produced, its state and its
// timestamps. Lifecycle (RequestState):
//
//   queued ──admit──▶ prefilling ──first token──▶ decoding ──eos / length──▶ finished
//     ▲                   │  (prefill pools: ──▶ transferring ──▶ decoding)     │
//     └──── preempted ────┴──────────────────────────────────────────┘
//   any non-terminal state ──abort──▶ aborted      ──instance lost, no other──▶ failed
//
// The Scheduler owns requests and makes every transition in one function each
// (coordinator/scheduler.cpp); each frees what the old state held and is logged at debug
// level with the request id.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/backend.h"

namespace sw::coordinator {

using Clock = std::chrono::steady_clock;

enum class RequestState {
  kQueued,        // waiting for admission (new, or preempted for recompute)
  kPrefilling,    // admitted: the prompt (and any tokens generated before a preemption) is
                  // being written to the KV cache, possibly in chunks over several steps
  kTransferring,  // disaggregation: KV blocks moving from a prefill to a decode instance
  kDecoding,      // one token per step
  kFinished,      // stopped by eos or max_new_tokens
  kFailed,        // rejected or lost with its instance: `error` says why
  kAborted,       // the client gave up
};
const char* request_state_name(RequestState s);
bool is_terminal(RequestState s);

enum class FinishReason { kNone, kLength, kStop, kAbort, kError };
// "length" | "stop" | "abort" | "error" (as vLLM and OpenAI name them); "" for kNone.
const char* finish_reason_name(FinishReason r);

// What a client asks for.
struct RequestSpec {
  std::vector<int32_t> prompt_ids;
  int64_t max_new_tokens = 16;
  kernels::SamplingRow sampling;  // offset is set per step (= tokens generated so far)
  bool ignore_eos = false;
  bool return_logits = false;  // float32 logits at every prompt position and decode step
};

// Sampling parameters and lengths a request may carry (independent of the model): temperature
// >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1. The error names the field.
Status validate_request_spec(const RequestSpec& spec);
// validate_request_spec, and the prompt's ids inside [0, vocab_size) with prompt +
// max_new_tokens <= max_model_len: what the engine checks on add() and what front ends check
// on their own threads before they hand a request over.
Status check_request_fits(const RequestSpec& spec, int64_t vocab_size, int64_t max_model_len);

struct Request {
  int64_t id = 0;
  RequestSpec spec;
  RequestState state = RequestState::kQueued;

  // Placement: the instance the router chose, and inside it (while admitted) the dp group and
  // the KV sequence. A preempted request gets a new sequence id when it is admitted again.
  int instance = -1;
  int kv_group = -1;
  int prefill_instance = -1;  // disaggregation: the prefill instance its KV came from
  int64_t seq_id = -1;

  std::vector<int32_t> tokens;  // prompt + generated: what the KV cache must hold
  int64_t num_cached = 0;       // leading tokens of `tokens` in the KV cache
  std::vector<int32_t> output_ids;
  int num_preemptions = 0;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;  // kFailed: why
  Tensor logits;      // float32 [prompt + generated - 1, V] when spec.return_logits

  // Disaggregation: the KV transfer under way (0: none), and when waiting for decode room ends.
  uint64_t transfer = 0;
  Clock::time_point transfer_wait_deadline;
  int64_t kv_bytes = 0;       // moved from the prefill to the decode instance
  double kv_transfer_ms = 0;  // first part arrived .. last part applied (decode side)
  // Share of that before the prefill step's output was in: the coordinator's wall clock
  // against the decode ranks', so across hosts it is only as good as their clock sync.
  double kv_hidden_share = 0;
  int64_t prefill_done_us = 0;  // wall clock when the prefill step's output was committed

  Clock::time_point arrival;                   // add()
  Clock::time_point admitted;                  // first admission (queue time: from arrival)
  Clock::time_point first_token;               // the first output token was committed
  Clock::time_point finished;                  // reached a terminal state
  std::vector<Clock::time_point> token_times;  // one per output token

  int64_t num_prompt() const { return static_cast<int64_t>(spec.prompt_ids.size()); }
  bool is_decoding() const { return state == RequestState::kDecoding; }
  // The prompt (and what was generated before a preemption) is cached; the last token is fed
  // one step at a time.
  bool is_decode_ready() const { return num_cached == static_cast<int64_t>(tokens.size()) - 1; }
  int64_t num_uncached() const { return static_cast<int64_t>(tokens.size()) - num_cached; }
};

// What a request produced since the last report (Engine::step returns these).
struct RequestOutput {
  int64_t id = 0;
  std::vector<int32_t> new_tokens;
  RequestState state = RequestState::kQueued;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;
  bool finished() const { return is_terminal(state); }
};

}  // namespace sw::coordinator

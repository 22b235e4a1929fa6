// Request state names and the model-independent checks of a request.
#include "coordinator/request.h"

#include <cmath>

namespace sw::coordinator {

const char* request_state_name(RequestState s) {
  switch (s) {
    case RequestState::kQueued: return "queued";
    case RequestState::kPrefilling: return "prefilling";
    case RequestState::kTransferring: return "transferring";
    case RequestState::kDecoding: return "decoding";
    case RequestState::kFinished: return "finished";
    case RequestState::kFailed: return "failed";
    case RequestState::kAborted: return "aborted";
  }
  return "?";
}

bool is_terminal(RequestState s) {
  return s == RequestState::kFinished || s == RequestState::kFailed || s == RequestState::kAborted;
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "?";
}

Status validate_request_spec(const RequestSpec& r) {
  if (r.prompt_ids.empty()) return invalid_argument("empty prompt");
  if (r.max_new_tokens < 1)
    return invalid_argument("max_new_tokens must be >= 1, got {}", r.max_new_tokens);
  const auto& s = r.sampling;
  if (!(std::isfinite(s.temperature) && s.temperature >= 0))
    return invalid_argument("temperature must be a finite number >= 0, got {}", s.temperature);
  if (!(s.top_p > 0 && s.top_p <= 1))
    return invalid_argument("top_p must be in (0, 1], got {}", s.top_p);
  if (s.top_k < 0) return invalid_argument("top_k must be >= 0 (0 = off), got {}", s.top_k);
  return Status();
}

Status check_request_fits(const RequestSpec& spec, int64_t vocab_size, int64_t max_model_len) {
  SW_RETURN_IF_ERROR(validate_request_spec(spec));
  for (int32_t t : spec.prompt_ids)
    if (t < 0 || t >= vocab_size)
      return invalid_argument("token id {} is outside the vocabulary [0, {})", t, vocab_size);
  const int64_t total = static_cast<int64_t>(spec.prompt_ids.size()) + spec.max_new_tokens;
  if (total > max_model_len)
    return invalid_argument(
        "prompt ({} tokens) + max_new_tokens ({}) = {} exceeds max_model_len {}",
        spec.prompt_ids.size(), spec.max_new_tokens, total, max_model_len);
  return Status();
}

}  // namespace sw::coordinator

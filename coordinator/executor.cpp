// Checks shared by every executor's output.
#include "coordinator/executor.h"

#include <fmt/format.h>

namespace sw::coordinator {

Status check_step_output(const worker::StepCommand& command, const StepOutput& out,
                         const std::string& who, int64_t vocab_size) {
  if (out.groups.size() != command.groups.size())
    return internal_error("{}: step answered for {} dp groups, expected {}", who, out.groups.size(),
                          command.groups.size());
  for (size_t g = 0; g < command.groups.size(); ++g) {
    const auto& seqs = command.groups[g].seqs;
    const worker::StepResult& r = out.groups[g];
    if (r.sampled.size() != seqs.size() || r.logits_row.size() != seqs.size())
      return internal_error("{}: dp group {} answered for {} sequences, expected {}", who, g,
                            r.sampled.size(), seqs.size());
    const int64_t rows = r.logits.defined() ? r.logits.dim(0) : 0;
    if (r.logits.defined() &&
        (r.logits.ndim() != 2 || r.logits.dim(1) != vocab_size || r.logits.dtype() != DType::kF32))
      return internal_error("{}: dp group {} sent logits of shape {}, expected float32 [rows, {}]",
                            who, g, shape_str(r.logits.shape()), vocab_size);
    for (size_t i = 0; i < seqs.size(); ++i) {
      if (seqs[i].sample && (r.sampled[i] < 0 || r.sampled[i] >= vocab_size))
        return internal_error("{}: dp group {} sampled token {} for sequence {}, outside [0, {})",
                              who, g, r.sampled[i], seqs[i].seq_id, vocab_size);
      const int64_t need = static_cast<int64_t>(seqs[i].tokens.size());
      if (seqs[i].keep_logits && r.logits_row[i] >= 0 && r.logits_row[i] + need > rows)
        return internal_error("{}: dp group {} points sequence {} at logits rows [{}, {}) of {}",
                              who, g, seqs[i].seq_id, r.logits_row[i], r.logits_row[i] + need,
                              rows);
    }
  }
  return Status();
}

Status Executor::expect_kv(const worker::KvRecvOrder& order) {
  return unimplemented("{}: cannot receive KV transfer {} (not a decode instance)", describe(),
                       order.transfer);
}

Status Executor::send_kv(const worker::KvSendOrder& order) {
  return unimplemented("{}: cannot send KV transfer {} (not a prefill instance)", describe(),
                       order.transfer);
}

Status Executor::cancel_kv(uint64_t transfer) {
  (void)transfer;
  return Status();
}

}  // namespace sw::coordinator

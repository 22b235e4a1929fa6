// Step command / reply encoding.
#include "worker/step_protocol.h"

#include <cstring>

#include "comm/control/message.h"

namespace sw::worker {

using comm::PayloadReader;
using comm::PayloadWriter;

namespace {

void put_i32s(PayloadWriter& w, const std::vector<int32_t>& v) {
  w.str(std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(int32_t)));
}

Result<std::vector<int32_t>> get_i32s(PayloadReader& r) {
  SW_ASSIGN_OR_RETURN(std::string s, r.str());
  if (s.size() % sizeof(int32_t) != 0)
    return data_loss("step message: int32 array of {} bytes", s.size());
  std::vector<int32_t> v(s.size() / sizeof(int32_t));
  if (!v.empty()) std::memcpy(v.data(), s.data(), s.size());
  return v;
}

void put_metrics(PayloadWriter& w, const std::vector<moe::MoeLayerMetrics>& ms) {
  w.u32(static_cast<uint32_t>(ms.size()));
  for (const auto& m : ms) {
    w.u64(static_cast<uint64_t>(m.num_assignments))
        .u64(static_cast<uint64_t>(m.num_dropped))
        .f64(m.imbalance);
    w.u32(static_cast<uint32_t>(m.tokens_per_expert.size()));
    for (int64_t n : m.tokens_per_expert) w.u64(static_cast<uint64_t>(n));
  }
}

Result<std::vector<moe::MoeLayerMetrics>> get_metrics(PayloadReader& r) {
  SW_ASSIGN_OR_RETURN(uint32_t n, r.u32());
  std::vector<moe::MoeLayerMetrics> ms(n);
  for (auto& m : ms) {
    SW_ASSIGN_OR_RETURN(uint64_t a, r.u64());
    SW_ASSIGN_OR_RETURN(uint64_t d, r.u64());
    SW_ASSIGN_OR_RETURN(m.imbalance, r.f64());
    SW_ASSIGN_OR_RETURN(uint32_t e, r.u32());
    m.num_assignments = static_cast<int64_t>(a);
    m.num_dropped = static_cast<int64_t>(d);
    m.tokens_per_expert.resize(e);
    for (auto& t : m.tokens_per_expert) {
      SW_ASSIGN_OR_RETURN(uint64_t x, r.u64());
      t = static_cast<int64_t>(x);
    }
  }
  return ms;
}

}  // namespace

std::string encode_step_command(const StepCommand& c) {
  PayloadWriter w;
  w.u32(c.collect_moe_metrics ? 1 : 0).u32(static_cast<uint32_t>(c.groups.size()));
  for (const StepMetadata& m : c.groups) {
    w.u32(static_cast<uint32_t>(m.seqs.size()));
    for (const StepSequence& s : m.seqs) {
      w.u64(static_cast<uint64_t>(s.seq_id)).u64(static_cast<uint64_t>(s.start_pos));
      put_i32s(w, s.tokens);
      put_i32s(w, s.block_table);
      w.u32((s.sample ? 1u : 0u) | (s.keep_logits ? 2u : 0u));
      w.f64(s.sampling.temperature)
          .u32(static_cast<uint32_t>(s.sampling.top_k))
          .f64(s.sampling.top_p);
      w.u64(s.sampling.seed).u64(s.sampling.offset);
    }
    w.u32(static_cast<uint32_t>(m.copies.size()));
    for (const BlockCopy& cp : m.copies)
      w.u32(static_cast<uint32_t>(cp.src)).u32(static_cast<uint32_t>(cp.dst));
  }
  return w.bytes();
}

Result<StepCommand> decode_step_command(const std::string& payload) {
  PayloadReader r(payload);
  StepCommand c;
  SW_ASSIGN_OR_RETURN(uint32_t flags, r.u32());
  c.collect_moe_metrics = flags & 1u;
  SW_ASSIGN_OR_RETURN(uint32_t groups, r.u32());
  if (groups > 4096) return data_loss("step command: {} dp groups", groups);
  c.groups.resize(groups);
  for (StepMetadata& m : c.groups) {
    SW_ASSIGN_OR_RETURN(uint32_t n, r.u32());
    if (n > payload.size())
      return data_loss("step command: {} sequences in {} bytes", n, payload.size());
    m.seqs.resize(n);
    for (StepSequence& s : m.seqs) {
      SW_ASSIGN_OR_RETURN(uint64_t id, r.u64());
      SW_ASSIGN_OR_RETURN(uint64_t start, r.u64());
      s.seq_id = static_cast<int64_t>(id);
      s.start_pos = static_cast<int64_t>(start);
      SW_ASSIGN_OR_RETURN(s.tokens, get_i32s(r));
      SW_ASSIGN_OR_RETURN(s.block_table, get_i32s(r));
      SW_ASSIGN_OR_RETURN(uint32_t f, r.u32());
      s.sample = f & 1u;
      s.keep_logits = f & 2u;
      SW_ASSIGN_OR_RETURN(double temp, r.f64());
      SW_ASSIGN_OR_RETURN(uint32_t top_k, r.u32());
      SW_ASSIGN_OR_RETURN(double top_p, r.f64());
      s.sampling.temperature = static_cast<float>(temp);
      s.sampling.top_k = static_cast<int32_t>(top_k);
      s.sampling.top_p = static_cast<float>(top_p);
      SW_ASSIGN_OR_RETURN(s.sampling.seed, r.u64());
      SW_ASSIGN_OR_RETURN(s.sampling.offset, r.u64());
    }
    SW_ASSIGN_OR_RETURN(uint32_t nc, r.u32());
    if (nc > payload.size())
      return data_loss("step command: {} block copies in {} bytes", nc, payload.size());
    m.copies.resize(nc);
    for (BlockCopy& cp : m.copies) {
      SW_ASSIGN_OR_RETURN(uint32_t src, r.u32());
      SW_ASSIGN_OR_RETURN(uint32_t dst, r.u32());
      cp.src = static_cast<int32_t>(src);
      cp.dst = static_cast<int32_t>(dst);
    }
  }
  if (!r.done()) return data_loss("step command: {} trailing bytes", payload.size());
  return c;
}

std::string encode_step_reply(const StepReply& rep) {
  PayloadWriter w;
  w.u32(static_cast<uint32_t>(rep.dp_group)).u32(static_cast<uint32_t>(rep.stage));
  put_i32s(w, rep.sampled);
  w.u32(static_cast<uint32_t>(rep.logits_row.size()));
  for (int64_t x : rep.logits_row) w.u64(static_cast<uint64_t>(x));
  const bool has_logits = rep.logits.defined() && rep.logits.numel() > 0;
  w.u64(has_logits ? static_cast<uint64_t>(rep.logits.dim(0)) : 0)
      .u64(has_logits ? static_cast<uint64_t>(rep.logits.dim(1)) : 0);
  if (has_logits)
    w.str(std::string_view(static_cast<const char*>(rep.logits.data()), rep.logits.nbytes()));
  put_metrics(w, rep.moe_metrics);
  return w.bytes();
}

Result<StepReply> decode_step_reply(const std::string& payload) {
  PayloadReader r(payload);
  StepReply rep;
  SW_ASSIGN_OR_RETURN(uint32_t g, r.u32());
  SW_ASSIGN_OR_RETURN(uint32_t stage, r.u32());
  rep.dp_group = static_cast<int>(g);
  rep.stage = static_cast<int>(stage);
  SW_ASSIGN_OR_RETURN(rep.sampled, get_i32s(r));
  SW_ASSIGN_OR_RETURN(uint32_t n, r.u32());
  if (n > payload.size())
    return data_loss("step reply: {} logits rows in {} bytes", n, payload.size());
  rep.logits_row.resize(n);
  for (auto& x : rep.logits_row) {
    SW_ASSIGN_OR_RETURN(uint64_t v, r.u64());
    x = static_cast<int64_t>(v);
  }
  SW_ASSIGN_OR_RETURN(uint64_t rows, r.u64());
  SW_ASSIGN_OR_RETURN(uint64_t cols, r.u64());
  if (rows > 0) {
    SW_ASSIGN_OR_RETURN(std::string bytes, r.str());
    if (bytes.size() != rows * cols * sizeof(float))
      return data_loss("step reply: logits of {} bytes for shape [{}, {}]", bytes.size(), rows,
                       cols);
    rep.logits =
        Tensor::empty({static_cast<int64_t>(rows), static_cast<int64_t>(cols)}, DType::kF32);
    std::memcpy(rep.logits.data(), bytes.data(), bytes.size());
  }
  SW_ASSIGN_OR_RETURN(rep.moe_metrics, get_metrics(r));
  if (!r.done()) return data_loss("step reply: trailing bytes");
  return rep;
}

}  // namespace sw::worker

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
  SW_ASSIGN_OR_RETURN(uint32_t n, r.count(28, "MoE metric layers"));
  std::vector<moe::MoeLayerMetrics> ms(n);
  for (auto& m : ms) {
    SW_ASSIGN_OR_RETURN(uint64_t a, r.u64());
    SW_ASSIGN_OR_RETURN(uint64_t d, r.u64());
    SW_ASSIGN_OR_RETURN(m.imbalance, r.f64());
    SW_ASSIGN_OR_RETURN(uint32_t e, r.count(8, "experts"));
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

Result<int> get_index(PayloadReader& r, const char* what) {
  SW_ASSIGN_OR_RETURN(uint32_t v, r.u32());
  if (v > (1u << 20)) return data_loss("KV order: {} {} is out of range", what, v);
  return static_cast<int>(v);
}

// The fields both orders share, first on the wire (timeout_s, also shared, goes last).
void put_order(PayloadWriter& w, const KvOrder& o) {
  w.u64(o.transfer).u32(static_cast<uint32_t>(o.dp_group)).u64(static_cast<uint64_t>(o.seq_id));
  put_i32s(w, o.blocks);
  w.u64(static_cast<uint64_t>(o.num_tokens));
  w.u32(static_cast<uint32_t>(o.src_pool)).u32(static_cast<uint32_t>(o.dst_pool));
}

Status get_order(PayloadReader& r, KvOrder* o) {
  SW_ASSIGN_OR_RETURN(o->transfer, r.u64());
  SW_ASSIGN_OR_RETURN(o->dp_group, get_index(r, "dp group"));
  SW_ASSIGN_OR_RETURN(uint64_t seq, r.u64());
  o->seq_id = static_cast<int64_t>(seq);
  SW_ASSIGN_OR_RETURN(o->blocks, get_i32s(r));
  SW_ASSIGN_OR_RETURN(uint64_t n, r.u64());
  if (n > (uint64_t{1} << 40)) return data_loss("KV order: {} tokens", n);
  o->num_tokens = static_cast<int64_t>(n);
  SW_ASSIGN_OR_RETURN(o->src_pool, get_index(r, "source pool"));
  SW_ASSIGN_OR_RETURN(o->dst_pool, get_index(r, "destination pool"));
  return Status();
}

void put_send_order(PayloadWriter& w, const KvSendOrder& o) {
  put_order(w, o);
  w.u32(static_cast<uint32_t>(o.dst_instance)).u32(static_cast<uint32_t>(o.dst_group));
  put_i32s(w, std::vector<int32_t>(o.dst_ranks.begin(), o.dst_ranks.end()));
  w.u32(static_cast<uint32_t>(o.dst_addresses.size()));
  for (const auto& a : o.dst_addresses) w.str(a);
  w.f64(o.timeout_s);
}

Result<KvSendOrder> get_send_order(PayloadReader& r) {
  KvSendOrder o;
  SW_RETURN_IF_ERROR(get_order(r, &o));
  SW_ASSIGN_OR_RETURN(o.dst_instance, get_index(r, "destination instance"));
  SW_ASSIGN_OR_RETURN(o.dst_group, get_index(r, "destination dp group"));
  SW_ASSIGN_OR_RETURN(std::vector<int32_t> ranks, get_i32s(r));
  o.dst_ranks.assign(ranks.begin(), ranks.end());
  SW_ASSIGN_OR_RETURN(uint32_t na, r.count(4, "KV destination addresses"));
  for (uint32_t i = 0; i < na; ++i) {
    SW_ASSIGN_OR_RETURN(std::string a, r.str());
    o.dst_addresses.push_back(std::move(a));
  }
  if (o.dst_addresses.size() != o.dst_ranks.size())
    return data_loss("KV send order: {} addresses for {} ranks", o.dst_addresses.size(),
                     o.dst_ranks.size());
  SW_ASSIGN_OR_RETURN(o.timeout_s, r.f64());
  return o;
}

void put_recv_order(PayloadWriter& w, const KvRecvOrder& o) {
  put_order(w, o);
  w.f64(o.timeout_s);
}

Result<KvRecvOrder> get_recv_order(PayloadReader& r) {
  KvRecvOrder o;
  SW_RETURN_IF_ERROR(get_order(r, &o));
  SW_ASSIGN_OR_RETURN(o.timeout_s, r.f64());
  return o;
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
  w.u32(static_cast<uint32_t>(c.kv_sends.size()));
  for (const KvSendOrder& o : c.kv_sends) put_send_order(w, o);
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
    SW_ASSIGN_OR_RETURN(uint32_t n, r.count(64, "sequences"));
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
    SW_ASSIGN_OR_RETURN(uint32_t nc, r.count(8, "block copies"));
    m.copies.resize(nc);
    for (BlockCopy& cp : m.copies) {
      SW_ASSIGN_OR_RETURN(uint32_t src, r.u32());
      SW_ASSIGN_OR_RETURN(uint32_t dst, r.u32());
      cp.src = static_cast<int32_t>(src);
      cp.dst = static_cast<int32_t>(dst);
    }
  }
  SW_ASSIGN_OR_RETURN(uint32_t sends, r.count(48, "KV sends"));
  for (uint32_t i = 0; i < sends; ++i) {
    SW_ASSIGN_OR_RETURN(KvSendOrder o, get_send_order(r));
    c.kv_sends.push_back(std::move(o));
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
  SW_ASSIGN_OR_RETURN(uint32_t n, r.count(8, "logits rows"));
  rep.logits_row.resize(n);
  for (auto& x : rep.logits_row) {
    SW_ASSIGN_OR_RETURN(uint64_t v, r.u64());
    x = static_cast<int64_t>(v);
  }
  SW_ASSIGN_OR_RETURN(uint64_t rows, r.u64());
  SW_ASSIGN_OR_RETURN(uint64_t cols, r.u64());
  if (rows > 0) {
    SW_ASSIGN_OR_RETURN(std::string bytes, r.str());
    if (cols == 0 || rows > bytes.size() / sizeof(float) / cols ||
        bytes.size() != rows * cols * sizeof(float))
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

std::string encode_kv_command(const KvCommand& c) {
  PayloadWriter w;
  w.u32(static_cast<uint32_t>(c.kind));
  switch (c.kind) {
    case KvCommand::Kind::kSend: put_send_order(w, c.send); break;
    case KvCommand::Kind::kRecv: put_recv_order(w, c.recv); break;
    case KvCommand::Kind::kCancel: w.u64(c.transfer); break;
  }
  return w.bytes();
}

Result<KvCommand> decode_kv_command(const std::string& payload) {
  PayloadReader r(payload);
  KvCommand c;
  SW_ASSIGN_OR_RETURN(uint32_t kind, r.u32());
  switch (kind) {
    case 1: {
      c.kind = KvCommand::Kind::kSend;
      SW_ASSIGN_OR_RETURN(c.send, get_send_order(r));
      break;
    }
    case 2: {
      c.kind = KvCommand::Kind::kRecv;
      SW_ASSIGN_OR_RETURN(c.recv, get_recv_order(r));
      break;
    }
    case 3: {
      c.kind = KvCommand::Kind::kCancel;
      SW_ASSIGN_OR_RETURN(c.transfer, r.u64());
      break;
    }
    default: return data_loss("KV command of unknown kind {}", kind);
  }
  if (!r.done()) return data_loss("KV command: trailing bytes");
  return c;
}

std::string encode_kv_done(const KvDone& d) {
  PayloadWriter w;
  w.u64(d.transfer)
      .u32(static_cast<uint32_t>(d.stage))
      .u32(static_cast<uint32_t>(d.tp))
      .u32(static_cast<uint32_t>(d.dp_group))
      .u32(d.ok ? 1 : 0);
  w.str(d.error);
  w.u64(static_cast<uint64_t>(d.bytes))
      .u64(static_cast<uint64_t>(d.first_part_us))
      .u64(static_cast<uint64_t>(d.done_us));
  return w.bytes();
}

Result<KvDone> decode_kv_done(const std::string& payload) {
  PayloadReader r(payload);
  KvDone d;
  SW_ASSIGN_OR_RETURN(d.transfer, r.u64());
  SW_ASSIGN_OR_RETURN(d.stage, get_index(r, "stage"));
  SW_ASSIGN_OR_RETURN(d.tp, get_index(r, "tp rank"));
  SW_ASSIGN_OR_RETURN(d.dp_group, get_index(r, "dp group"));
  SW_ASSIGN_OR_RETURN(uint32_t ok, r.u32());
  d.ok = ok != 0;
  SW_ASSIGN_OR_RETURN(d.error, r.str());
  SW_ASSIGN_OR_RETURN(uint64_t bytes, r.u64());
  SW_ASSIGN_OR_RETURN(uint64_t first, r.u64());
  SW_ASSIGN_OR_RETURN(uint64_t done, r.u64());
  d.bytes = static_cast<int64_t>(bytes);
  d.first_part_us = static_cast<int64_t>(first);
  d.done_us = static_cast<int64_t>(done);
  if (!r.done()) return data_loss("KV done: trailing bytes");
  return d;
}

}  // namespace sw::worker

// Sending a sequence's KV layer by layer, and receiving it into the cache.
#include "worker/kv_transfer_agent.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace sw::worker {

namespace {

constexpr uint32_t kPartsPerSegment = 65536;  // part = segment * 65536 + layer offset
constexpr int64_t kEarlyPartsKeepUs = 120'000'000;
constexpr size_t kCancelledKept = 4096;

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

KvTransferAgent::KvTransferAgent(const parallel::Plan& plan, int rank, ModelRunner& runner,
                                 comm::KvTransport& transport, KvFault fault,
                                 std::vector<std::string> peer_keys)
    : plan_(plan),
      rank_(rank),
      me_(plan.rank(rank).coord),
      runner_(runner),
      transport_(transport),
      fault_(fault),
      peer_keys_(std::move(peer_keys)) {}

const parallel::KvTransferPlan& KvTransferAgent::plan_for(int src_pool, int dst_pool) {
  std::lock_guard<std::mutex> lock(plans_mu_);
  auto it = plans_.find({src_pool, dst_pool});
  if (it != plans_.end()) return it->second;
  auto made = parallel::make_kv_transfer_plan(plan_, src_pool, dst_pool);
  if (!made.ok())
    spdlog::warn("KV transfer plan {} -> {}: {}", src_pool, dst_pool, made.status().message());
  return plans_
      .emplace(std::make_pair(src_pool, dst_pool), made.ok() ? *made : parallel::KvTransferPlan{})
      .first->second;
}

Status KvTransferAgent::send_layer(const KvSendOrder& order, int layer) {
  if (order.dp_group != me_.dp) return Status();
  if (order.dst_pool < 0 || order.dst_pool >= static_cast<int>(plan_.pools.size()))
    return invalid_argument("KV transfer {}: destination pool {}", order.transfer, order.dst_pool);
  const parallel::KvTransferPlan& plan = plan_for(order.src_pool, order.dst_pool);
  const int dst_tp = plan_.pools[static_cast<size_t>(order.dst_pool)].tp;
  for (size_t k = 0; k < plan.segments.size(); ++k) {
    const parallel::KvSegment& seg = plan.segments[k];
    if (seg.src.stage != me_.stage || seg.src.tp != me_.tp || layer < seg.layer_begin ||
        layer >= seg.layer_end)
      continue;
    const size_t idx = static_cast<size_t>(seg.dst.stage * dst_tp + seg.dst.tp);
    if (idx >= order.dst_addresses.size() || idx >= order.dst_ranks.size())
      return invalid_argument("KV transfer {}: no address for decode stage {} tp {}",
                              order.transfer, seg.dst.stage, seg.dst.tp);
    std::string bytes;
    SW_RETURN_IF_ERROR(
        runner_.export_kv(layer, seg.kv_head_begin, seg.kv_head_end, order.blocks, &bytes));
    const uint32_t part = static_cast<uint32_t>(k) * kPartsPerSegment +
                          static_cast<uint32_t>(layer - seg.layer_begin);
    const int dst_rank = order.dst_ranks[idx];
    if (!peer_keys_.empty()) {
      if (dst_rank <= 0 || dst_rank >= static_cast<int>(peer_keys_.size()))
        return invalid_argument("KV transfer {}: destination rank {} is not a worker of this job",
                                order.transfer, dst_rank);
      SW_RETURN_IF_ERROR(transport_.set_peer_key(order.dst_addresses[idx],
                                                 peer_keys_[static_cast<size_t>(dst_rank)]));
    }
    const bool faulty = fault_.mode != KvFault::Mode::kNone && dst_rank == fault_.decode_rank &&
                        (fault_.count == 0 || faulted_.count(order.transfer) ||
                         static_cast<int>(faulted_.size()) < fault_.count);
    if (faulty) {
      faulted_.insert(order.transfer);
      if (fault_.mode == KvFault::Mode::kDrop) continue;  // never sent
      std::lock_guard<std::mutex> lock(delayed_mu_);
      delayed_.push_back({order.dst_addresses[idx], order.transfer, part, std::move(bytes),
                          order.timeout_s, now_us() + static_cast<int64_t>(fault_.stall_s * 1e6)});
      continue;
    }
    SW_RETURN_IF_ERROR(transport_.send(order.dst_addresses[idx], order.transfer, part,
                                       std::move(bytes), order.timeout_s));
  }
  return Status();
}

void KvTransferAgent::arm(const std::vector<KvSendOrder>& orders) {
  armed_.clear();
  for (const KvSendOrder& o : orders)
    if (o.dp_group == me_.dp && !cancelled_.count(o.transfer)) armed_.push_back(o);
  if (armed_.empty()) return;
  runner_.set_layer_hook([this](int layer, const StepMetadata& mb) {
    for (const KvSendOrder& o : armed_) {
      const bool here = std::any_of(mb.seqs.begin(), mb.seqs.end(),
                                    [&](const StepSequence& s) { return s.seq_id == o.seq_id; });
      if (!here) continue;
      Status st = send_layer(o, layer);
      if (!st.ok())
        spdlog::warn("rank {}: KV transfer {} layer {}: {}", rank_, o.transfer, layer,
                     st.message());
    }
  });
}

void KvTransferAgent::disarm() {
  if (armed_.empty()) return;
  armed_.clear();
  runner_.set_layer_hook(nullptr);
}

void KvTransferAgent::queue_send(KvSendOrder order) {
  if (order.dp_group == me_.dp && !cancelled_.count(order.transfer))
    queued_sends_.push_back(std::move(order));
}

void KvTransferAgent::expect(const KvRecvOrder& order) {
  if (order.dp_group != me_.dp || cancelled_.count(order.transfer)) return;
  Expected e;
  e.order = order;
  const parallel::KvTransferPlan& plan = plan_for(order.src_pool, order.dst_pool);
  for (size_t k = 0; k < plan.segments.size(); ++k) {
    const parallel::KvSegment& seg = plan.segments[k];
    if (seg.dst.stage != me_.stage || seg.dst.tp != me_.tp) continue;
    for (int l = seg.layer_begin; l < seg.layer_end; ++l)
      e.parts[static_cast<uint32_t>(k) * kPartsPerSegment +
              static_cast<uint32_t>(l - seg.layer_begin)] = {l, seg.kv_head_begin, seg.kv_head_end};
  }
  auto early = early_.find(order.transfer);
  if (early != early_.end()) {
    e.first_part_us = early_since_us_[order.transfer];
    for (comm::KvPart& p : early->second) arrived_.push_back(std::move(p));
    early_.erase(early);
    early_since_us_.erase(order.transfer);
  }
  expected_[order.transfer] = std::move(e);
}

void KvTransferAgent::cancel(uint64_t transfer) {
  cancelled_.insert(transfer);
  if (cancelled_.size() > kCancelledKept) cancelled_.erase(cancelled_.begin());  // oldest id
  expected_.erase(transfer);
  early_.erase(transfer);
  early_since_us_.erase(transfer);
  std::erase_if(queued_sends_, [&](const KvSendOrder& o) { return o.transfer == transfer; });
  std::lock_guard<std::mutex> lock(delayed_mu_);
  std::erase_if(delayed_, [&](const Delayed& d) { return d.transfer == transfer; });
}

KvDone KvTransferAgent::done(const KvRecvOrder& order, const Expected* e, Status status) const {
  KvDone d;
  d.transfer = order.transfer;
  d.stage = me_.stage;
  d.tp = me_.tp;
  d.dp_group = me_.dp;
  d.ok = status.ok();
  d.error = status.ok() ? "" : fmt::format("rank {}: {}", rank_, status.message());
  d.bytes = e ? e->bytes : 0;
  d.first_part_us = e && e->first_part_us ? e->first_part_us : now_us();
  d.done_us = now_us();
  return d;
}

std::vector<KvDone> KvTransferAgent::progress(bool cache_free, double max_wait_s) {
  std::vector<KvDone> out;
  {
    std::lock_guard<std::mutex> lock(delayed_mu_);
    const int64_t now = now_us();
    while (!delayed_.empty() && delayed_.front().release_us <= now) {
      Delayed& d = delayed_.front();
      Status st = transport_.send(d.peer, d.transfer, d.part, std::move(d.bytes), d.timeout_s);
      if (!st.ok()) spdlog::warn("rank {}: {}", rank_, st.message());
      delayed_.pop_front();
    }
  }
  Status moved = transport_.progress(max_wait_s);
  if (!moved.ok()) spdlog::warn("rank {}: KV transport: {}", rank_, moved.message());
  for (comm::KvPart& p : transport_.take_received()) {
    if (cancelled_.count(p.transfer)) continue;
    auto e = expected_.find(p.transfer);
    if (e != expected_.end()) {
      if (e->second.first_part_us == 0) e->second.first_part_us = now_us();
      arrived_.push_back(std::move(p));
      continue;
    }
    if (!early_.count(p.transfer)) early_since_us_[p.transfer] = now_us();
    early_[p.transfer].push_back(std::move(p));
  }
  for (const comm::KvSendResult& r : transport_.take_completed())
    if (!r.status.ok() && !cancelled_.count(r.transfer))
      spdlog::warn("rank {}: {}", rank_, r.status.message());
  // Parts of transfers that never got an order (cancelled before it came) are dropped.
  for (auto it = early_since_us_.begin(); it != early_since_us_.end();) {
    if (now_us() - it->second < kEarlyPartsKeepUs) {
      ++it;
      continue;
    }
    early_.erase(it->first);
    it = early_since_us_.erase(it);
  }
  // Orders that expect nothing from this rank are done at once.
  for (auto it = expected_.begin(); it != expected_.end();) {
    if (!it->second.parts.empty()) {
      ++it;
      continue;
    }
    out.push_back(done(it->second.order, &it->second, Status()));
    it = expected_.erase(it);
  }
  if (!cache_free) return out;

  while (!queued_sends_.empty()) {
    const KvSendOrder order = std::move(queued_sends_.front());
    queued_sends_.pop_front();
    const model::ShardSpec& sh = plan_.rank(rank_).shard;
    for (int l = sh.layer_begin; l < sh.layer_end; ++l) {
      Status st = send_layer(order, l);
      if (!st.ok()) {
        spdlog::warn("rank {}: KV transfer {}: {}", rank_, order.transfer, st.message());
        break;
      }
    }
  }
  while (!arrived_.empty()) {
    comm::KvPart p = std::move(arrived_.front());
    arrived_.pop_front();
    auto e = expected_.find(p.transfer);
    if (e == expected_.end()) continue;  // cancelled or failed meanwhile
    Expected& ex = e->second;
    auto part = ex.parts.find(p.part);
    Status st;
    if (part == ex.parts.end()) {
      st = data_loss("KV transfer {}: part {} is not one this rank expects (or came twice)",
                     p.transfer, p.part);
    } else {
      const auto [layer, h0, h1] = part->second;
      st = runner_.import_kv(layer, h0, h1, ex.order.blocks, p.bytes);
      if (st.ok()) {
        ex.bytes += static_cast<int64_t>(p.bytes.size());
        ex.parts.erase(part);
      }
    }
    if (!st.ok()) {
      out.push_back(done(ex.order, &ex, st));
      expected_.erase(e);
      continue;
    }
    if (ex.parts.empty()) {
      out.push_back(done(ex.order, &ex, Status()));
      expected_.erase(e);
    }
  }
  return out;
}

bool KvTransferAgent::busy() const {
  std::lock_guard<std::mutex> lock(delayed_mu_);
  return !expected_.empty() || !arrived_.empty() || !queued_sends_.empty() || !early_.empty() ||
         transport_.num_in_flight() > 0 || !delayed_.empty();
}

}  // namespace sw::worker

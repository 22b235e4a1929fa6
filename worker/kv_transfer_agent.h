// KvTransferAgent: a worker rank's side of disaggregation — the coordinator decides, this moves
// bytes. On a prefill rank it sends its share of a sequence's KV (the transfer plan's segments
// whose source is this rank) one layer at a time: during the prefill step, from the runner's
// layer hook, as soon as each layer's KV is written; or all at once between steps. On a
// decode rank it collects the parts the plan says it receives, writes them into its cache
// between steps, and reports each transfer done (or failed) to the coordinator. Parts that
// arrive before their order wait; parts of a cancelled transfer are discarded.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "comm/kv_transport.h"
#include "parallel/kv_transfer_plan.h"
#include "parallel/plan.h"
#include "worker/model_runner.h"
#include "worker/step_protocol.h"

namespace sw::worker {

// Fault injection, for tests only (documented as such): transfers to one decode rank are
// dropped, or held back for stall_s seconds.
struct KvFault {
  enum class Mode { kNone, kDrop, kStall };
  Mode mode = Mode::kNone;
  int decode_rank = -1;  // world rank
  double stall_s = 0;
  int count = 0;  // transfers affected; 0: every one
};

class KvTransferAgent {
 public:
  // `peer_keys[r]`: world rank r's KV transport public key; a part goes to a rank only over a
  // connection that proved that key (empty: the transport is unauthenticated).
  KvTransferAgent(const parallel::Plan& plan, int rank, ModelRunner& runner,
                  comm::KvTransport& transport, KvFault fault = {},
                  std::vector<std::string> peer_keys = {});

  // ---- prefill side ----
  // Before a step that carries `orders`: each layer of those sequences (of this rank's dp
  // group) is sent from the runner's layer hook as soon as it is written. disarm() after it.
  void arm(const std::vector<KvSendOrder>& orders);
  void disarm();
  // Sends every layer of `order` at the next progress() that may touch the cache.
  void queue_send(KvSendOrder order);

  // ---- decode side ----
  void expect(const KvRecvOrder& order);
  // Drops a transfer on either side; its late parts are discarded.
  void cancel(uint64_t transfer);

  // The worker's loop calls this often. Moves the transport; when `cache_free` (no step
  // running) writes arrived parts into the cache and sends queued orders. Returns the
  // transfers this rank finished (or failed) receiving since the last call.
  std::vector<KvDone> progress(bool cache_free, double max_wait_s);
  // Something is in flight, expected or queued: poll soon.
  bool busy() const;

 private:
  struct Expected {
    KvRecvOrder order;
    // part -> (global layer, kv head range) still to write
    std::map<uint32_t, std::tuple<int, int, int>> parts;
    int64_t bytes = 0;
    int64_t first_part_us = 0;
  };
  const parallel::KvTransferPlan& plan_for(int src_pool, int dst_pool);
  // Exports and sends this rank's segments of `order` for one global layer.
  Status send_layer(const KvSendOrder& order, int layer);
  KvDone done(const KvRecvOrder& order, const Expected* e, Status status) const;

  const parallel::Plan& plan_;
  int rank_;
  parallel::RankCoord me_;
  ModelRunner& runner_;
  comm::KvTransport& transport_;
  KvFault fault_;
  std::vector<std::string> peer_keys_;
  std::map<std::pair<int, int>, parallel::KvTransferPlan> plans_;
  std::mutex plans_mu_;  // the layer hook runs on the step's thread

  std::vector<KvSendOrder> armed_;
  std::deque<KvSendOrder> queued_sends_;
  struct Delayed {
    std::string peer;
    uint64_t transfer;
    uint32_t part;
    std::string bytes;
    double timeout_s;
    int64_t release_us;
  };
  mutable std::mutex delayed_mu_;
  std::deque<Delayed> delayed_;  // fault injection: stalled parts
  std::set<uint64_t> faulted_;   // transfers the fault has hit

  std::map<uint64_t, Expected> expected_;
  std::map<uint64_t, std::vector<comm::KvPart>> early_;  // parts before their order
  std::map<uint64_t, int64_t> early_since_us_;
  std::deque<comm::KvPart> arrived_;  // parts of expected transfers, waiting for the cache
  std::set<uint64_t> cancelled_;
};

}  // namespace sw::worker

// Step messages between the coordinator and workers over the control channel: a StepCommand
// (one StepMetadata per dp group of an instance, plus the KV transfers that leave during the
// step), a StepReply (what the last pipeline stage's tp-rank-0 of one dp group computed), and
// the KV-transfer messages of disaggregation: a KvCommand (send, expect or cancel one
// transfer) and a KvDone (a decode rank has all its parts, or failed). Compact payloads
// (comm::PayloadWriter); decoding checks every length. Add a field: write it and read it in
// the same order, and bump comm::kControlProtocolVersion if old peers would misread it.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "worker/step_metadata.h"

namespace sw::worker {

// One prefill dp group sends a sequence's KV to one decode dp group. Which rank sends which
// layers and heads to which rank is parallel::make_kv_transfer_plan(plan, src_pool, dst_pool),
// which both sides compute; part k * 65536 + i of a transfer carries layer
// segments[k].layer_begin + i of segment k, as [K|V][block][slot][head][head_dim].
// What both ends of a transfer are told about it.
struct KvOrder {
  uint64_t transfer = 0;
  int dp_group = 0;    // send: the prefill dp group holding the sequence; receive: the decode one
  int64_t seq_id = 0;  // the sequence there (send: to find it in a step's micro-batch)
  std::vector<int32_t> blocks;  // its blocks there, in order, covering num_tokens
  int64_t num_tokens = 0;
  int src_pool = 0, dst_pool = 0;  // pools in the plan
  // send: every part must be acknowledged within this; receive: parts that arrive before
  // the order wait at most this long.
  double timeout_s = 30;
};

struct KvSendOrder : KvOrder {
  int dst_instance = 0, dst_group = 0;
  // Per rank of the destination dp group, index stage * tp + tp_rank: its world rank and its
  // KvTransport address (filled in by the executor from the workers' reports).
  std::vector<int> dst_ranks;
  std::vector<std::string> dst_addresses;
};

// A decode dp group receives a sequence's KV into `blocks`.
struct KvRecvOrder : KvOrder {};

struct KvCommand {
  enum class Kind : uint32_t { kSend = 1, kRecv = 2, kCancel = 3 };
  Kind kind = Kind::kCancel;
  KvSendOrder send;       // kSend: send now (not within a step)
  KvRecvOrder recv;       // kRecv
  uint64_t transfer = 0;  // kCancel: drop it (parts that still arrive are discarded)
};

// A decode rank's report on one transfer: every part it expects arrived and is in its cache,
// or the transfer failed there.
struct KvDone {
  uint64_t transfer = 0;
  int stage = 0, tp = 0, dp_group = 0;  // the reporting rank in its instance
  bool ok = true;
  std::string error;
  int64_t bytes = 0;
  // Wall-clock (system_clock) microseconds: the first part's arrival, the last part applied.
  int64_t first_part_us = 0;
  int64_t done_us = 0;
};

struct StepCommand {
  std::vector<StepMetadata> groups;  // index = dp group
  bool collect_moe_metrics = false;
  // Transfers whose sequence completes its prefill in this step: each layer's KV leaves as
  // soon as that layer's attention has written it.
  std::vector<KvSendOrder> kv_sends;
};

struct StepReply {
  int dp_group = 0;
  int stage = 0;                 // pipeline stage of the sender (only the last stage sends tokens)
  std::vector<int32_t> sampled;  // per sequence of that group's metadata
  std::vector<int64_t> logits_row;  // per sequence, -1 when not kept
  Tensor logits;                    // host float32 [rows, V] or undefined
  std::vector<moe::MoeLayerMetrics> moe_metrics;
};

std::string encode_step_command(const StepCommand& c);
Result<StepCommand> decode_step_command(const std::string& payload);
std::string encode_step_reply(const StepReply& r);
Result<StepReply> decode_step_reply(const std::string& payload);
std::string encode_kv_command(const KvCommand& c);
Result<KvCommand> decode_kv_command(const std::string& payload);
std::string encode_kv_done(const KvDone& d);
Result<KvDone> decode_kv_done(const std::string& payload);

}  // namespace sw::worker

// Scheduler: the engine's decisions. It owns the requests, their queues per instance, the
// InstanceRouter and the KvBlockManager, and for an idle instance produces one step: which
// sequences run, how many tokens each (prefill chunks within max_num_batched_tokens, one
// token per decode), which KV blocks they write. When a dp group runs out of blocks its
// youngest sequence is preempted and recomputed later (vLLM's recompute policy): never lost.
// Executors only carry the step; update_from_output() commits what came back.
//
// Policies (scheduler.policy) order an instance's admitted sequences for this step's token
// budget and blocks:
//   decode_priority  every decoding sequence first, then prefill chunks oldest first
//                    (DeepSpeed-FastGen's Dynamic SplitFuse: decodes never wait for prefills)
//   fcfs             oldest admitted first, whatever its phase (vLLM v1: an older request's
//                    prefill chunk goes before a younger request's decode)
// Waiting requests are admitted first come, first served in both (preempted ones first), each
// only when its first chunk fits the free blocks of a dp group (no one overtakes the head).
// Add a policy: a SchedulerPolicy subclass, an enum value, its name in the parser and
// docs/configuration.md.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/executor.h"
#include "coordinator/instance_router.h"
#include "coordinator/kv_block_manager.h"
#include "coordinator/request.h"
#include "model/model_config.h"
#include "worker/step_protocol.h"

namespace sw::coordinator {

enum class SchedulerPolicyKind { kDecodePriority, kFcfs };
const char* scheduler_policy_name(SchedulerPolicyKind k);
// "decode_priority" | "fcfs"; the error lists both.
Result<SchedulerPolicyKind> parse_scheduler_policy(const std::string& name);

class SchedulerPolicy {
 public:
  virtual ~SchedulerPolicy() = default;
  // `running` in admission order (oldest first) -> the order they are served in this step.
  virtual std::vector<Request*> order(const std::vector<Request*>& running) const = 0;
};
std::unique_ptr<SchedulerPolicy> make_scheduler_policy(SchedulerPolicyKind kind);

// What happens to a request whose KV transfer failed or timed out (its blocks on both sides
// are freed either way): it fails with an error, or is prefilled again.
enum class TransferFailurePolicy { kRecompute, kFail };
const char* transfer_failure_policy_name(TransferFailurePolicy p);

struct SchedulerOptions {
  int max_num_seqs = 256;                 // admitted sequences per instance
  int64_t max_num_batched_tokens = 2048;  // tokens per step (prefill chunks + decodes)
  SchedulerPolicyKind policy = SchedulerPolicyKind::kDecodePriority;
  // A prefill chunk holds at most this many tokens (vLLM's long_prefill_token_threshold), so
  // several long prompts advance side by side and short ones are not stuck behind them;
  // 0: a chunk may take the whole step budget.
  int64_t long_prefill_token_threshold = 0;
  int64_t max_model_len = 0;  // prompt + max_new_tokens; 0: the model's max_position_embeddings
  // Disaggregation: a KV transfer (and a finished prefill's wait for decode room) must end
  // within this long, or `on_transfer_failure` applies.
  double kv_transfer_timeout_s = 30;
  TransferFailurePolicy on_transfer_failure = TransferFailurePolicy::kRecompute;
};

// What an instance does. Mixed instances take prompts and decode them. Prefill instances take
// prompts and, once a prompt's first token is sampled, hand its KV to a decode instance.
// Decode instances take only such hand-overs (and recompute their own preempted sequences).
enum class InstanceRole { kMixed, kPrefill, kDecode };
const char* instance_role_name(InstanceRole r);

struct InstanceSpec {
  std::string name;  // for messages, e.g. "mixed instance 1"
  InstanceRole role = InstanceRole::kMixed;
  int pool = 0;           // its pool's index in the plan (named in KV transfer orders)
  int num_kv_groups = 1;  // dp groups, each with its own sequences and KV pool
  int64_t num_kv_blocks = 0;
  int kv_block_size = 16;
};

// One sequence chunk of a scheduled step, to commit its output.
struct ScheduledChunk {
  int64_t request_id = 0;
  int64_t seq_id = 0;
  int64_t num_tokens = 0;
  bool sample = false;
};

// A KV-transfer instruction for one instance's executor (the scheduler decides, the engine
// carries): expect a transfer (decode side), send one now (prefill side), or drop one.
struct KvAction {
  enum class Kind { kExpect, kSend, kCancel };
  Kind kind = Kind::kCancel;
  int instance = -1;
  worker::KvRecvOrder recv;  // kExpect
  worker::KvSendOrder send;  // kSend
  uint64_t transfer = 0;     // kCancel
};

struct ScheduledStep {
  int instance = -1;
  worker::StepCommand command;                      // what the executor carries
  std::vector<std::vector<ScheduledChunk>> chunks;  // [dp group][i] <-> command.groups[g].seqs[i]
  int64_t num_tokens() const;
};

struct SchedulerStats {
  int64_t prompt_tokens = 0;     // of accepted requests
  int64_t computed_tokens = 0;   // scheduled into steps (recomputation included)
  int64_t generated_tokens = 0;  // committed output tokens
  int64_t num_preemptions = 0;
  int64_t kv_transfers = 0;          // completed
  int64_t kv_transfer_failures = 0;  // failed or timed out
  int64_t kv_bytes = 0;
  // Preemptions for want of KV blocks, by the instance that ran out (recomputes after a lost
  // instance or a failed transfer count in num_preemptions only).
  std::vector<int64_t> preemptions_by_instance;
};

class Scheduler {
 public:
  Scheduler(model::ModelConfig model, SchedulerOptions options);

  int add_instance(const InstanceSpec& spec);
  int num_instances() const { return static_cast<int>(instances_.size()); }
  const InstanceSpec& instance(int i) const { return instances_.at(i).spec; }
  bool instance_alive(int i) const { return instances_.at(i).alive; }

  // Validates the request against the model and the instances, routes it and queues it. The
  // error says why it could never run (nothing is kept then).
  Result<int64_t> add(RequestSpec spec, Clock::time_point arrival = Clock::now());
  // Ends a request in any state and frees its KV blocks. kNotFound for an unknown id; a
  // request that already ended stays as it was.
  Status abort(int64_t id);

  // The next step of an idle instance; nullopt when it has nothing to run.
  Result<std::optional<ScheduledStep>> schedule(int instance);
  // Commits a completed step: cached counts, sampled tokens, logits, finished requests (their
  // blocks freed). Appends what each request produced to `outputs`.
  Status update_from_output(const ScheduledStep& step, const StepOutput& out,
                            std::vector<RequestOutput>* outputs);
  // The instance is gone (its step failed or its workers were lost): its requests are
  // recomputed on the other instances, or fail with `why` when none can take them.
  void fail_instance(int instance, const Status& why, std::vector<RequestOutput>* outputs);

  // ---- Disaggregation (prefill and decode instances) ----
  // What the engine must tell executors about KV transfers, in the order it was decided.
  std::vector<KvAction> take_kv_actions() { return std::exchange(kv_actions_, {}); }
  // A decode instance's report: the transfer is in its cache (the request moves there and the
  // prefill side's blocks are freed: acknowledge before free), or it failed.
  void on_kv_event(int instance, const KvTransferEvent& event, std::vector<RequestOutput>* outputs);
  // Starts the transfers of finished prefills that now find room on a decode instance, and
  // ends by policy the transfers and waits that ran past kv_transfer_timeout_s.
  void advance_transfers(Clock::time_point now, std::vector<RequestOutput>* outputs);
  bool transfers_pending() const { return !transferring_.empty(); }
  int num_transferring() const { return static_cast<int>(transferring_.size()); }
  // Names the ranks of a decode instance that have not reported a transfer (error messages).
  void set_kv_missing(std::function<std::string(int instance, uint64_t transfer)> fn) {
    kv_missing_ = std::move(fn);
  }

  bool has_unfinished() const { return num_unfinished_ > 0; }
  const Request* request(int64_t id) const;
  // Forgets a request that has ended (its results were read).
  void release(int64_t id);
  int num_waiting(int instance) const {
    return static_cast<int>(instances_.at(instance).waiting.size());
  }
  int num_running(int instance) const {
    return static_cast<int>(instances_.at(instance).running.size());
  }
  const KvBlockManager& kv() const { return kv_; }
  const SchedulerStats& stats() const { return stats_; }
  const SchedulerOptions& options() const { return options_; }
  const model::ModelConfig& model() const { return model_; }

 private:
  struct Instance {
    InstanceSpec spec;
    bool alive = true;
    std::deque<Request*> waiting;   // first come first served; preempted ones at the front
    std::vector<Request*> running;  // admitted, oldest first
  };

  Status check_fits(const RequestSpec& spec) const;
  std::vector<InstanceLoad> loads(const Request& r) const;
  int64_t blocks_for(const Request& r, int instance) const;
  // Tokens of the request's next chunk that fit in `free_blocks` of its group (<= want).
  int64_t fit(const Request& r, int instance, int group, int64_t want, int64_t free_blocks) const;

  // Transitions (each frees what the old state held; logged at debug level).
  void admit(Request& r, int group);
  void preempt(Request& r, const char* why);
  void end(Request& r, RequestState state, FinishReason reason, std::string error = "");
  void release_placement(Request& r);  // KV blocks and queue entries
  void transition(Request& r, RequestState to, const char* why);

  ScheduledStep build_step(int instance, const std::vector<std::pair<Request*, int64_t>>& plan);

  struct Transfer {
    uint64_t id = 0;
    Request* request = nullptr;
    int src_instance = -1, src_group = -1;
    int64_t src_seq = -1;
    int dst_instance = -1, dst_group = -1;
    int64_t dst_seq = -1;
    int64_t num_tokens = 0;
    bool src_done = false;  // the prefill that sends it is committed (or it was sent alone)
    bool dst_done = false;  // every decode rank reported it
    Clock::time_point deadline;
    KvTransferEvent event;
  };
  // Reserves decode blocks for the first `num_tokens` tokens of `r` and asks the decode
  // instance to expect them; the caller sends. Null when no decode instance has room.
  Transfer* reserve_transfer(Request& r, int64_t num_tokens);
  worker::KvSendOrder send_order(const Transfer& t, const std::vector<int32_t>& src_blocks) const;
  void finalize_transfer(Transfer& t);
  // Drops a transfer: cancels it on both sides and frees the decode blocks.
  void cancel_transfer(uint64_t id);
  // A transfer (or the wait for decode room) failed: by policy, fail or recompute `r`.
  void transfer_failed(Request& r, const std::string& why, std::vector<RequestOutput>* outputs);
  // Back to a prefill-capable instance's queue for recompute; fails `r` with `why` if none.
  void requeue_or_fail(Request& r, const std::string& why, std::vector<RequestOutput>* outputs);
  void report(const Request& r, std::vector<RequestOutput>* outputs) const;

  model::ModelConfig model_;
  SchedulerOptions options_;
  std::unique_ptr<SchedulerPolicy> policy_;
  std::vector<Instance> instances_;
  InstanceRouter router_;
  InstanceRouter decode_router_;
  KvBlockManager kv_;
  std::map<uint64_t, Transfer> transfers_;
  std::vector<Request*> transferring_;  // state kTransferring, oldest first
  std::vector<KvAction> kv_actions_;
  uint64_t next_transfer_ = 1;
  std::function<std::string(int, uint64_t)> kv_missing_;
  std::map<int64_t, std::unique_ptr<Request>> requests_;
  int64_t next_request_id_ = 1;
  int64_t next_seq_id_ = 1;
  int64_t num_unfinished_ = 0;
  SchedulerStats stats_;
};

}  // namespace sw::coordinator

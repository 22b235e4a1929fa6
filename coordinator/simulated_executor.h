// SimulatedExecutor: an instance with a modelled step time and a fake model, so the engine and
// scheduler run (and are tested) without weights or ranks. It keeps what every KV slot holds
// (sequence, position, token) and checks that each step reads back exactly what its sequence
// wrote: a block freed too early, reused while in use, or a wrong table is an error, not a
// silent pass. The next token is a function of the tokens read from that simulated cache, so
// lost or misplaced KV changes the output. Every command is recorded for tests that assert
// the scheduler's choices.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "coordinator/executor.h"
#include "coordinator/request.h"

namespace sw::coordinator {

struct SimulatedModel {
  int64_t vocab_size = 1000;
  // Next token of a sequence whose cache holds `tokens`. Default: a hash of all of them.
  std::function<int32_t(const std::vector<int32_t>& tokens)> next_token;
};

// Carries KV transfers between simulated instances in one process: a prefill instance posts
// the tokens its cache holds for the transfer's blocks, a decode instance takes them into its
// cache. Faults for tests: transfers that never arrive, or arrive late.
class SimulatedKvNetwork {
 public:
  void post(uint64_t transfer, std::vector<int32_t> tokens);
  // The transfer's tokens once delivered (nullopt: not yet, or never).
  std::optional<std::vector<int32_t>> take(uint64_t transfer);
  void cancel(uint64_t transfer) { in_flight_.erase(transfer); }
  void drop_next(int n) { drop_ = n; }
  void stall_next(int n, double delay_s) {
    stall_ = n;
    stall_s_ = delay_s;
  }
  int64_t posted() const { return posted_; }

 private:
  struct Delivery {
    std::vector<int32_t> tokens;
    Clock::time_point ready;
    bool dropped = false;
  };
  std::map<uint64_t, Delivery> in_flight_;
  int drop_ = 0, stall_ = 0;
  double stall_s_ = 0;
  int64_t posted_ = 0;
};

struct SimulatedTiming {
  double base_s = 0;       // per step
  double per_token_s = 0;  // per scheduled token
};

// Logit of vocabulary entry `v` after `tokens` (what keep_logits returns): a hash in [0, 1).
float simulated_logit(const std::vector<int32_t>& tokens, int64_t v);

class SimulatedExecutor final : public Executor {
 public:
  // `network` (optional, shared by the instances of one test) carries KV transfers.
  SimulatedExecutor(int num_groups, int64_t num_blocks, int block_size, SimulatedModel model,
                    SimulatedTiming timing = {}, SimulatedKvNetwork* network = nullptr);

  std::string describe() const override { return "simulated instance"; }
  Status submit(const worker::StepCommand& command) override;
  Result<std::optional<StepOutput>> poll() override;
  void wait(double max_s) override;
  bool busy() const override { return pending_.has_value(); }
  Status shutdown() override;
  Status expect_kv(const worker::KvRecvOrder& order) override;
  Status send_kv(const worker::KvSendOrder& order) override;
  Status cancel_kv(uint64_t transfer) override;
  std::vector<KvTransferEvent> poll_kv() override;
  std::string kv_missing(uint64_t transfer) const override;

  const std::vector<worker::StepCommand>& history() const { return history_; }
  // The next submitted step fails with `error` (as a lost worker would).
  void fail_next_step(Status error) { fail_next_ = std::move(error); }
  bool shut_down() const { return shut_down_; }

 private:
  struct Slot {
    int64_t seq_id = -1;
    int64_t pos = -1;
    int32_t token = 0;
  };
  Result<StepOutput> run(const worker::StepCommand& command);
  // Posts the tokens the cache holds for a send order (checking they are the sequence's).
  Status post(const worker::KvSendOrder& order);

  int block_size_;
  int64_t num_blocks_;
  SimulatedModel model_;
  SimulatedTiming timing_;
  std::vector<std::vector<Slot>> cache_;  // [dp group][slot]
  std::vector<worker::StepCommand> history_;
  struct Pending {
    Result<StepOutput> output;
    Clock::time_point ready;
  };
  std::optional<Pending> pending_;
  std::optional<Status> fail_next_;
  bool shut_down_ = false;
  SimulatedKvNetwork* network_;
  std::map<uint64_t, worker::KvRecvOrder> expected_;
};

}  // namespace sw::coordinator

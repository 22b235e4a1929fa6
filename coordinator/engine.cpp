// The engine loop: commit, schedule, submit, wait.
#include "coordinator/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace sw::coordinator {

Engine::Engine(model::ModelConfig model, EngineOptions options)
    : scheduler_(std::move(model), options.scheduler), options_(options) {
  stats_.started = Clock::now();
  scheduler_.set_kv_missing([this](int instance, uint64_t transfer) {
    return slots_[static_cast<size_t>(instance)].executor->kv_missing(transfer);
  });
}

Engine::~Engine() {
  if (!shut_down_) {
    Status st = shutdown();
    if (!st.ok()) spdlog::warn("engine shutdown: {}", st.message());
  }
}

int Engine::add_instance(const InstanceSpec& spec, std::unique_ptr<Executor> executor) {
  const int i = scheduler_.add_instance(spec);
  slots_.push_back(Slot{std::move(executor), std::nullopt});
  stats_.steps_per_instance.push_back(0);
  return i;
}

Result<int64_t> Engine::add(RequestSpec spec) {
  if (shut_down_) return unavailable("the engine is shut down");
  return scheduler_.add(std::move(spec));
}

Status Engine::abort(int64_t id) { return scheduler_.abort(id); }

bool Engine::busy() const {
  return std::any_of(slots_.begin(), slots_.end(),
                     [](const Slot& s) { return s.in_flight.has_value(); });
}

void Engine::lose_instance(int instance, const Status& why, std::vector<RequestOutput>& outputs) {
  const Status err = why.with_context(scheduler_.instance(instance).name);
  if (health_.ok()) health_ = err;
  slots_[instance].in_flight.reset();
  scheduler_.fail_instance(instance, err, &outputs);
}

Status Engine::collect(std::vector<RequestOutput>& outputs, bool* any) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    // Idle instances are polled too: a worker lost or failed between steps ends its instance.
    if (!scheduler_.instance_alive(static_cast<int>(i))) continue;
    auto polled = slot.executor->poll();
    if (!polled.ok()) {
      *any = true;
      lose_instance(static_cast<int>(i), polled.status(), outputs);
      continue;
    }
    if (!polled->has_value() || !slot.in_flight) continue;
    *any = true;
    const ScheduledStep step = std::move(*slot.in_flight);
    slot.in_flight.reset();
    const StepOutput& out = **polled;
    Status valid = check_step_output(step.command, out, slot.executor->describe(),
                                     scheduler_.model().vocab_size);
    if (!valid.ok()) {
      lose_instance(static_cast<int>(i), valid, outputs);
      continue;
    }
    if (options_.collect_moe_metrics) moe::merge_layer_metrics(stats_.moe_layers, out.moe_metrics);
    SW_RETURN_IF_ERROR(scheduler_.update_from_output(step, out, &outputs));
  }
  return Status();
}

void Engine::carry_kv_actions(std::vector<RequestOutput>& outputs) {
  for (const KvAction& a : scheduler_.take_kv_actions()) {
    if (!scheduler_.instance_alive(a.instance)) continue;
    Executor& ex = *slots_[static_cast<size_t>(a.instance)].executor;
    Status st = a.kind == KvAction::Kind::kExpect ? ex.expect_kv(a.recv)
                : a.kind == KvAction::Kind::kSend ? ex.send_kv(a.send)
                                                  : ex.cancel_kv(a.transfer);
    if (!st.ok()) lose_instance(a.instance, st, outputs);
  }
}

void Engine::advance_transfers(std::vector<RequestOutput>& outputs, bool* any) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!scheduler_.instance_alive(static_cast<int>(i))) continue;
    for (const KvTransferEvent& e : slots_[i].executor->poll_kv()) {
      *any = true;
      scheduler_.on_kv_event(static_cast<int>(i), e, &outputs);
    }
  }
  scheduler_.advance_transfers(Clock::now(), &outputs);
  carry_kv_actions(outputs);
}

Result<std::vector<RequestOutput>> Engine::step(double max_wait_s) {
  std::vector<RequestOutput> outputs;
  bool any = false;
  auto schedule_idle = [&]() -> Status {
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& slot = slots_[i];
      const int inst = static_cast<int>(i);
      if (slot.in_flight || !scheduler_.instance_alive(inst)) continue;
      SW_ASSIGN_OR_RETURN(auto step, scheduler_.schedule(inst));
      if (!step) continue;
      step->command.collect_moe_metrics = options_.collect_moe_metrics;
      // The decode side learns what to expect before the prefill step that sends it starts.
      carry_kv_actions(outputs);
      if (!scheduler_.instance_alive(inst)) continue;
      Status sent = slot.executor->submit(step->command);
      if (!sent.ok()) {
        lose_instance(inst, sent, outputs);
        continue;
      }
      slot.in_flight = std::move(step);
      ++stats_.num_steps;
      ++stats_.steps_per_instance[i];
    }
    return Status();
  };
  SW_RETURN_IF_ERROR(collect(outputs, &any));
  advance_transfers(outputs, &any);
  SW_RETURN_IF_ERROR(schedule_idle());
  if (any || max_wait_s <= 0) return outputs;
  // Nothing finished yet: wait for the first step or transfer that does, then keep the
  // instances busy.
  const auto deadline = Clock::now() + std::chrono::duration<double>(max_wait_s);
  while (!any && (busy() || scheduler_.transfers_pending())) {
    const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
    if (left <= 0) break;
    std::vector<Executor*> waiting;
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].in_flight ||
          (scheduler_.transfers_pending() && scheduler_.instance_alive(static_cast<int>(i))))
        waiting.push_back(slots_[i].executor.get());
    if (waiting.empty()) break;
    // One executor: wait on it. Several: short turns, so the first to finish is seen soon
    // (executors of one cluster share a control channel, so any turn files every reply).
    const double turn = waiting.size() == 1 ? left : std::min(left, 0.002);
    for (Executor* e : waiting) e->wait(turn / static_cast<double>(waiting.size()));
    SW_RETURN_IF_ERROR(collect(outputs, &any));
    advance_transfers(outputs, &any);
  }
  SW_RETURN_IF_ERROR(schedule_idle());
  return outputs;
}

Status Engine::shutdown() {
  if (shut_down_) return Status();
  shut_down_ = true;
  std::vector<RequestOutput> ignored;
  while (busy()) {
    bool any = false;
    SW_RETURN_IF_ERROR(collect(ignored, &any));
    for (Slot& s : slots_)
      if (s.in_flight) s.executor->wait(0.01);
  }
  Status first;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!scheduler_.instance_alive(static_cast<int>(i))) continue;
    Status st = slots_[i].executor->shutdown();
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

}  // namespace sw::coordinator

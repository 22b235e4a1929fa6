// A runner's steps on a background thread.
#include "worker/step_thread.h"

#include <chrono>
#include <exception>

namespace sw::worker {

StepThread::StepThread(ModelRunner& runner) : runner_(runner) {
  thread_ = std::thread([this] { run(); });
}

StepThread::~StepThread() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return job_ == std::nullopt && (result_.has_value() || !busy_); });
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StepThread::run() {
  const Status bound = runner_.backend().bind_current_thread();
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || job_.has_value(); });
    if (stop_) return;
    auto [meta, collect] = std::move(*job_);
    job_.reset();
    lock.unlock();
    Result<StepResult> out = [&]() -> Result<StepResult> {
      SW_RETURN_IF_ERROR(bound);
      runner_.set_collect_moe_metrics(collect);
      try {
        return runner_.execute(meta);
      } catch (const std::exception& e) {
        return internal_error("step failed: {}", e.what());
      }
    }();
    lock.lock();
    result_ = std::move(out);
    cv_.notify_all();
  }
}

Status StepThread::submit(StepMetadata meta, bool collect_moe_metrics) {
  std::lock_guard<std::mutex> lock(mu_);
  if (busy_) return internal_error("a step is already in flight");
  busy_ = true;
  job_.emplace(std::move(meta), collect_moe_metrics);
  cv_.notify_all();
  return Status();
}

std::optional<Result<StepResult>> StepThread::poll() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!result_) return std::nullopt;
  std::optional<Result<StepResult>> r = std::move(result_);
  result_.reset();
  busy_ = false;
  return r;
}

void StepThread::wait(double max_s) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::duration<double>(max_s),
               [&] { return result_.has_value() || !busy_; });
}

bool StepThread::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return busy_;
}

}  // namespace sw::worker

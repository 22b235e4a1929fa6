// LocalEngine: the single-process engine (`generate --model`, and later `serve` / `bench`
// without a cluster file): a backend, the whole model's weights, one ModelRunner with its KV
// cache, and an Engine with one LocalExecutor over it. Owns all of them, in the right order.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "coordinator/engine.h"
#include "kernels/backend.h"
#include "worker/model_runner.h"

namespace sw::coordinator {

struct LocalEngineOptions {
  std::string model;                 // folder with config.json (+ safetensors) or preset name
  std::string load_format = "auto";  // auto | safetensors | dummy
  std::string dtype = "float32";     // float32 | bfloat16 | float16
  std::string device = "cpu";        // cpu | cuda
  uint64_t dummy_seed = 0;
  int threads = 0;  // cpu: 0 = all cores
  int kv_block_size = 16;
  // KV cache size, first that applies: num_kv_blocks > 0; gpu_memory_utilization > 0 (a
  // profile step, then what memory allows; default 0.9 on cuda); fallback_kv_blocks.
  int64_t num_kv_blocks = 0;
  double gpu_memory_utilization = -1;  // < 0: 0.9 on cuda, off on cpu
  int64_t fallback_kv_blocks = 0;      // e.g. what a list of prompts needs
  int graph_max_batch = -1;            // decode graphs; < 0: 256 on cuda, 0 (eager) on cpu
  EngineOptions engine;
};

class LocalEngine {
 public:
  static Result<std::unique_ptr<LocalEngine>> create(const LocalEngineOptions& options);
  ~LocalEngine();
  Engine& engine() { return *engine_; }
  worker::ModelRunner& runner() { return *runner_; }
  const model::ModelConfig& model() const { return runner_->config(); }

 private:
  LocalEngine() = default;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<worker::ModelRunner> runner_;
  std::unique_ptr<Engine> engine_;  // declared last: stopped first
};

}  // namespace sw::coordinator

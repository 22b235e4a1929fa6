// libFuzzer harness: the cluster YAML parser (parallel/cluster_config.cpp) on arbitrary text,
// then the partitioner for small accepted layouts of the tiny-moe preset. Checks that an
// accepted file respects common/limits.h (durations, sizes, world size) and plans without UB.
#include <cstdint>
#include <string>

#include "common/limits.h"
#include "fuzz/fuzz_check.h"
#include "model/model_config.h"
#include "parallel/cluster_config.h"
#include "parallel/partitioner.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = sw::parallel::parse_cluster_config(text, "fuzz.yaml");
  if (!c.ok()) return 0;
  namespace L = sw::limits;
  FUZZ_CHECK(c->comm.timeout_s > 0 && c->comm.timeout_s <= L::kMaxTimeoutS);
  FUZZ_CHECK(c->comm.heartbeat_interval_s * c->comm.heartbeat_miss_count <= L::kMaxTimeoutS);
  FUZZ_CHECK(c->runtime.kv_block_size >= 1 && c->runtime.kv_block_size <= L::kMaxKvBlockSize);
  FUZZ_CHECK(c->runtime.device_memory_gib >= 0 &&
             c->runtime.device_memory_gib <= L::kMaxDeviceMemoryGib);
  FUZZ_CHECK(c->world_size() >= 2 && c->world_size() <= L::kMaxWorldSize);
  FUZZ_CHECK(sw::comm::validate(c->comm).ok());
  FUZZ_CHECK(c->comm.control_endpoint.rfind("inproc://", 0) != 0);
  if (c->world_size() <= 64) {
    static const auto model = sw::model::load_model_config("tiny-moe");
    FUZZ_CHECK(model.ok());
    auto plan = sw::parallel::make_plan(*c, *model, 0);
    if (plan.ok()) {
      FUZZ_CHECK(static_cast<int>(plan->ranks.size()) == c->world_size());
      for (const auto& r : plan->ranks) FUZZ_CHECK(r.kv_blocks >= 0);
    }
  }
  return 0;
}

// libFuzzer harness: the step protocol decoders (worker/step_protocol.cpp) on arbitrary
// payloads, as a worker reads a StepCommand or a KvCommand and the coordinator a StepReply or
// a KvDone. An accepted message must survive a round trip (encode(decode(x)) decodes again to
// the same encoding) and hold no more logits than the payload carried.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_check.h"
#include "worker/step_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string payload(reinterpret_cast<const char*>(data), size);
  auto cmd = sw::worker::decode_step_command(payload);
  if (cmd.ok()) {
    const std::string once = sw::worker::encode_step_command(*cmd);
    auto again = sw::worker::decode_step_command(once);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(sw::worker::encode_step_command(*again) == once);
  }
  auto reply = sw::worker::decode_step_reply(payload);
  if (reply.ok()) {
    // Whatever a reply claims, its logits are float32 bytes the payload carried.
    if (reply->logits.defined())
      FUZZ_CHECK(reply->logits.numel() <= static_cast<int64_t>(size / 4));
    const std::string once = sw::worker::encode_step_reply(*reply);
    auto again = sw::worker::decode_step_reply(once);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(sw::worker::encode_step_reply(*again) == once);
  }
  auto kv = sw::worker::decode_kv_command(payload);
  if (kv.ok()) {
    const std::string once = sw::worker::encode_kv_command(*kv);
    auto again = sw::worker::decode_kv_command(once);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(sw::worker::encode_kv_command(*again) == once);
  }
  auto done = sw::worker::decode_kv_done(payload);
  if (done.ok()) {
    const std::string once = sw::worker::encode_kv_done(*done);
    auto again = sw::worker::decode_kv_done(once);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(sw::worker::encode_kv_done(*again) == once);
  }
  return 0;
}

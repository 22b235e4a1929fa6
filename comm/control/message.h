// Control-channel wire format: a 20-byte little-endian header (magic, protocol version,
// type, request id, payload length) followed by a compact payload. Decoding rejects bad
// magic, unknown versions and types, truncation and oversized messages with a clear error.
// Add a message type: a MessageType value below and a case in message_type_name().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sw::comm {

constexpr uint32_t kControlMagic = 0x4D435753;  // "SWCM"
// 2: KV-transfer messages, info, KV sends in steps; 3: abort (and CURVE on every job's socket).
constexpr uint16_t kControlProtocolVersion = 3;
constexpr size_t kControlHeaderBytes = 20;

enum class MessageType : uint16_t {
  kHello = 1,      // worker -> coordinator on connect; payload: worker id
  kHeartbeat = 2,  // both ways, every heartbeat_interval_s
  kCommand = 3,    // coordinator -> worker (step commands)
  kResult = 4,     // worker -> coordinator
  kShutdown = 5,
  kError = 6,
  kInfo = 7,    // worker -> coordinator after hello; payload: its KV transport address
  kKv = 8,      // coordinator -> worker: send, expect or cancel a KV transfer
  kKvDone = 9,  // worker -> coordinator: a KV transfer is in this rank's cache, or failed
  kAbort = 10,  // coordinator -> worker: the job ends on an error, stop now; payload: why
};
const char* message_type_name(MessageType t);

struct ControlMessage {
  MessageType type = MessageType::kCommand;
  uint64_t request_id = 0;
  std::string payload;
  std::string peer;  // on the coordinator: the worker it came from / goes to
};

std::string encode_message(MessageType type, uint64_t request_id, std::string_view payload);
Result<ControlMessage> decode_message(std::string_view bytes, size_t max_bytes);

// Compact payloads: fixed-width little-endian integers, length-prefixed strings.
class PayloadWriter {
 public:
  PayloadWriter& u32(uint32_t v);
  PayloadWriter& u64(uint64_t v);
  PayloadWriter& f64(double v);
  PayloadWriter& str(std::string_view s);
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

class PayloadReader {
 public:
  explicit PayloadReader(std::string_view in) : in_(in) {}
  Result<uint32_t> u32();
  Result<uint64_t> u64();
  Result<double> f64();
  Result<std::string> str();
  // A u32 element count that the rest of the payload can hold at `min_bytes_each` (>= 1)
  // bytes per element. Decoders size their vectors with it, so a forged count cannot make
  // them allocate more than the message carries (20 bytes claiming 4 billion elements).
  Result<uint32_t> count(size_t min_bytes_each, const char* what);
  size_t remaining() const { return in_.size() - pos_; }
  bool done() const { return pos_ == in_.size(); }

 private:
  Status need(size_t n, const char* what) const;
  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace sw::comm

// Control message encoding and validation.
#include "comm/control/message.h"

#include <cstring>

namespace sw::comm {
namespace {

template <typename T>
void put(std::string* out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
template <typename T>
T get(std::string_view in, size_t pos) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<T>(static_cast<uint8_t>(in[pos + i])) << (8 * i);
  return v;
}

}  // namespace

const char* message_type_name(MessageType t) {
  switch (t) {
    case MessageType::kHello: return "hello";
    case MessageType::kHeartbeat: return "heartbeat";
    case MessageType::kCommand: return "command";
    case MessageType::kResult: return "result";
    case MessageType::kShutdown: return "shutdown";
    case MessageType::kError: return "error";
    case MessageType::kInfo: return "info";
    case MessageType::kKv: return "kv";
    case MessageType::kKvDone: return "kv-done";
    case MessageType::kAbort: return "abort";
  }
  return nullptr;
}

std::string encode_message(MessageType type, uint64_t request_id, std::string_view payload) {
  std::string out;
  out.reserve(kControlHeaderBytes + payload.size());
  put<uint32_t>(&out, kControlMagic);
  put<uint16_t>(&out, kControlProtocolVersion);
  put<uint16_t>(&out, static_cast<uint16_t>(type));
  put<uint64_t>(&out, request_id);
  put<uint32_t>(&out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

Result<ControlMessage> decode_message(std::string_view b, size_t max_bytes) {
  if (b.size() > max_bytes)
    return data_loss("control message of {} bytes exceeds control_max_message_bytes = {}", b.size(),
                     max_bytes);
  if (b.size() < kControlHeaderBytes)
    return data_loss("control message truncated: {} bytes, header needs {}", b.size(),
                     kControlHeaderBytes);
  uint32_t magic = get<uint32_t>(b, 0);
  if (magic != kControlMagic)
    return data_loss("control message has magic 0x{:08x}, expected 0x{:08x}", magic, kControlMagic);
  uint16_t version = get<uint16_t>(b, 4);
  if (version != kControlProtocolVersion)
    return data_loss("control message has protocol version {}, this build speaks {}", version,
                     kControlProtocolVersion);
  uint16_t type = get<uint16_t>(b, 6);
  if (message_type_name(static_cast<MessageType>(type)) == nullptr)
    return data_loss("control message has unknown type {}", type);
  uint32_t length = get<uint32_t>(b, 16);
  if (length != b.size() - kControlHeaderBytes)
    return data_loss("control message header says {} payload bytes but {} arrived", length,
                     b.size() - kControlHeaderBytes);
  ControlMessage m;
  m.type = static_cast<MessageType>(type);
  m.request_id = get<uint64_t>(b, 8);
  m.payload.assign(b.substr(kControlHeaderBytes));
  return m;
}

PayloadWriter& PayloadWriter::u32(uint32_t v) {
  put(&out_, v);
  return *this;
}
PayloadWriter& PayloadWriter::u64(uint64_t v) {
  put(&out_, v);
  return *this;
}
PayloadWriter& PayloadWriter::f64(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof(u));
  return u64(u);
}
PayloadWriter& PayloadWriter::str(std::string_view s) {
  u32(static_cast<uint32_t>(s.size()));
  out_.append(s);
  return *this;
}

Status PayloadReader::need(size_t n, const char* what) const {
  if (in_.size() - pos_ < n)
    return data_loss("control payload truncated reading {} at byte {} ({} left, need {})", what,
                     pos_, in_.size() - pos_, n);
  return Status();
}
Result<uint32_t> PayloadReader::u32() {
  SW_RETURN_IF_ERROR(need(4, "u32"));
  auto v = get<uint32_t>(in_, pos_);
  pos_ += 4;
  return v;
}
Result<uint64_t> PayloadReader::u64() {
  SW_RETURN_IF_ERROR(need(8, "u64"));
  auto v = get<uint64_t>(in_, pos_);
  pos_ += 8;
  return v;
}
Result<double> PayloadReader::f64() {
  SW_ASSIGN_OR_RETURN(uint64_t u, u64());
  double d;
  std::memcpy(&d, &u, sizeof(d));
  return d;
}
Result<uint32_t> PayloadReader::count(size_t min_bytes_each, const char* what) {
  const size_t at = pos_;
  SW_ASSIGN_OR_RETURN(uint32_t n, u32());
  if (min_bytes_each == 0) min_bytes_each = 1;
  if (n > remaining() / min_bytes_each)
    return data_loss(
        "control payload: {} {} at byte {} cannot fit in the {} bytes left ({} bytes each at "
        "least)",
        n, what, at, remaining(), min_bytes_each);
  return n;
}

Result<std::string> PayloadReader::str() {
  SW_ASSIGN_OR_RETURN(uint32_t n, u32());
  SW_RETURN_IF_ERROR(need(n, "string"));
  std::string s(in_.substr(pos_, n));
  pos_ += n;
  return s;
}

}  // namespace sw::comm

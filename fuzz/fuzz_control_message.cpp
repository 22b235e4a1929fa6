// libFuzzer harness: the control-channel wire format (comm/control/message.cpp). Decodes the
// input as a message; an accepted one must re-encode to the same bytes. Then reads its payload
// with PayloadReader in an order the input's own bytes choose, as every decoder built on it
// does, and checks that the reader never runs past the end and that every count() it accepts
// fits in the bytes left.
#include <cstdint>
#include <string>
#include <string_view>

#include "comm/control/message.h"
#include "fuzz/fuzz_check.h"

using sw::comm::PayloadReader;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The first byte picks the size limit, so limits below, at and above the size are all tried.
  const size_t max_bytes = static_cast<size_t>(data[0]) * 16;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  auto m = sw::comm::decode_message(bytes, max_bytes);
  if (m.ok()) {
    FUZZ_CHECK(bytes.size() <= max_bytes);
    FUZZ_CHECK(sw::comm::message_type_name(m->type) != nullptr);
    FUZZ_CHECK(sw::comm::encode_message(m->type, m->request_id, m->payload) == bytes);
  }
  // Payload reads, driven by the bytes themselves (message or not).
  PayloadReader r(bytes);
  size_t consumed = 0;
  for (size_t i = 0; i < bytes.size() && !r.done(); ++i) {
    bool ok = false;
    switch (static_cast<uint8_t>(bytes[i]) % 5) {
      case 0: {
        auto v = r.u32();
        ok = v.ok();
        if (ok) consumed += 4;
        break;
      }
      case 1: {
        auto v = r.u64();
        ok = v.ok();
        if (ok) consumed += 8;
        break;
      }
      case 2: {
        auto v = r.f64();
        ok = v.ok();
        if (ok) consumed += 8;
        break;
      }
      case 3: {
        // A count of elements of 1..16 bytes each must fit in what is left after it.
        const size_t each = 1 + static_cast<uint8_t>(bytes[i]) % 16;
        auto n = r.count(each, "elements");
        ok = n.ok();
        if (ok) {
          consumed += 4;
          FUZZ_CHECK(size_t{*n} * each <= r.remaining());
        }
        break;
      }
      default: {
        auto v = r.str();
        ok = v.ok();
        if (ok) consumed += 4 + v->size();
        break;
      }
    }
    FUZZ_CHECK(consumed <= bytes.size());
    if (!ok) break;
  }
  return 0;
}

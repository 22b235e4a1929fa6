// libFuzzer harness: the safetensors header parser on arbitrary file bytes (and the same bytes
// as a model.safetensors.index.json). Checks the contract of an accepted header: every tensor
// lies inside the file, holds numel x dtype size bytes, and no two non-empty tensors overlap.
#include <algorithm>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  auto header = sw::model::parse_safetensors_header(file, "fuzz.safetensors");
  if (header.ok()) {
    FUZZ_CHECK(header->data_offset >= 8 && header->data_offset <= size);
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto& t : header->tensors) {
      FUZZ_CHECK(t.data_begin <= t.data_end);
      FUZZ_CHECK(t.data_end <= size - header->data_offset);
      int64_t numel = 1;
      for (int64_t d : t.shape) {
        FUZZ_CHECK(d >= 0);
        numel *= d;  // the parser guarantees no overflow; UBSan would flag one
      }
      FUZZ_CHECK(t.data_end - t.data_begin ==
                 static_cast<uint64_t>(numel) * sw::dtype_size(t.dtype));
      if (t.data_end > t.data_begin) ranges.emplace_back(t.data_begin, t.data_end);
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) FUZZ_CHECK(ranges[i - 1].second <= ranges[i].first);
  }
  auto index = sw::model::parse_safetensors_index(file, "fuzz.index.json");
  if (index.ok())
    for (const auto& [tensor, shard] : *index)
      FUZZ_CHECK(!shard.empty() && shard.find('/') == std::string::npos);
  return 0;
}

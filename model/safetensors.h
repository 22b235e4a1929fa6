// safetensors reader: memory-mapped single files and sharded checkpoints
// (model.safetensors.index.json). Every header field is validated before any data is read,
// so a malformed file yields an error naming the file and tensor, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/tensor.h"
#include "model/tensor_slice.h"

namespace sw::model {

struct SafetensorsTensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t data_begin = 0;  // byte offsets relative to the start of the data section
  uint64_t data_end = 0;
};

// The validated layout of one safetensors file: its tensors, its metadata and where the data
// section starts.
struct SafetensorsHeader {
  std::vector<SafetensorsTensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // 8 + header length
};

// Validates the header of a whole safetensors file held in memory (`file`: every byte of it)
// as SafetensorsFile::open() describes; `path` names it in errors. Every accepted tensor's
// bytes lie inside `file`, and no two non-empty tensors overlap.
Result<SafetensorsHeader> parse_safetensors_header(std::string_view file, const std::string& path);

// The "weight_map" of a model.safetensors.index.json (`text`, named `path` in errors): tensor
// name -> shard file name, each a plain file name inside the checkpoint folder.
Result<std::map<std::string, std::string, std::less<>>> parse_safetensors_index(
    std::string_view text, const std::string& path);

class SafetensorsFile {
 public:
  // Maps the file and validates its header: 8-byte little-endian header length within the
  // file; header is a JSON object; each tensor has dtype F32/BF16/F16 (also I32/I64/U8),
  // integer shape and data_offsets [begin, end] with begin <= end, end within the data
  // section, end - begin == numel * dtype size; tensors do not overlap. "__metadata__" is
  // kept as string pairs.
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const SafetensorsTensorInfo* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Start of the tensor's bytes inside the mapping.
  const uint8_t* data(const SafetensorsTensorInfo& info) const;
  // Reads `slice` of tensor `name`, converted to `dtype`, into a new host tensor.
  Result<Tensor> read(std::string_view name, const TensorSlice& slice, DType dtype) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_section_ = nullptr;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint folder: `model.safetensors`, or several files listed by
// `model.safetensors.index.json` ("weight_map": tensor name -> file name). Files are opened
// lazily on first use, so a rank touching only its shard maps only the files it needs.
class SafetensorsCheckpoint {
 public:
  static Result<std::unique_ptr<SafetensorsCheckpoint>> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool has(std::string_view name) const;
  std::vector<std::string> names() const;
  // Shape and dtype of a tensor (opens its file).
  Result<SafetensorsTensorInfo> info(std::string_view name) const;
  Result<Tensor> read(std::string_view name, const TensorSlice& slice, DType dtype) const;

 private:
  Result<const SafetensorsFile*> file_for(std::string_view name) const;
  std::string dir_;
  std::map<std::string, std::string, std::less<>> weight_map_;  // tensor -> file name
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

}  // namespace sw::model

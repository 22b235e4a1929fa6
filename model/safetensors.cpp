// safetensors reader: mmap + full header validation (see safetensors.h for the contract).
// To accept a new dtype, add its tag to kSupportedDtypes and teach common/dtype.h about it.
#include "model/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/json_fields.h"
#include "common/limits.h"
#include "common/text_file.h"

namespace sw::model {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kIndexFile[] = "model.safetensors.index.json";
constexpr char kSingleFile[] = "model.safetensors";
// Same cap as the reference Rust implementation: a larger header is a corrupt length field,
// and refusing it keeps a hostile file from making the JSON parser chew on gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeTag {
  const char* tag;
  DType dtype;
};
constexpr DtypeTag kSupportedDtypes[] = {
    {"F32", DType::kF32}, {"BF16", DType::kBF16}, {"F16", DType::kF16},
    {"I32", DType::kI32}, {"I64", DType::kI64},   {"U8", DType::kU8},
};
// Valid safetensors tags this engine does not load: reported as unimplemented rather than as
// a corrupt file.
constexpr const char* kKnownUnsupportedDtypes[] = {
    "BOOL", "I8",      "U16",     "I16",     "U32",     "U64",     "F64",  "C64",
    "F4",   "F6_E2M3", "F6_E3M2", "F8_E4M3", "F8_E5M2", "F8_E8M0", "E8M0",
};

const char* safetensors_tag(DType d) {
  for (const auto& t : kSupportedDtypes)
    if (t.dtype == d) return t.tag;
  return "?";
}

std::string shown(const json& v) { return json_excerpt(v); }

// A JSON integer in [0, INT64_MAX], or nothing.
bool as_non_negative(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return *out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    *out = static_cast<uint64_t>(x);
    return true;
  }
  return false;
}

Result<DType> parse_tensor_dtype(const std::string& where, const json& v) {
  if (!v.is_string())
    return data_loss("{}: \"dtype\": expected a string, got {} {}", where, v.type_name(), shown(v));
  const std::string tag = v.get<std::string>();
  for (const auto& t : kSupportedDtypes)
    if (tag == t.tag) return t.dtype;
  for (const char* t : kKnownUnsupportedDtypes)
    if (tag == t)
      return unimplemented("{}: unsupported dtype '{}' (expected F32, BF16, F16, I32, I64 or U8)",
                           where, tag);
  return data_loss("{}: unsupported dtype '{}' (expected F32, BF16, F16, I32, I64 or U8)", where,
                   tag);
}

// Parses one header entry; `data_size` is the size of the data section.
Result<SafetensorsTensorInfo> parse_tensor_entry(const std::string& path, const std::string& name,
                                                 const json& e, uint64_t data_size) {
  const std::string where = fmt::format("{}: tensor '{}'", path, name);
  if (!e.is_object())
    return data_loss("{}: expected an object with dtype, shape and data_offsets, got {} {}", where,
                     e.type_name(), shown(e));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!e.contains(key)) return data_loss("{}: missing \"{}\"", where, key);

  SafetensorsTensorInfo info;
  info.name = name;
  SW_ASSIGN_OR_RETURN(info.dtype, parse_tensor_dtype(where, e["dtype"]));

  const json& shape = e["shape"];
  if (!shape.is_array())
    return data_loss("{}: \"shape\": expected an array of non-negative integers, got {} {}", where,
                     shape.type_name(), shown(shape));
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : shape) {
    uint64_t dim = 0;
    if (!as_non_negative(d, &dim))
      return data_loss("{}: \"shape\" {}: expected non-negative integers, got {}", where,
                       shown(shape), shown(d));
    info.shape.push_back(static_cast<int64_t>(dim));
    if (dim != 0 && numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim)
      overflow = true;
    numel *= dim;  // wraps only when overflow is already set
  }
  const uint64_t esize = dtype_size(info.dtype);
  if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / esize)
    return data_loss("{}: shape {} has more elements than fit in 64 bits", where,
                     shape_str(info.shape));
  const uint64_t nbytes = numel * esize;

  const json& offs = e["data_offsets"];
  uint64_t begin = 0, end = 0;
  if (!offs.is_array() || offs.size() != 2 || !as_non_negative(offs[0], &begin) ||
      !as_non_negative(offs[1], &end))
    return data_loss("{}: \"data_offsets\": expected [begin, end] (non-negative integers), got {}",
                     where, shown(offs));
  if (begin > end)
    return data_loss("{}: data_offsets [{}, {}] have begin > end", where, begin, end);
  if (end > data_size)
    return data_loss("{}: data_offsets [{}, {}] end past the data section ({} bytes)", where, begin,
                     end, data_size);
  if (end - begin != nbytes)
    return data_loss("{}: data_offsets [{}, {}] hold {} bytes but shape {} of {} needs {}", where,
                     begin, end, end - begin, shape_str(info.shape), safetensors_tag(info.dtype),
                     nbytes);
  info.data_begin = begin;
  info.data_end = end;
  return info;
}

// Shard file names come from the index: they must name a file inside the checkpoint folder.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find("..") == std::string::npos &&
         name.find('\0') == std::string::npos;
}

}  // namespace

Result<SafetensorsHeader> parse_safetensors_header(std::string_view file, const std::string& path) {
  const uint64_t file_size = file.size();
  if (file_size < 8)
    return data_loss("{}: file is {} bytes, too short for the 8-byte header length", path,
                     file_size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(file[i]);
  // Written as a subtraction so that a length near 2^64 cannot wrap around.
  if (header_len > file_size - 8)
    return data_loss("{}: header length {} runs past the end of the file ({} bytes)", path,
                     header_len, file_size);
  if (header_len > kMaxHeaderBytes)
    return data_loss("{}: header length {} exceeds the {}-byte limit", path, header_len,
                     kMaxHeaderBytes);
  const char* header_begin = file.data() + 8;
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) {
    return data_loss("{}: header ({} bytes) is not valid JSON: {}", path, header_len, e.what());
  }
  if (!header.is_object())
    return data_loss("{}: header must be a JSON object, got {}", path, header.type_name());

  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        return data_loss("{}: \"__metadata__\": expected an object of strings, got {}", path,
                         entry.type_name());
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string())
          return data_loss("{}: \"__metadata__\" key '{}': expected a string, got {} {}", path, k,
                           v.type_name(), shown(v));
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    SW_ASSIGN_OR_RETURN(SafetensorsTensorInfo info,
                        parse_tensor_entry(path, name, entry, data_size));
    out.tensors.push_back(std::move(info));
  }

  // Non-empty byte ranges must be disjoint (empty tensors occupy no bytes).
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const auto& t : out.tensors)
    if (t.data_end > t.data_begin) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
    return a->data_begin != b->data_begin ? a->data_begin < b->data_begin
                                          : a->data_end < b->data_end;
  });
  const SafetensorsTensorInfo* furthest = nullptr;
  for (const auto* t : by_offset) {
    if (furthest && t->data_begin < furthest->data_end)
      return data_loss("{}: tensor '{}' bytes [{}, {}] overlap tensor '{}' bytes [{}, {}]", path,
                       t->name, t->data_begin, t->data_end, furthest->name, furthest->data_begin,
                       furthest->data_end);
    if (!furthest || t->data_end > furthest->data_end) furthest = t;
  }
  return out;
}

Result<std::map<std::string, std::string, std::less<>>> parse_safetensors_index(
    std::string_view text, const std::string& ipath) {
  json index;
  try {
    index = json::parse(text);
  } catch (const json::exception& e) {
    return data_loss("{}: not valid JSON: {}", ipath, e.what());
  }
  if (!index.is_object())
    return data_loss("{}: expected a JSON object, got {}", ipath, index.type_name());
  if (!index.contains("weight_map")) return data_loss("{}: missing \"weight_map\"", ipath);
  const json& wm = index["weight_map"];
  if (!wm.is_object())
    return data_loss("{}: \"weight_map\": expected an object (tensor -> file), got {}", ipath,
                     wm.type_name());
  std::map<std::string, std::string, std::less<>> out;
  for (const auto& [name, file] : wm.items()) {
    if (!file.is_string())
      return data_loss("{}: weight_map key '{}': expected a file name string, got {} {}", ipath,
                       name, file.type_name(), shown(file));
    std::string fname = file.get<std::string>();
    if (!is_plain_file_name(fname))
      return data_loss(
          "{}: weight_map key '{}': file name '{}' must be a plain file name inside the "
          "checkpoint folder (no '/' or '..')",
          ipath, name, fname);
    out.emplace(name, std::move(fname));
  }
  return out;
}

// ----------------------------------------------------------------------------------------
// SafetensorsFile

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return not_found("{}: no such file", path);
    return invalid_argument("{}: cannot open: {}", path, std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return invalid_argument("{}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument("{}: not a regular file", path);
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return data_loss("{}: file is {} bytes, too short for the 8-byte header length", path,
                     file_size);
  }
  void* p = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (p == MAP_FAILED)
    return invalid_argument("{}: mmap of {} bytes failed: {}", path, file_size,
                            std::strerror(map_err));

  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = static_cast<const uint8_t*>(p);
  f->map_size_ = file_size;

  SW_ASSIGN_OR_RETURN(
      SafetensorsHeader header,
      parse_safetensors_header(std::string_view(reinterpret_cast<const char*>(f->map_), file_size),
                               path));
  f->data_section_ = f->map_ + header.data_offset;
  f->tensors_ = std::move(header.tensors);
  f->metadata_ = std::move(header.metadata);
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_.emplace(f->tensors_[i].name, i);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

const SafetensorsTensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t* SafetensorsFile::data(const SafetensorsTensorInfo& info) const {
  return data_section_ + info.data_begin;
}

Result<Tensor> SafetensorsFile::read(std::string_view name, const TensorSlice& slice,
                                     DType dtype) const {
  const SafetensorsTensorInfo* info = find(name);
  if (!info) return not_found("{}: no tensor '{}'", path_, name);
  const std::string what = fmt::format("{}: tensor '{}'", path_, name);
  SW_ASSIGN_OR_RETURN(Shape sub, slice.apply(info->shape, what));
  // Float -> integer casts are undefined for out-of-range values; only exact copies there.
  if (dtype != info->dtype && !is_float(dtype))
    return invalid_argument("{}: cannot convert {} to {}", what, dtype_name(info->dtype),
                            dtype_name(dtype));
  SW_RETURN_IF_ERROR(check_host_allocation(sub, dtype, what));
  Tensor out = Tensor::empty(sub, dtype);
  const uint8_t* src = data(*info);
  const size_t esize = dtype_size(info->dtype);
  if (dtype == info->dtype || reinterpret_cast<uintptr_t>(src) % esize == 0) {
    copy_slice(src, info->dtype, info->shape, slice, out);
  } else {
    // Unaligned source (header length or offsets not multiples of the element size):
    // gather with memcpy first, then convert from the aligned copy.
    Tensor staged = Tensor::empty(sub, info->dtype);
    copy_slice(src, info->dtype, info->shape, slice, staged);
    copy_slice(staged.data(), info->dtype, sub, TensorSlice::whole(), out);
  }
  return out;
}

// ----------------------------------------------------------------------------------------
// SafetensorsCheckpoint

Result<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::open(const std::string& dir) {
  std::unique_ptr<SafetensorsCheckpoint> ckpt(new SafetensorsCheckpoint());
  ckpt->dir_ = dir;
  std::error_code ec;
  const fs::path index_path = fs::path(dir) / kIndexFile;
  const fs::path single_path = fs::path(dir) / kSingleFile;
  if (fs::exists(index_path, ec)) {
    const std::string ipath = index_path.string();
    SW_ASSIGN_OR_RETURN(std::string text, read_text_file(ipath, limits::kMaxConfigFileBytes,
                                                         "the safetensors index"));
    SW_ASSIGN_OR_RETURN(ckpt->weight_map_, parse_safetensors_index(text, ipath));
    return ckpt;
  }
  if (fs::exists(single_path, ec)) {
    SW_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f,
                        SafetensorsFile::open(single_path.string()));
    for (const auto& t : f->tensors()) ckpt->weight_map_.emplace(t.name, kSingleFile);
    ckpt->files_.emplace(kSingleFile, std::move(f));
    return ckpt;
  }
  return not_found("no {} or {} in {}", kSingleFile, kIndexFile, dir);
}

bool SafetensorsCheckpoint::has(std::string_view name) const {
  return weight_map_.find(name) != weight_map_.end();
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(weight_map_.size());
  for (const auto& [name, file] : weight_map_) out.push_back(name);
  return out;
}

Result<const SafetensorsFile*> SafetensorsCheckpoint::file_for(std::string_view name) const {
  auto it = weight_map_.find(name);
  if (it == weight_map_.end()) return not_found("{}: no tensor '{}' in the checkpoint", dir_, name);
  const std::string& fname = it->second;
  auto cached = files_.find(fname);
  if (cached == files_.end()) {
    auto opened = SafetensorsFile::open((fs::path(dir_) / fname).string());
    if (!opened.ok())
      return opened.status().with_context(
          fmt::format("{}: tensor '{}' is listed in {} as in '{}'", dir_, name, kIndexFile, fname));
    cached = files_.emplace(fname, std::move(opened).value()).first;
  }
  const SafetensorsFile* f = cached->second.get();
  if (!f->find(name))
    return data_loss("{}: {} maps tensor '{}' to '{}', but that file has no such tensor", dir_,
                     kIndexFile, name, f->path());
  return f;
}

Result<SafetensorsTensorInfo> SafetensorsCheckpoint::info(std::string_view name) const {
  SW_ASSIGN_OR_RETURN(const SafetensorsFile* f, file_for(name));
  return *f->find(name);
}

Result<Tensor> SafetensorsCheckpoint::read(std::string_view name, const TensorSlice& slice,
                                           DType dtype) const {
  SW_ASSIGN_OR_RETURN(const SafetensorsFile* f, file_for(name));
  return f->read(name, slice, dtype);
}

}  // namespace sw::model

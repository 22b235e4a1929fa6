// .npy writer/reader.
#include "common/npy.h"

#include <fmt/format.h>

#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>

namespace sw {

Status write_npy(const std::string& path, const float* data, const Shape& shape) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i)
    dims +=
        fmt::format("{}{}", shape[i], shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
  std::string header =
      fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", dims);
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  if (!f) return not_found("cannot open '{}' for writing", path);
  const char magic[] = "\x93NUMPY\x01\x00";
  f.write(magic, 8);
  uint16_t len = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data),
          static_cast<std::streamsize>(shape_numel(shape) * 4));
  if (!f) return data_loss("short write to '{}'", path);
  return Status();
}

Result<Tensor> read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found("cannot open '{}'", path);
  char magic[8];
  uint16_t len = 0;
  f.read(magic, 8);
  f.read(reinterpret_cast<char*>(&len), 2);
  if (!f || std::memcmp(magic, "\x93NUMPY\x01", 7) != 0)
    return data_loss("'{}' is not a .npy v1 file", path);
  std::string header(len, '\0');
  f.read(header.data(), len);
  if (!f) return data_loss("'{}': header length {} runs past the end of the file", path, len);
  if (header.find("'<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos)
    return data_loss("'{}': only C-order float32 is supported (header {})", path, header);
  // No std::regex: GCC 12 reports false maybe-uninitialized warnings in <regex> under ASan.
  const size_t shape_at = header.find("'shape': (");
  const size_t close = shape_at == std::string::npos ? shape_at : header.find(")", shape_at);
  if (close == std::string::npos) return data_loss("'{}': no shape in header", path);
  const size_t dims_begin = shape_at + std::strlen("'shape': (");
  std::string dims = header.substr(dims_begin, close - dims_begin);
  if (dims.find_first_not_of("0123456789, ") != std::string::npos)
    return data_loss("'{}': no shape in header", path);
  Shape shape;
  // Dimensions are checked against the bytes left in the file before allocating, so a
  // corrupt shape is an error rather than an exception or a huge allocation.
  int64_t numel = 1;
  for (size_t pos = 0; pos < dims.size();) {
    size_t next = dims.find(',', pos);
    std::string d = dims.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    const size_t first = d.find_first_not_of(' ');
    if (first != std::string::npos) {
      const size_t last = d.find_last_not_of(' ');
      int64_t v = 0;
      auto [end, ec] = std::from_chars(d.data() + first, d.data() + last + 1, v);
      if (ec != std::errc() || end != d.data() + last + 1 ||
          (v != 0 && numel > std::numeric_limits<int64_t>::max() / 4 / v))
        return data_loss("'{}': shape ({}) is too large or malformed", path, dims);
      numel *= v;
      shape.push_back(v);
    }
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  const std::streampos data_pos = f.tellg();
  f.seekg(0, std::ios::end);
  const int64_t data_bytes = static_cast<int64_t>(f.tellg() - data_pos);
  f.seekg(data_pos);
  if (numel * 4 > data_bytes)
    return data_loss("'{}': data ({} bytes) shorter than shape {}", path, data_bytes,
                     shape_str(shape));
  Tensor t = Tensor::empty(shape, DType::kF32);
  f.read(static_cast<char*>(t.data()), static_cast<std::streamsize>(t.nbytes()));
  if (!f) return data_loss("'{}': data shorter than shape {}", path, shape_str(shape));
  return t;
}

}  // namespace sw

// Bounded whole-file reads (see text_file.h).
#include "common/text_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>

namespace sw {

Result<std::string> read_text_file(const std::string& path, int64_t max_bytes, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("{}: cannot open {}: {}", path, what, std::strerror(errno));
  std::string text;
  char buf[64 * 1024];
  // Reads in chunks and stops one byte past the limit: the size of a pipe or a device file
  // is unknown in advance.
  while (in) {
    in.read(buf, sizeof(buf));
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (static_cast<int64_t>(text.size()) > max_bytes)
      return invalid_argument("{}: {} larger than the limit of {} bytes", path, what, max_bytes);
  }
  if (in.bad()) return data_loss("{}: read error in {}", path, what);
  return text;
}

}  // namespace sw

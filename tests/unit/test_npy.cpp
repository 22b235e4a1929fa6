// .npy writer/reader tests: round trips, numpy's exact header layout (format 1.0), and
// malformed files. Add a malformed case by editing the bytes of a valid file (npy_bytes).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/npy.h"
#include "common/tensor.h"

namespace sw {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "sw_npy_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  static std::string slurp(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  std::string write_raw(const std::string& name, const std::string& content) {
    std::string p = path(name);
    std::ofstream f(p, std::ios::binary);
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
    return p;
  }
  // A .npy file with the given header dict text (padded like numpy) and payload.
  static std::string npy_bytes(const std::string& dict, const std::string& payload) {
    std::string header = dict;
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    std::string out("\x93NUMPY\x01\x00", 8);
    out.push_back(static_cast<char>(header.size() & 0xff));
    out.push_back(static_cast<char>(header.size() >> 8));
    return out + header + payload;
  }
  Status read_error(const std::string& content) {
    bad_path_ = write_raw("bad.npy", content);
    auto t = read_npy(bad_path_);
    EXPECT_FALSE(t.ok()) << "reading a malformed .npy succeeded";
    return t.status();
  }
  std::string dir_;
  std::string bad_path_;
};

std::vector<float> ramp(int64_t n) {
  std::vector<float> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(0.25f * static_cast<float>(i) - 1.5f);
  return v;
}

TEST_F(NpyTest, RoundTrip) {
  for (const Shape& shape : {Shape{3}, Shape{2, 5}, Shape{0, 4}, Shape{2, 3, 4}, Shape{}}) {
    const std::vector<float> v = ramp(shape_numel(shape));
    const std::string p = path("x.npy");
    ASSERT_TRUE(write_npy(p, v.data(), shape).ok()) << shape_str(shape);
    auto t = read_npy(p);
    ASSERT_TRUE(t.ok()) << shape_str(shape) << ": " << t.status().to_string();
    EXPECT_EQ(t->dtype(), DType::kF32);
    EXPECT_EQ(t->shape(), shape);
    EXPECT_EQ(t->to_floats(), v) << shape_str(shape);
  }
}

TEST_F(NpyTest, HeaderFollowsNumpyFormat10) {
  struct Case {
    Shape shape;
    const char* dims;  // as numpy's repr of the shape tuple
  };
  for (const Case& c :
       {Case{{3}, "(3,)"}, Case{{2, 5}, "(2, 5)"}, Case{{0, 4}, "(0, 4)"}, Case{{}, "()"}}) {
    const std::vector<float> v = ramp(shape_numel(c.shape));
    const std::string p = path("h.npy");
    ASSERT_TRUE(write_npy(p, v.data(), c.shape).ok());
    const std::string bytes = slurp(p);
    ASSERT_GE(bytes.size(), 10u);
    EXPECT_EQ(bytes.substr(0, 6), "\x93NUMPY");
    EXPECT_EQ(bytes[6], '\x01') << "major version";
    EXPECT_EQ(bytes[7], '\x00') << "minor version";
    const size_t header_len =
        static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    EXPECT_EQ((10 + header_len) % 64, 0u) << "preamble + header must be 64-byte aligned";
    ASSERT_EQ(bytes.size(), 10 + header_len + v.size() * 4);
    const std::string header = bytes.substr(10, header_len);
    EXPECT_EQ(header.back(), '\n');
    EXPECT_THAT(header,
                StartsWith(std::string("{'descr': '<f4', 'fortran_order': False, 'shape': ") +
                           c.dims + ", }"));
    // Only spaces between the dict and the newline.
    const size_t close = header.find('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), header_len - 1);
    // Data is raw little-endian float32 right after the header.
    std::vector<float> data(v.size());
    if (!data.empty()) std::memcpy(data.data(), bytes.data() + 10 + header_len, v.size() * 4);
    EXPECT_EQ(data, v);
  }
}

TEST_F(NpyTest, ReadsHeaderWrittenByNumpy) {
  // Same layout numpy.save produces for np.arange(6, dtype='<f4').reshape(2, 3).
  std::string payload;
  for (int i = 0; i < 6; ++i) {
    float f = static_cast<float>(i);
    payload.append(reinterpret_cast<const char*>(&f), 4);
  }
  const std::string p = write_raw(
      "np.npy", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", payload));
  auto t = read_npy(p);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->shape(), (Shape{2, 3}));
  EXPECT_EQ(t->to_floats(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
}

TEST_F(NpyTest, MissingFileIsNotFound) {
  auto t = read_npy(path("none.npy"));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), HasSubstr("none.npy"));
}

TEST_F(NpyTest, BadMagic) {
  std::string bytes =
      npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0'));
  bytes[1] = 'X';
  Status s = read_error(bytes);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr(".npy")));
  s = read_error("PK\x03\x04");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(bad_path_));
  s = read_error("");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
}

TEST_F(NpyTest, NonFloat32Descr) {
  for (const char* descr : {"<f8", "<i4", ">f4", "|u1"}) {
    Status s = read_error(npy_bytes(
        std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (2,), }",
        std::string(16, '\0')));
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << descr;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("float32"))) << descr;
  }
  Status s = read_error(npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                                  std::string(16, '\0')));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("C-order"));
}

TEST_F(NpyTest, TruncatedData) {
  Status s = read_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }",
                                  std::string(60, '\0')));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("[4, 4]")));
  // Header length field past the end of the file.
  std::string bytes = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "");
  bytes[8] = '\xff';
  bytes[9] = '\x7f';
  s = read_error(bytes);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(bad_path_));
}

TEST_F(NpyTest, HugeOrMalformedShapeIsAnErrorNotACrash) {
  for (const char* dims : {"(99999999999999999999999,)", "(4294967296, 4294967296)",
                           "(1000000000000,)", "(3037000500, 3037000500, 2)", "(2, -3)", "(2 3)"}) {
    Status s = read_error(
        npy_bytes(std::string("{'descr': '<f4', 'fortran_order': False, 'shape': ") + dims + ", }",
                  std::string(16, '\0')));
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << dims;
    EXPECT_THAT(s.message(), HasSubstr(bad_path_)) << dims;
  }
}

}  // namespace
}  // namespace sw

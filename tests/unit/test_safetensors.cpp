// safetensors reader tests: files are built byte by byte (StFile) so each test controls every
// header field. Add a malformed-file case by editing StFile::header before writing it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/tensor.h"
#include "model/safetensors.h"

namespace sw::model {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

// A safetensors file under construction: header JSON plus data bytes, both open to edits.
struct StFile {
  json header = json::object();
  std::vector<uint8_t> data;

  // Appends a tensor whose offsets follow the previous one.
  StFile& add(const std::string& name, const std::string& dtype, const Shape& shape,
              const void* bytes, size_t nbytes) {
    const uint64_t begin = data.size();
    const auto* p = static_cast<const uint8_t*>(bytes);
    data.insert(data.end(), p, p + nbytes);
    header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, data.size()}}};
    return *this;
  }
  StFile& add_f32(const std::string& name, const Shape& shape, const std::vector<float>& v) {
    return add(name, "F32", shape, v.data(), v.size() * 4);
  }
  StFile& add_bf16(const std::string& name, const Shape& shape, const std::vector<float>& v) {
    std::vector<uint16_t> bits;
    for (float x : v) bits.push_back(float_to_bf16_bits(x));
    return add(name, "BF16", shape, bits.data(), bits.size() * 2);
  }
  StFile& add_f16(const std::string& name, const Shape& shape, const std::vector<float>& v) {
    std::vector<uint16_t> bits;
    for (float x : v) bits.push_back(float_to_f16_bits(x));
    return add(name, "F16", shape, bits.data(), bits.size() * 2);
  }
  StFile& add_i32(const std::string& name, const Shape& shape, const std::vector<int32_t>& v) {
    return add(name, "I32", shape, v.data(), v.size() * 4);
  }

  // The file's bytes. `pad` pads the header with spaces to a multiple of 8, as writers do.
  std::string bytes(bool pad = true) const { return raw(header.dump(), data, pad); }

  static std::string raw(std::string hdr, const std::vector<uint8_t>& payload, bool pad = false) {
    if (pad)
      while (hdr.size() % 8) hdr.push_back(' ');
    return le64(hdr.size()) + hdr + std::string(payload.begin(), payload.end());
  }
  static std::string le64(uint64_t v) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return s;
  }
};

// Values exact in float32, bfloat16 and float16: multiples of 0.5 in [-15, 15].
float exact_value(int64_t i) { return static_cast<float>(i % 61) * 0.5f - 15.f; }
std::vector<float> exact_values(int64_t n, int64_t offset = 0) {
  std::vector<float> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(exact_value(i + offset));
  return v;
}
// Flat index as value: exact in float32 for the small tensors used here.
std::vector<float> iota(int64_t n) {
  std::vector<float> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<float>(i));
  return v;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "sw_safetensors_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string write(const std::string& name, const std::string& content) {
    std::string path = (fs::path(dir_) / name).string();
    std::ofstream f(path, std::ios::binary);
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
    EXPECT_TRUE(f.good()) << path;
    return path;
  }
  std::string write(const std::string& name, const StFile& st) { return write(name, st.bytes()); }

  std::unique_ptr<SafetensorsFile> open_ok(const std::string& path) {
    auto f = SafetensorsFile::open(path);
    EXPECT_TRUE(f.ok()) << f.status().to_string();
    return f.ok() ? std::move(f).value() : nullptr;
  }
  // Writes `content` as bad.safetensors and returns the error from opening it.
  Status open_bad(const std::string& content) {
    bad_path_ = write("bad.safetensors", content);
    auto f = SafetensorsFile::open(bad_path_);
    EXPECT_FALSE(f.ok()) << "opening a malformed file succeeded";
    return f.status();
  }
  Status open_bad(const StFile& st) { return open_bad(st.bytes()); }

  std::string dir_;
  std::string bad_path_;
};

std::vector<float> read_floats(const SafetensorsFile& f, const std::string& name,
                               const TensorSlice& slice = TensorSlice::whole(),
                               DType dtype = DType::kF32) {
  auto t = f.read(name, slice, dtype);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  if (!t.ok()) return {};
  EXPECT_EQ(t->dtype(), dtype);
  return t->to_floats();
}

// ---------------------------------------------------------------------------------------
// Round trips

TEST_F(SafetensorsTest, RoundTripF32Bf16F16ToEachDtype) {
  StFile st;
  st.add_f32("a.f32", {3, 4}, exact_values(12))
      .add_bf16("b.bf16", {5}, exact_values(5, 20))
      .add_f16("c.f16", {2, 3}, exact_values(6, 40));
  st.header["__metadata__"] = {{"format", "pt"}};
  auto f = open_ok(write("model.safetensors", st));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->metadata().at("format"), "pt");

  struct Case {
    const char* name;
    DType stored;
    Shape shape;
    std::vector<float> want;
  };
  const Case cases[] = {{"a.f32", DType::kF32, {3, 4}, exact_values(12)},
                        {"b.bf16", DType::kBF16, {5}, exact_values(5, 20)},
                        {"c.f16", DType::kF16, {2, 3}, exact_values(6, 40)}};
  for (const Case& c : cases) {
    const SafetensorsTensorInfo* info = f->find(c.name);
    ASSERT_NE(info, nullptr) << c.name;
    EXPECT_EQ(info->dtype, c.stored);
    EXPECT_EQ(info->shape, c.shape);
    for (DType to : {DType::kF32, DType::kBF16, DType::kF16}) {
      auto t = f->read(c.name, TensorSlice::whole(), to);
      ASSERT_TRUE(t.ok()) << t.status().to_string();
      EXPECT_EQ(t->shape(), c.shape);
      EXPECT_EQ(t->dtype(), to);
      EXPECT_EQ(t->to_floats(), c.want) << c.name << " -> " << dtype_name(to);
    }
  }
}

TEST_F(SafetensorsTest, ConversionRoundsLikeDtypeHelpers) {
  const std::vector<float> v = {0.1f, -3.14159f, 1e-3f, 65504.f, 1e-8f};
  StFile st;
  st.add_f32("x", {5}, v);
  auto f = open_ok(write("m.safetensors", st));
  ASSERT_TRUE(f);
  std::vector<float> bf = read_floats(*f, "x", TensorSlice::whole(), DType::kBF16);
  std::vector<float> h = read_floats(*f, "x", TensorSlice::whole(), DType::kF16);
  ASSERT_EQ(bf.size(), v.size());
  ASSERT_EQ(h.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(bf[i], bf16_bits_to_float(float_to_bf16_bits(v[i]))) << i;
    EXPECT_EQ(h[i], f16_bits_to_float(float_to_f16_bits(v[i]))) << i;
  }
  EXPECT_EQ(read_floats(*f, "x"), v);
}

TEST_F(SafetensorsTest, IntegerTensorsCopyExactlyAndConvertToFloat) {
  StFile st;
  st.add_i32("ids", {4}, {7, -2, 1 << 20, 0});
  auto f = open_ok(write("m.safetensors", st));
  ASSERT_TRUE(f);
  auto t = f->read("ids", TensorSlice::whole(), DType::kI32);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  const int32_t* p = t->data_as<int32_t>();
  EXPECT_EQ(std::vector<int32_t>(p, p + 4), (std::vector<int32_t>{7, -2, 1 << 20, 0}));
  EXPECT_EQ(read_floats(*f, "ids"), (std::vector<float>{7.f, -2.f, 1048576.f, 0.f}));
  // Float -> integer would be undefined for out-of-range values: refused.
  st = StFile();
  st.add_f32("w", {2}, {1.f, 2.f});
  auto g = open_ok(write("n.safetensors", st));
  ASSERT_TRUE(g);
  auto bad = g->read("w", TensorSlice::whole(), DType::kI32);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), AllOf(HasSubstr("n.safetensors"), HasSubstr("'w'")));
}

TEST_F(SafetensorsTest, UnalignedDataIsReadAndConverted) {
  // Header padded to 8 bytes and a 1-byte tensor first: "w" starts at an odd address.
  const std::vector<float> v = exact_values(6);
  StFile st;
  const uint8_t one = 9;
  st.add("pad", "U8", {1}, &one, 1).add_f32("w", {2, 3}, v);
  auto f = open_ok(write("odd.safetensors", st));
  ASSERT_TRUE(f);
  EXPECT_NE(reinterpret_cast<uintptr_t>(f->data(*f->find("w"))) % 4, 0u);
  EXPECT_EQ(read_floats(*f, "w"), v);
  EXPECT_EQ(read_floats(*f, "w", TensorSlice::whole(), DType::kBF16), v);
  EXPECT_EQ(read_floats(*f, "w", TensorSlice::cols(2, 1, 3), DType::kF16),
            (std::vector<float>{v[1], v[2], v[4], v[5]}));
  EXPECT_EQ(read_floats(*f, "pad"), std::vector<float>{9.f});
}

TEST_F(SafetensorsTest, ZeroSizedTensorsAreAllowed) {
  StFile st;
  st.add_f32("empty", {0, 4}, {}).add_f32("w", {2}, {1.f, 2.f});
  st.header["empty2"] = {{"dtype", "F32"}, {"shape", {3, 0}}, {"data_offsets", {4, 4}}};
  auto f = open_ok(write("m.safetensors", st));
  ASSERT_TRUE(f);
  auto t = f->read("empty", TensorSlice::whole(), DType::kF32);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->shape(), (Shape{0, 4}));
  EXPECT_EQ(t->numel(), 0);
  EXPECT_EQ(read_floats(*f, "w"), (std::vector<float>{1.f, 2.f}));
}

TEST_F(SafetensorsTest, UnknownTensorIsNotFound) {
  StFile st;
  st.add_f32("w", {2}, {1.f, 2.f});
  auto f = open_ok(write("m.safetensors", st));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->find("nope"), nullptr);
  auto t = f->read("nope", TensorSlice::whole(), DType::kF32);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), AllOf(HasSubstr("m.safetensors"), HasSubstr("'nope'")));
}

// ---------------------------------------------------------------------------------------
// Slices (values are the flat index, so the expectation is the index formula)

TEST_F(SafetensorsTest, SlicesOf2DTensor) {
  const int64_t R = 6, C = 8;
  StFile st;
  st.add_f32("w", {R, C}, iota(R * C));
  auto f = open_ok(write("m.safetensors", st));
  ASSERT_TRUE(f);

  std::vector<float> want;
  for (int64_t r = 2; r < 5; ++r)
    for (int64_t c = 0; c < C; ++c) want.push_back(static_cast<float>(r * C + c));
  auto rows = f->read("w", TensorSlice::rows(2, 5), DType::kF32);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->shape(), (Shape{3, C}));
  EXPECT_EQ(rows->to_floats(), want);

  want.clear();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 3; c < 7; ++c) want.push_back(static_cast<float>(r * C + c));
  auto cols = f->read("w", TensorSlice::cols(R, 3, 7), DType::kF32);
  ASSERT_TRUE(cols.ok());
  EXPECT_EQ(cols->shape(), (Shape{R, 4}));
  EXPECT_EQ(cols->to_floats(), want);
  // Same slice converted on the way (integers < 256 are exact in bfloat16).
  EXPECT_EQ(read_floats(*f, "w", TensorSlice::cols(R, 3, 7), DType::kBF16), want);
}

TEST_F(SafetensorsTest, SlicesOf3DTensor) {
  const int64_t E = 4, N = 5, K = 6;
  StFile st;
  st.add_f32("experts", {E, N, K}, iota(E * N * K));
  auto f = open_ok(write("m.safetensors", st));
  ASSERT_TRUE(f);
  auto expect_box = [&](const TensorSlice& s, DimRange e, DimRange n, DimRange k) {
    std::vector<float> want;
    for (int64_t i = e.begin; i < e.end; ++i)
      for (int64_t j = n.begin; j < n.end; ++j)
        for (int64_t l = k.begin; l < k.end; ++l)
          want.push_back(static_cast<float>((i * N + j) * K + l));
    auto t = f->read("experts", s, DType::kF32);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    EXPECT_EQ(t->shape(), (Shape{e.end - e.begin, n.end - n.begin, k.end - k.begin}));
    EXPECT_EQ(t->to_floats(), want) << s.to_string();
  };
  // Experts 1..2 whole (the EP shard).
  expect_box(TensorSlice::rows(1, 3), {1, 3}, {0, N}, {0, K});
  // A box strictly inside every dimension.
  expect_box(TensorSlice{{{1, 3}, {2, 4}, {1, 5}}}, {1, 3}, {2, 4}, {1, 5});
  // Last column only, all experts and rows.
  expect_box(TensorSlice{{{0, E}, {0, N}, {5, 6}}}, {0, E}, {0, N}, {5, 6});
}

TEST_F(SafetensorsTest, EmptySliceGivesEmptyTensor) {
  StFile st;
  st.add_f32("w", {6, 8}, iota(48));
  auto f = open_ok(write("m.safetensors", st));
  ASSERT_TRUE(f);
  auto rows = f->read("w", TensorSlice::rows(2, 2), DType::kBF16);
  ASSERT_TRUE(rows.ok()) << rows.status().to_string();
  EXPECT_EQ(rows->shape(), (Shape{0, 8}));
  EXPECT_EQ(rows->numel(), 0);
  auto cols = f->read("w", TensorSlice::cols(6, 8, 8), DType::kF32);
  ASSERT_TRUE(cols.ok()) << cols.status().to_string();
  EXPECT_EQ(cols->shape(), (Shape{6, 0}));
}

TEST_F(SafetensorsTest, OutOfRangeSliceNamesTensorAndFile) {
  StFile st;
  st.add_f32("layers.0.w", {6, 8}, iota(48));
  auto f = open_ok(write("m.safetensors", st));
  ASSERT_TRUE(f);
  for (const TensorSlice& s :
       {TensorSlice::rows(5, 7), TensorSlice::cols(6, 4, 9), TensorSlice::rows(-1, 2),
        TensorSlice::rows(3, 2), TensorSlice{{{0, 6}, {0, 8}, {0, 1}}}}) {
    auto t = f->read("layers.0.w", s, DType::kF32);
    ASSERT_FALSE(t.ok()) << s.to_string();
    EXPECT_EQ(t.status().code(), StatusCode::kOutOfRange);
    EXPECT_THAT(t.status().message(),
                AllOf(HasSubstr("m.safetensors"), HasSubstr("'layers.0.w'"), HasSubstr("[6, 8]")));
  }
}

// ---------------------------------------------------------------------------------------
// Checkpoint folders

TEST_F(SafetensorsTest, SingleFileCheckpoint) {
  StFile st;
  st.add_f32("a", {2, 2}, {1, 2, 3, 4}).add_bf16("b", {3}, {5, 6, 7});
  write("model.safetensors", st);
  auto ck = SafetensorsCheckpoint::open(dir_);
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();
  EXPECT_EQ((*ck)->names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE((*ck)->has("a"));
  EXPECT_FALSE((*ck)->has("c"));
  auto info = (*ck)->info("b");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->dtype, DType::kBF16);
  EXPECT_EQ(info->shape, (Shape{3}));
  auto t = (*ck)->read("a", TensorSlice::rows(1, 2), DType::kF32);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->to_floats(), (std::vector<float>{3, 4}));
  auto missing = (*ck)->info("c");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), AllOf(HasSubstr(dir_), HasSubstr("'c'")));
}

class ShardedCheckpointTest : public SafetensorsTest {
 protected:
  void write_shards() {
    StFile one, two;
    one.add_f32("model.embed.weight", {4, 2}, iota(8)).add_f16("model.norm.weight", {2}, {1, 2});
    two.add_bf16("lm_head.weight", {4, 2}, exact_values(8, 3));
    write("model-00001-of-00002.safetensors", one);
    write("model-00002-of-00002.safetensors", two);
  }
  void write_index(const json& weight_map) {
    json index = {{"metadata", {{"total_size", 64}}}, {"weight_map", weight_map}};
    index_path_ = write("model.safetensors.index.json", index.dump(2));
  }
  json good_map() const {
    return {{"model.embed.weight", "model-00001-of-00002.safetensors"},
            {"model.norm.weight", "model-00001-of-00002.safetensors"},
            {"lm_head.weight", "model-00002-of-00002.safetensors"}};
  }
  Status open_error() {
    auto ck = SafetensorsCheckpoint::open(dir_);
    EXPECT_FALSE(ck.ok());
    return ck.status();
  }
  std::string index_path_;
};

TEST_F(ShardedCheckpointTest, ReadsEachTensorFromItsFile) {
  write_shards();
  write_index(good_map());
  auto ck = SafetensorsCheckpoint::open(dir_);
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();
  EXPECT_EQ((*ck)->names(), (std::vector<std::string>{"lm_head.weight", "model.embed.weight",
                                                      "model.norm.weight"}));
  auto emb = (*ck)->read("model.embed.weight", TensorSlice::rows(2, 4), DType::kF32);
  ASSERT_TRUE(emb.ok()) << emb.status().to_string();
  EXPECT_EQ(emb->to_floats(), (std::vector<float>{4, 5, 6, 7}));
  auto head = (*ck)->read("lm_head.weight", TensorSlice::whole(), DType::kF32);
  ASSERT_TRUE(head.ok()) << head.status().to_string();
  EXPECT_EQ(head->to_floats(), exact_values(8, 3));
  auto norm = (*ck)->info("model.norm.weight");
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(norm->dtype, DType::kF16);
  auto head_info = (*ck)->info("lm_head.weight");
  ASSERT_TRUE(head_info.ok());
  EXPECT_EQ(head_info->dtype, DType::kBF16);
  EXPECT_EQ(head_info->shape, (Shape{4, 2}));
}

TEST_F(ShardedCheckpointTest, IndexNamingMissingFileFailsNamingIt) {
  write_shards();
  json wm = good_map();
  wm["extra.weight"] = "model-00003-of-00003.safetensors";
  write_index(wm);
  auto ck = SafetensorsCheckpoint::open(dir_);
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();  // files open lazily
  EXPECT_TRUE((*ck)->read("lm_head.weight", TensorSlice::whole(), DType::kF32).ok());
  auto t = (*ck)->read("extra.weight", TensorSlice::whole(), DType::kF32);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(),
              AllOf(HasSubstr("model-00003-of-00003.safetensors"), HasSubstr("'extra.weight'")));
}

TEST_F(ShardedCheckpointTest, IndexMappingTensorToWrongFile) {
  write_shards();
  json wm = good_map();
  wm["lm_head.weight"] = "model-00001-of-00002.safetensors";
  write_index(wm);
  auto ck = SafetensorsCheckpoint::open(dir_);
  ASSERT_TRUE(ck.ok());
  auto t = (*ck)->info("lm_head.weight");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(t.status().message(),
              AllOf(HasSubstr("model-00001-of-00002.safetensors"), HasSubstr("'lm_head.weight'")));
}

TEST_F(ShardedCheckpointTest, IndexRejectsPathTraversal) {
  write_shards();
  for (const char* name : {"../x.safetensors", "/etc/passwd", "sub/dir.safetensors", ".."}) {
    json wm = good_map();
    wm["lm_head.weight"] = name;
    write_index(wm);
    Status s = open_error();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << name;
    EXPECT_THAT(s.message(), AllOf(HasSubstr("model.safetensors.index.json"),
                                   HasSubstr("'lm_head.weight'"), HasSubstr(name)));
  }
}

TEST_F(ShardedCheckpointTest, MalformedIndex) {
  write_shards();
  write("model.safetensors.index.json", "{\"weight_map\": ");
  Status s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.safetensors.index.json"), HasSubstr("JSON")));

  write("model.safetensors.index.json", "{\"metadata\": {}}");
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("weight_map"));

  write("model.safetensors.index.json", "{\"weight_map\": [1, 2]}");
  s = open_error();
  EXPECT_THAT(s.message(), AllOf(HasSubstr("weight_map"), HasSubstr("object")));

  write_index({{"model.norm.weight", 3}});
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("model.safetensors.index.json"),
                                 HasSubstr("'model.norm.weight'"), HasSubstr("string")));
}

TEST_F(SafetensorsTest, FolderWithoutWeightsIsNotFound) {
  auto ck = SafetensorsCheckpoint::open(dir_);
  ASSERT_FALSE(ck.ok());
  EXPECT_EQ(ck.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(ck.status().message(),
              AllOf(HasSubstr("model.safetensors"), HasSubstr("index.json"), HasSubstr(dir_)));
  auto none = SafetensorsCheckpoint::open(dir_ + "/does-not-exist");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  auto f = SafetensorsFile::open(dir_ + "/nope.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("nope.safetensors"));
}

// ---------------------------------------------------------------------------------------
// Malformed files: error code, the file, the tensor and what was expected.

TEST_F(SafetensorsTest, EmptyFile) {
  Status s = open_bad("");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("0 bytes"), HasSubstr("8-byte")));
}

TEST_F(SafetensorsTest, TruncatedBeforeHeaderLength) {
  Status s = open_bad(std::string("\x10\0\0\0\0", 5));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("5 bytes")));
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFile) {
  Status s = open_bad(StFile::le64(1000) + "{}");
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(bad_path_), HasSubstr("header length 1000"), HasSubstr("10 bytes")));
  // One byte short: the header ends exactly one past the file.
  s = open_bad(StFile::le64(3) + "{}");
  EXPECT_THAT(s.message(), HasSubstr("header length 3"));
}

TEST_F(SafetensorsTest, HeaderLengthHuge) {
  for (uint64_t len : {uint64_t{1} << 63, ~uint64_t{0}, ~uint64_t{0} - 7}) {
    Status s = open_bad(StFile::le64(len) + "{}      ");
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << len;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr(std::to_string(len)),
                                   HasSubstr("past the end")));
  }
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  Status s = open_bad(StFile::raw("{\"w\": {\"dtype\": ", {}));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("not valid JSON")));
  s = open_bad(StFile::raw(std::string("\xff\xfe\0\0", 4), {}));
  EXPECT_THAT(s.message(), HasSubstr("not valid JSON"));
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  Status s = open_bad(StFile::raw("[1, 2, 3]", {}));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("object"), HasSubstr("array")));
}

TEST_F(SafetensorsTest, EntryNotAnObject) {
  Status s = open_bad(StFile::raw("{\"w\": [1, 2]}", {}));
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("tensor 'w'")));
}

TEST_F(SafetensorsTest, EntryMissingField) {
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    StFile st;
    st.add_f32("model.norm.weight", {2}, {1, 2});
    st.header["model.norm.weight"].erase(key);
    Status s = open_bad(st);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << key;
    EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("tensor 'model.norm.weight'"),
                                   HasSubstr(std::string("missing \"") + key + "\"")));
  }
}

TEST_F(SafetensorsTest, UnsupportedDtype) {
  StFile st;
  st.add_f32("w", {2}, {1, 2});
  st.header["w"]["dtype"] = "Q4";
  Status s = open_bad(st);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("tensor 'w'"),
                                 HasSubstr("unsupported dtype 'Q4'"), HasSubstr("F32")));
  // A real safetensors dtype this engine does not load: unimplemented, not corrupt.
  st.header["w"]["dtype"] = "F64";
  st.header["w"]["shape"] = {1};
  s = open_bad(st);
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("tensor 'w'"), HasSubstr("unsupported dtype 'F64'")));
  st.header["w"]["dtype"] = 4;
  s = open_bad(st);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("tensor 'w'"), HasSubstr("dtype")));
}

TEST_F(SafetensorsTest, OffsetsPastDataSection) {
  StFile st;
  st.add_f32("w", {2}, {1, 2});
  st.header["w"]["data_offsets"] = {8, 16};
  Status s = open_bad(st);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("tensor 'w'"),
                                 HasSubstr("[8, 16]"), HasSubstr("data section (8 bytes)")));
}

TEST_F(SafetensorsTest, OffsetsBeginAfterEnd) {
  StFile st;
  st.add_f32("w", {2}, {1, 2});
  st.header["w"]["data_offsets"] = {8, 0};
  Status s = open_bad(st);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(bad_path_), HasSubstr("tensor 'w'"), HasSubstr("begin > end")));
}

TEST_F(SafetensorsTest, OffsetsMalformed) {
  for (json offs : {json{0}, json{0, 4, 8}, json{-4, 4}, json{0.5, 8}, json("0-8"),
                    json{0, 18446744073709551615ull}}) {
    StFile st;
    st.add_f32("w", {2}, {1, 2});
    st.header["w"]["data_offsets"] = offs;
    Status s = open_bad(st);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << offs.dump();
    EXPECT_THAT(s.message(), AllOf(HasSubstr("tensor 'w'"), HasSubstr("data_offsets")));
  }
}

TEST_F(SafetensorsTest, SizeMismatch) {
  // Offsets hold more bytes than shape x dtype needs (the example from the contract).
  StFile st;
  st.add_f32("model.norm.weight", {100}, iota(100));
  st.header["model.norm.weight"]["shape"] = {64};
  Status s = open_bad(st);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), bad_path_ +
                             ": tensor 'model.norm.weight': data_offsets [0, 400] hold 400 bytes "
                             "but shape [64] of F32 needs 256");
  // ... and fewer.
  st.header["model.norm.weight"]["shape"] = {10, 20};
  s = open_bad(st);
  EXPECT_THAT(s.message(), HasSubstr("hold 400 bytes but shape [10, 20] of F32 needs 800"));
  // Same bytes, other dtype.
  st.header["model.norm.weight"]["shape"] = {100};
  st.header["model.norm.weight"]["dtype"] = "BF16";
  s = open_bad(st);
  EXPECT_THAT(s.message(), HasSubstr("shape [100] of BF16 needs 200"));
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  StFile st;
  st.add_f32("a", {4}, {1, 2, 3, 4}).add_f32("b", {4}, {5, 6, 7, 8});
  st.header["b"]["data_offsets"] = {8, 24};
  Status s = open_bad(st);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("'a'"), HasSubstr("'b'"),
                                 HasSubstr("overlap")));
  // Identical ranges overlap too; a tensor nested in a larger one as well.
  st.header["b"]["data_offsets"] = {0, 16};
  EXPECT_THAT(open_bad(st).message(), HasSubstr("overlap"));
  st = StFile();
  st.add_f32("big", {8}, iota(8)).add_f32("x", {1}, {0});
  st.header["inner"] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {4, 12}}};
  st.header["after"] = {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {28, 32}}};
  s = open_bad(st);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("overlap"), HasSubstr("'big'")));
}

TEST_F(SafetensorsTest, BadShape) {
  for (json shape : {json{-1, 2}, json{2.0, 1}, json("2"), json::array({json::array({2})}),
                     json::array({true})}) {
    StFile st;
    st.add_f32("w", {2}, {1, 2});
    st.header["w"]["shape"] = shape;
    Status s = open_bad(st);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << shape.dump();
    EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("tensor 'w'"),
                                   HasSubstr("\"shape\""), HasSubstr("non-negative integers")))
        << shape.dump();
  }
}

TEST_F(SafetensorsTest, ShapeNumelOverflow) {
  for (json shape : {json{1ull << 40, 1ull << 40}, json{1ull << 62, 4, 0}, json{1ull << 61, 8},
                     json{9223372036854775807ull, 2}, json{9223372036854775808ull}}) {
    StFile st;
    st.add_f32("w", {2}, {1, 2});
    st.header["w"]["shape"] = shape;
    Status s = open_bad(st);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << shape.dump();
    EXPECT_THAT(s.message(), AllOf(HasSubstr("tensor 'w'"), HasSubstr("shape"))) << shape.dump();
  }
}

TEST_F(SafetensorsTest, MetadataMustBeStrings) {
  StFile st;
  st.add_f32("w", {2}, {1, 2});
  st.header["__metadata__"] = {{"format", "pt"}, {"step", 100}};
  Status s = open_bad(st);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(bad_path_), HasSubstr("__metadata__"), HasSubstr("'step'")));
  st.header["__metadata__"] = "pt";
  EXPECT_THAT(open_bad(st).message(), HasSubstr("__metadata__"));
}

TEST_F(SafetensorsTest, TruncatedDataSection) {
  StFile st;
  st.add_f32("a", {4}, {1, 2, 3, 4}).add_f32("b", {2, 3}, iota(6));
  std::string content = st.bytes();
  content.resize(content.size() - 5);
  Status s = open_bad(content);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(bad_path_), HasSubstr("tensor 'b'"),
                                 HasSubstr("[16, 40]"), HasSubstr("data section (35 bytes)")));
}

TEST_F(SafetensorsTest, DirectoryIsNotAFile) {
  auto f = SafetensorsFile::open(dir_);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(f.status().message(), HasSubstr(dir_));
}

// ---------------------------------------------------------------------------------------
// A real Hugging Face checkpoint (tests/fixtures/hf, written by safetensors-python).

TEST(SafetensorsFixture, LlamaEmbeddingMatchesConfig) {
  const fs::path dir = fs::path(SHARDWISE_FIXTURES_DIR) / "hf" / "llama";
  if (!fs::exists(dir / "model.safetensors") || !fs::exists(dir / "config.json"))
    GTEST_SKIP() << "no HF llama fixture in " << dir;
  std::ifstream cf(dir / "config.json");
  const json config = json::parse(cf);
  const int64_t vocab = config.at("vocab_size").get<int64_t>();
  const int64_t hidden = config.at("hidden_size").get<int64_t>();

  auto ck = SafetensorsCheckpoint::open(dir.string());
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();
  auto info = (*ck)->info("model.embed_tokens.weight");
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->shape, (Shape{vocab, hidden}));
  auto emb = (*ck)->read("model.embed_tokens.weight", TensorSlice::whole(), DType::kF32);
  ASSERT_TRUE(emb.ok()) << emb.status().to_string();
  double sum_sq = 0;
  for (float v : emb->to_floats()) {
    ASSERT_TRUE(std::isfinite(v));
    sum_sq += static_cast<double>(v) * v;
  }
  EXPECT_GT(sum_sq, 0.0);
  // Every tensor in the file reads back whole.
  for (const std::string& name : (*ck)->names()) {
    auto t = (*ck)->read(name, TensorSlice::whole(), DType::kBF16);
    EXPECT_TRUE(t.ok()) << name << ": " << t.status().to_string();
  }
}

}  // namespace
}  // namespace sw::model

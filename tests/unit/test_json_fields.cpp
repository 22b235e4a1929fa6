// JsonFields: integers are range-checked into their C++ type (no narrowing, no undefined
// float-to-integer casts), floats must be finite and representable, and error excerpts of
// deeply nested values are safe. Every message names the source and the key.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/json_fields.h"

namespace sw {
namespace {

using nlohmann::json;

template <typename T>
std::string error_of(const json& j, const std::string& key) {
  JsonFields f(j, "in.json");
  auto r = f.required<T>(key);
  EXPECT_FALSE(r.ok()) << key;
  return r.ok() ? std::string() : r.status().message();
}

TEST(JsonFields, IntegersOutsideTheirTypeAreErrorsNotWrapped) {
  const json j = {
      {"a", 4294967301LL}, {"b", -1},  {"c", 2147483647}, {"d", 18446744073709551615ULL},
      {"e", 4.0},          {"f", 4.5}, {"g", 1e300},      {"h", -2147483648LL}};
  EXPECT_EQ(error_of<int32_t>(j, "a"),
            "in.json: key 'a': expected an integer in [-2147483648, 2147483647], got number "
            "4294967301");
  EXPECT_EQ(error_of<uint64_t>(j, "b"),
            "in.json: key 'b': expected an integer in [0, 18446744073709551615], got number -1");
  EXPECT_NE(error_of<int64_t>(j, "d").find("key 'd': expected an integer in "), std::string::npos);
  EXPECT_NE(error_of<int>(j, "f").find("key 'f': expected an integer"), std::string::npos);
  EXPECT_NE(error_of<int64_t>(j, "g").find("key 'g': expected an integer"), std::string::npos);
  EXPECT_NE(error_of<uint64_t>(j, "g").find("key 'g': expected an integer"), std::string::npos);
  JsonFields f(j, "in.json");
  EXPECT_EQ(*f.required<int32_t>("c"), 2147483647);
  EXPECT_EQ(*f.required<uint64_t>("d"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*f.required<int>("e"), 4);
  EXPECT_EQ(*f.required<int32_t>("h"), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(*f.optional<int>("missing", 7), 7);
}

TEST(JsonFields, RangesNameTheBounds) {
  const json j = {{"n", 1000000000000LL}, {"m", 0}};
  JsonFields f(j, "in.json", "runtime");
  auto n = f.required_in<int64_t>("n", 1, 1024);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().message(),
            "in.json: key 'runtime.n': expected an integer in [1, 1024], got number "
            "1000000000000");
  EXPECT_FALSE(f.optional_in<int>("m", 5, 1, 10).ok());
  EXPECT_EQ(*f.optional_in<int>("absent", 5, 1, 10), 5);
  EXPECT_EQ(*f.required_in<int>("m", 0, 0), 0);
}

TEST(JsonFields, ListElementsAreCheckedToo) {
  const json j = {{"ids", {1, 2, 4294967301LL}}, {"neg", {-1, 3}}, {"mixed", {1, "x"}}};
  EXPECT_NE(error_of<std::vector<int>>(j, "ids").find(
                "key 'ids': expected a list of integers, each an integer in "
                "[-2147483648, 2147483647], got array [1,2,4294967301]"),
            std::string::npos);
  EXPECT_NE(error_of<std::vector<int>>(j, "mixed").find("expected a list of integers"),
            std::string::npos);
  JsonFields f(j, "in.json");
  EXPECT_EQ(*f.required<std::vector<int>>("neg"), (std::vector<int>{-1, 3}));
}

TEST(JsonFields, FloatsMustBeFiniteAndFitTheirType) {
  const json j = {{"big", 1e300}, {"ok", 0.5}, {"int", 3}};
  EXPECT_EQ(error_of<float>(j, "big"),
            "in.json: key 'big': expected a finite number, got number 1e+300");
  JsonFields f(j, "in.json");
  EXPECT_EQ(*f.required<double>("big"), 1e300);
  EXPECT_EQ(*f.required<float>("ok"), 0.5f);
  EXPECT_EQ(*f.required<double>("int"), 3.0);
}

// nlohmann's dump() recurses per nesting level: an error about a value nested a million
// levels deep must not overflow the stack while quoting it.
TEST(JsonFields, DeeplyNestedValuesAreQuotedSafely) {
  const std::string text = "{\"k\": " + std::string(1000000, '[') + std::string(1000000, ']') + "}";
  const json j = json::parse(text, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(error_of<int>(j, "k"),
            "in.json: key 'k': expected an integer in "
            "[-2147483648, 2147483647], got array [...] (1 element)");
  EXPECT_EQ(json_excerpt(json::array({1, 2})), "[1,2]");
  EXPECT_EQ(json_excerpt(json(std::string(100, 'x'))).size(), 60u);
}

}  // namespace
}  // namespace sw

// safetensors: round trips of every supported dtype (values, shapes, metadata, non-contiguous
// inputs), the byte layout against the format's definition, and one error per kind of damage,
// each naming the file.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::error_message;

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("longnet_safetensors_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A file made of a header length, a header text and `data` bytes.
  std::string raw_file(const std::string& name, const std::string& header, size_t data_bytes,
                       std::optional<uint64_t> length = std::nullopt, char fill = 1) const {
    const std::string p = path(name);
    std::ofstream f(p, std::ios::binary);
    const uint64_t n = length.value_or(header.size());
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << header << std::string(data_bytes, fill);
    return p;
  }

  std::filesystem::path dir_;
};

TEST_F(Safetensors, RoundTripEveryDtype) {
  std::map<std::string, Tensor> tensors;
  tensors["decoder.layers.0.self_attn.q_proj.weight"] = randn({3, 5});
  tensors["f64"] = randn({2, 2}, DType::F64);
  tensors["bf16"] = randn({7}, DType::BF16);
  tensors["f16"] = randn({2, 3}, DType::F16);
  tensors["i64"] = from_vector(std::vector<int64_t>{-3, 0, 1LL << 40}, {3});
  tensors["i32"] = from_vector(std::vector<int32_t>{-7, 9}, {2, 1});
  tensors["u8"] = from_vector(std::vector<uint8_t>{0, 255}, {2});
  tensors["bool"] = cast(from_vector(std::vector<uint8_t>{1, 0, 1}, {3}), DType::Bool);
  tensors["scalar"] = scalar_tensor(2.5);
  tensors["empty"] = zeros({0, 4});
  tensors["transposed"] = randn({4, 3}).transpose(0, 1);  // written as its values, row-major
  const std::string p = path("all.safetensors");
  io::save_safetensors(p, tensors, {{"format", "pt"}, {"step", "12"}});
  std::map<std::string, std::string> meta;
  const auto back = io::load_safetensors(p, Device::cpu(), &meta);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"format", "pt"}, {"step", "12"}}));
  ASSERT_EQ(back.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_EQ(back.count(name), 1u) << name;
    const Tensor& b = back.at(name);
    EXPECT_EQ(b.dtype(), t.dtype()) << name;
    EXPECT_EQ(b.shape(), t.shape()) << name;
    EXPECT_TRUE(b.is_contiguous());
    EXPECT_EQ(b.to_vector<double>(), t.to_vector<double>()) << name;
  }
}

TEST_F(Safetensors, LayoutFollowsTheFormat) {
  const Tensor a = tensor({1.0f, 2.0f, 3.0f}, {3}), b = from_vector(std::vector<int64_t>{7}, {1, 1});
  const std::string p = path("layout.safetensors");
  io::save_safetensors(p, {{"b", b}, {"a", a}});
  std::ifstream f(p, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ((8 + n) % 8, 0u);  // data aligned
  const nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(h["__metadata__"], (nlohmann::json{{"format", "pt"}}));
  EXPECT_EQ(h["a"]["dtype"], "F32");
  EXPECT_EQ(h["a"]["shape"], nlohmann::json::array({3}));
  EXPECT_EQ(h["b"]["dtype"], "I64");
  EXPECT_EQ(h["b"]["shape"], nlohmann::json::array({1, 1}));
  const auto a_off = h["a"]["data_offsets"].get<std::vector<uint64_t>>();
  const auto b_off = h["b"]["data_offsets"].get<std::vector<uint64_t>>();
  EXPECT_EQ(a_off[1] - a_off[0], 12u);
  EXPECT_EQ(b_off[1] - b_off[0], 8u);
  EXPECT_EQ(bytes.size(), 8 + n + 20);
  float a1 = 0;
  std::memcpy(&a1, bytes.data() + 8 + n + a_off[0] + 4, 4);
  EXPECT_EQ(a1, 2.0f);
  int64_t b0 = 0;
  std::memcpy(&b0, bytes.data() + 8 + n + b_off[0], 8);
  EXPECT_EQ(b0, 7);
}

TEST_F(Safetensors, HeaderOnlyReadListsEntries) {
  const std::string p = path("h.safetensors");
  io::save_safetensors(p, {{"x", zeros({2, 3})}, {"y", zeros({4}, DType::BF16)}});
  const io::SafetensorsHeader h = io::read_safetensors_header(p);
  ASSERT_EQ(h.entries.size(), 2u);
  EXPECT_EQ(h.entries[0].name, "x");
  EXPECT_EQ(h.entries[0].shape, (Shape{2, 3}));
  EXPECT_EQ(h.entries[1].dtype, DType::BF16);
  EXPECT_EQ(h.data_size, 24 + 8);
}

// Each kind of damage gives its own error, naming the file.
void expect_error(const std::string& p, const std::string& fragment) {
  const std::string msg = error_message([&] { io::load_safetensors(p); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find(fragment), std::string::npos) << "want '" << fragment << "' in: " << msg;
}

// One header entry as text ("name":{...}), the shape given as JSON text so that it may be invalid.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, int64_t b, int64_t e) {
  std::ostringstream s;
  s << '"' << name << "\":{\"dtype\":\"" << dtype << "\",\"shape\":" << shape << ",\"data_offsets\":[" << b << "," << e << "]}";
  return s.str();
}

// A header object of entries: {e1,e2,...}.
std::string object(std::initializer_list<std::string> entries) {
  std::ostringstream s;
  s << '{';
  for (const std::string& e : entries) s << (s.tellp() > 1 ? "," : "") << e;
  s << '}';
  return s.str();
}

TEST_F(Safetensors, TruncatedFiles) {
  {
    std::ofstream f(path("short.safetensors"), std::ios::binary);
    f << "abc";
  }
  expect_error(path("short.safetensors"), "too short");
  expect_error(raw_file("len.safetensors", "{}", 0, 1000), "header length 1000 reaches beyond the end of the file");
  // A valid file cut inside its data.
  const std::string p = path("cut.safetensors");
  io::save_safetensors(p, {{"w", randn({16})}});
  std::filesystem::resize_file(p, std::filesystem::file_size(p) - 10);
  expect_error(p, "outside the data buffer");
  EXPECT_NE(error_message([&] { io::load_safetensors(path("missing.safetensors")); }).find("cannot open"), std::string::npos);
}

TEST_F(Safetensors, CorruptHeaders) {
  expect_error(raw_file("json.safetensors", "{\"a\": [1, 2", 0), "not valid JSON");
  expect_error(raw_file("array.safetensors", "[1, 2]", 0), "not a JSON object");
  expect_error(raw_file("dtype.safetensors", object({entry("a", "F8_E4M3", "[2]", 0, 2)}), 2),
               "tensor 'a' has unsupported dtype 'F8_E4M3'");
  expect_error(raw_file("fields.safetensors", "{\"a\":{\"dtype\":\"F32\"}}", 0), "needs an object with dtype, shape and data_offsets");
  expect_error(raw_file("shape.safetensors", object({entry("a", "F32", "[-2]", 0, 8)}), 8), "shape entry");
  expect_error(raw_file("size.safetensors", object({entry("a", "F32", "[3]", 0, 8)}), 8),
               "has 8 bytes of data but its shape (3) and dtype need 12");
  expect_error(raw_file("huge.safetensors", object({entry("a", "F32", "[4611686018427387904, 4]", 0, 8)}), 8),
               "byte size overflows");
  expect_error(raw_file("order.safetensors", object({entry("a", "F32", "[1]", 8, 4)}), 8), "begin after end");
  expect_error(raw_file("meta.safetensors", "{\"__metadata__\":{\"format\":1}}", 0), "metadata value of 'format'");
}

TEST_F(Safetensors, BadOffsets) {
  expect_error(raw_file("outside.safetensors", object({entry("a", "F32", "[4]", 0, 16)}), 8),
               "tensor 'a' has data_offsets [0, 16) outside the data buffer of 8 bytes");
  expect_error(raw_file("overlap.safetensors", object({entry("a", "F32", "[2]", 0, 8), entry("b", "F32", "[2]", 4, 12)}), 12),
               "tensor 'b' at [4, 12) overlaps the tensor before it, which ends at 8");
  expect_error(raw_file("gap.safetensors", object({entry("a", "F32", "[1]", 0, 4), entry("b", "F32", "[1]", 8, 12)}), 12),
               "bytes [4, 8) of the data buffer belong to no tensor");
  expect_error(raw_file("trailing.safetensors", object({entry("a", "F32", "[1]", 0, 4)}), 9),
               "5 bytes after the last tensor");
  expect_error(raw_file("bool.safetensors", object({entry("a", "BOOL", "[3]", 0, 3)}), 3, std::nullopt, 2),
               "bytes other than 0 and 1");
}

TEST_F(Safetensors, WriteErrors) {
  EXPECT_NE(error_message([&] { io::save_safetensors(path("m.safetensors"), {{"__metadata__", zeros({1})}}); }).find("invalid tensor name"),
            std::string::npos);
  EXPECT_NE(error_message([&] { io::save_safetensors(path("u.safetensors"), {{"u", Tensor()}}); }).find("'u' is undefined"),
            std::string::npos);
  EXPECT_NE(error_message([&] { io::save_safetensors((dir_ / "no" / "such" / "dir.safetensors").string(), {}); }).find("for writing"),
            std::string::npos);
}

}  // namespace
}  // namespace longnet

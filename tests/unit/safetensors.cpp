// safetensors: files written here byte by byte from the format definition
// (u64 header length, JSON header, data), good ones and ones that lie.
#include <gtest/gtest.h>

#include "test_util.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace kf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b(8 + header.size() + data.size());
  const uint64_t n = header.size();
  std::memcpy(b.data(), &n, 8);
  std::copy(header.begin(), header.end(), b.begin() + 8);
  std::copy(data.begin(), data.end(), b.begin() + 8 + header.size());
  return b;
}

template <typename T>
void append(std::vector<uint8_t>& d, std::initializer_list<T> vals) {
  for (T v : vals) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    d.insert(d.end(), p, p + sizeof(T));
  }
}

// F32 [2,3] at [0,24), BF16 [2] at [24,28), F16 [1] at [28,30), U8 [2] at [30,32), I64 [1] at [32,40).
std::vector<uint8_t> good_file() {
  std::vector<uint8_t> d;
  append<float>(d, {1, 2, 3, 4, 5, 6});
  append<uint16_t>(d, {0x3F80, 0xC000});  // bf16 1.0, -2.0
  append<uint16_t>(d, {0x3C00});          // f16 1.0
  append<uint8_t>(d, {7, 9});
  append<int64_t>(d, {-5});
  json h = {{"__metadata__", {{"format", "pt"}}},
            {"w", {{"dtype", "F32"}, {"shape", {2, 3}}, {"data_offsets", {0, 24}}}},
            {"b", {{"dtype", "BF16"}, {"shape", {2}}, {"data_offsets", {24, 28}}}},
            {"h", {{"dtype", "F16"}, {"shape", {1}}, {"data_offsets", {28, 30}}}},
            {"u", {{"dtype", "U8"}, {"shape", {2}}, {"data_offsets", {30, 32}}}},
            {"i", {{"dtype", "I64"}, {"shape", json::array({1})}, {"data_offsets", {32, 40}}}}};
  return make_file(h.dump(), d);
}

float f32_at(const void* p, int i) {  // tensor data may be unaligned
  float v;
  std::memcpy(&v, static_cast<const uint8_t*>(p) + 4 * i, 4);
  return v;
}

SafetensorsFile parse(const std::vector<uint8_t>& b) { return SafetensorsFile::from_bytes(b.data(), b.size(), "m.safetensors"); }

TEST(Safetensors, GoodFile) {
  const auto bytes = good_file();
  const SafetensorsFile f = parse(bytes);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 5u);
  EXPECT_EQ(f.tensors()[0].name, "w");  // data order
  const SafeTensor& w = f.tensor("w");
  EXPECT_EQ(w.dtype, DType::F32);
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f32_at(w.data, 5), 6.f);
  EXPECT_EQ(f.tensor("b").dtype, DType::BF16);
  uint16_t b16[2];
  std::memcpy(b16, f.tensor("b").data, 4);
  EXPECT_EQ(bf16_to_f32(b16[1]), -2.f);
  EXPECT_EQ(f.tensor("h").dtype, DType::F16);
  EXPECT_EQ(static_cast<const uint8_t*>(f.tensor("u").data)[1], 9);
  int64_t i64;  // data need not be aligned: the header length is arbitrary
  std::memcpy(&i64, f.tensor("i").data, 8);
  EXPECT_EQ(i64, -5);
  EXPECT_EQ(*f.tensor("i").file, "m.safetensors");
  EXPECT_EQ(f.find("nope"), nullptr);
  expect_error([&] { f.tensor("nope"); }, {"m.safetensors", "nope"});
}

TEST(Safetensors, EveryTruncationIsAnError) {
  const auto bytes = good_file();
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    EXPECT_THROW(parse(cut), Error) << n;
  }
}

TEST(Safetensors, LyingHeaders) {
  const std::vector<uint8_t> d(64, 0);
  auto with = [&](const json& h) { return make_file(h.dump(), d); };
  auto entry = [](const char* dt, json shape, uint64_t b, uint64_t e) {
    return json{{"dtype", dt}, {"shape", shape}, {"data_offsets", {b, e}}};
  };
  {  // header length larger than the file
    auto b = good_file();
    const uint64_t big = 1ull << 40;
    std::memcpy(b.data(), &big, 8);
    expect_error([&] { parse(b); }, {"m.safetensors", "header size"});
  }
  expect_error([&] { parse(make_file("{not json", d)); }, {"m.safetensors", "JSON"});
  expect_error([&] { parse(make_file("[1,2]", d)); }, {"m.safetensors", "object"});
  expect_error([&] { parse(with({{"model.norm.weight", entry("F64", {4}, 0, 32)}})); },
               {"m.safetensors", "model.norm.weight", "F64"});
  expect_error([&] { parse(with({{"lm_head.weight", entry("F32", {4, 4}, 0, 32)}})); },
               {"m.safetensors", "lm_head.weight", "64 bytes", "span 32"});
  expect_error([&] { parse(with({{"x", entry("F32", {32}, 0, 128)}})); }, {"m.safetensors", "'x'", "outside"});
  expect_error([&] { parse(with({{"x", entry("F32", {0}, 8, 4)}})); }, {"m.safetensors", "'x'"});
  expect_error([&] { parse(with({{"a", entry("F32", {4}, 0, 16)}, {"b", entry("F32", {4}, 8, 24)}})); },
               {"m.safetensors", "'a'", "'b'", "overlap"});
  expect_error([&] { parse(with({{"x", entry("F32", {-1}, 0, 4)}})); }, {"m.safetensors", "'x'", "shape"});
  expect_error([&] { parse(with({{"x", {{"dtype", "F32"}, {"shape", {1}}}}})); }, {"m.safetensors", "'x'", "data_offsets"});
  expect_error([&] { parse(with({{"x", entry("F32", {1ull << 40, 1ull << 40}, 0, 4)}})); }, {"m.safetensors", "'x'"});
  expect_error([&] { parse(with({{"__metadata__", {{"k", 1}}}})); }, {"m.safetensors", "__metadata__"});
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("kf_st_" + std::to_string(::getpid()) + "_" +
                                                   ::testing::UnitTest::GetInstance()->current_test_info()->name())) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
}
void write(const std::string& path, const std::string& s) { std::ofstream(path, std::ios::binary) << s; }

std::vector<uint8_t> one_tensor(const std::string& name, float value) {
  std::vector<uint8_t> d;
  append<float>(d, {value, value});
  return make_file(json{{name, {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}}}.dump(), d);
}

TEST(Safetensors, SingleFileFromDisk) {
  TempDir dir;
  write(dir.file("model.safetensors"), good_file());
  const SafetensorsModel m(dir.path().string());
  EXPECT_EQ(m.files().size(), 1u);
  EXPECT_EQ(m.tensors().size(), 5u);
  EXPECT_EQ(m.tensor("w").shape, (std::vector<int64_t>{2, 3}));
  expect_error([&] { m.tensor("missing.weight"); }, {dir.path().string(), "missing.weight"});
}

TEST(Safetensors, ShardedIndex) {
  TempDir dir;
  write(dir.file("a.safetensors"), one_tensor("model.embed_tokens.weight", 1.f));
  write(dir.file("b.safetensors"), one_tensor("model.norm.weight", 2.f));
  write(dir.file("model.safetensors.index.json"),
        json{{"metadata", {{"total_size", 16}}},
             {"weight_map", {{"model.embed_tokens.weight", "a.safetensors"}, {"model.norm.weight", "b.safetensors"}}}}
            .dump());
  const SafetensorsModel m(dir.path().string());
  EXPECT_EQ(m.files().size(), 2u);
  EXPECT_EQ(f32_at(m.tensor("model.norm.weight").data, 0), 2.f);
  EXPECT_EQ(*m.tensor("model.norm.weight").file, dir.file("b.safetensors"));
  EXPECT_EQ(f32_at(m.tensor("model.embed_tokens.weight").data, 1), 1.f);

  // weight_map pointing at a shard that lacks the tensor
  write(dir.file("model.safetensors.index.json"),
        json{{"weight_map", {{"model.embed_tokens.weight", "b.safetensors"}}}}.dump());
  expect_error([&] { SafetensorsModel bad(dir.path().string()); }, {"model.embed_tokens.weight", "b.safetensors"});
  // a missing shard
  write(dir.file("model.safetensors.index.json"), json{{"weight_map", {{"x", "c.safetensors"}}}}.dump());
  expect_error([&] { SafetensorsModel bad(dir.path().string()); }, {"c.safetensors"});
  // the same tensor in two shards
  write(dir.file("b.safetensors"), one_tensor("model.embed_tokens.weight", 2.f));
  write(dir.file("model.safetensors.index.json"),
        json{{"weight_map", {{"model.embed_tokens.weight", "a.safetensors"}, {"y", "b.safetensors"}}}}.dump());
  expect_error([&] { SafetensorsModel bad(dir.path().string()); }, {"model.embed_tokens.weight", "both"});
  // no weights at all
  TempDir empty;
  expect_error([&] { SafetensorsModel bad(empty.path().string()); }, {empty.path().string(), "model.safetensors"});
}

}  // namespace
}  // namespace kf

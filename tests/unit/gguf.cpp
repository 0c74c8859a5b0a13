// GGUF parser: the fixture written by the Python gguf package (every value
// type, nested arrays, tensor shapes), v2, and hand-built files that lie.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace kf {
namespace {

const std::string kQuants = KINFER_SOURCE_DIR "/tests/fixtures/gguf/quants.gguf";
const std::string kLlama = KINFER_SOURCE_DIR "/tests/fixtures/gguf/tiny_llama.gguf";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Writes a GGUF file byte by byte, following the spec, so tests can make it lie.
struct Builder {
  std::vector<uint8_t> b;
  uint32_t alignment = 32;
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    put(version);
    put(n_tensors);
    put(n_kv);
  }
  void kv_u32(const std::string& k, uint32_t v) {
    str(k);
    put<uint32_t>(4);
    put(v);
  }
  void kv_str(const std::string& k, const std::string& v) {
    str(k);
    put<uint32_t>(8);
    str(v);
  }
  void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t ggml_type, uint64_t offset) {
    str(name);
    put<uint32_t>(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) put(d);
    put(ggml_type);
    put(offset);
  }
  void pad() {
    while (b.size() % alignment) b.push_back(0);
  }
  void data(size_t n) { b.resize(b.size() + n, 0); }
  GgufFile parse() const { return GgufFile::from_bytes(b.data(), b.size(), "test.gguf"); }
};

TEST(Gguf, FixtureMetadata) {
  const GgufFile f(kQuants);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.get_str("general.architecture"), "test");
  EXPECT_EQ(f.get_u32("test.u8"), 200u);
  EXPECT_EQ(f.get_i64("test.i8"), -100);
  EXPECT_EQ(f.get_u32("test.u16"), 60000u);
  EXPECT_EQ(f.get_i64("test.i16"), -30000);
  EXPECT_EQ(f.get_u32("test.u32"), 4000000000u);
  EXPECT_EQ(f.get_i64("test.i32"), -2000000000);
  EXPECT_EQ(f.get_f32("test.f32"), 1.5f);
  EXPECT_TRUE(f.get_bool("test.bool"));
  EXPECT_EQ(f.get_str("test.str"), "héllo wörld");
  EXPECT_EQ(f.get_i64("test.u64"), (int64_t(1) << 40) + 7);
  EXPECT_EQ(f.get_i64("test.i64"), -(int64_t(1) << 40) - 7);
  EXPECT_EQ(f.get_f32("test.f64"), 0.125f);
  EXPECT_EQ(f.get_str_array("test.arr_str"), (std::vector<std::string>{"a", "", "ccc", "Ġthe"}));
  EXPECT_EQ(f.get_array_size("test.arr_str"), 4u);
  EXPECT_EQ(f.get_i32_array("test.arr_i32"), (std::vector<int32_t>{1, -2, 3}));
  EXPECT_EQ(f.get_i32_array("test.arr_u8"), (std::vector<int32_t>{1, 2, 255}));
  EXPECT_EQ(f.get_f32_array("test.arr_f32"), (std::vector<float>{0.5f, -1.f}));
  EXPECT_EQ(f.get_json("test.nested").dump(), "[[1,2],[3],[4,5,6]]");
  EXPECT_EQ(f.get_json("test.nested_str").dump(), R"([["x","yy"],["zzz"]])");
  EXPECT_EQ(f.get_json("test.nested", 2).dump(), "[[1,2],[3]]");
  EXPECT_EQ(f.get_json("test.u64").get<uint64_t>(), (uint64_t(1) << 40) + 7);
  EXPECT_EQ(f.get_json("test.str").get<std::string>(), "héllo wörld");
  EXPECT_EQ(f.get_u32_or("test.absent", 7u), 7u);
  EXPECT_FALSE(f.has("test.absent"));
}

TEST(Gguf, GetterErrorsNameKeyAndFile) {
  const GgufFile f(kQuants);
  expect_error([&] { f.get_u32("test.absent"); }, {kQuants, "test.absent"});
  expect_error([&] { f.get_u32("test.str"); }, {kQuants, "test.str", "string"});
  expect_error([&] { f.get_u32("test.i8"); }, {kQuants, "test.i8", "negative"});
  expect_error([&] { f.get_u32("test.u64"); }, {kQuants, "test.u64"});
  expect_error([&] { f.get_str("test.u8"); }, {kQuants, "test.u8"});
  expect_error([&] { f.get_str_array("test.arr_i32"); }, {kQuants, "test.arr_i32"});
  expect_error([&] { f.get_bool("test.f32"); }, {kQuants, "test.f32"});
  expect_error([&] { f.get_f32("test.bool"); }, {kQuants, "test.bool"});
  expect_error([&] { f.tensor("nope.weight"); }, {kQuants, "nope.weight"});
}

TEST(Gguf, FixtureTensors) {
  const GgufFile f(kQuants);
  const GgufTensor& t = f.tensor("shape3d");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3, 4}));  // ne = [4, 3, 2] reversed
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(t.numel, 24);
  EXPECT_EQ(t.offset % 32, 0u);
  const auto* x = static_cast<const float*>(t.data);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(x[i], float(i));
  const GgufTensor& q = f.tensor("Q4_K.raw");
  EXPECT_EQ(q.dtype, DType::Q4_K);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{2, 512}));
  EXPECT_EQ(q.nbytes, 4u * 144);
  EXPECT_EQ(f.tensor("BF16.raw").dtype, DType::BF16);
  EXPECT_EQ(f.find_tensor("absent"), nullptr);
}

TEST(Gguf, LlamaTokenizerKeys) {
  const GgufFile f(kLlama);
  EXPECT_EQ(f.get_str("general.architecture"), "llama");
  const auto toks = f.get_str_array("tokenizer.ggml.tokens");
  ASSERT_EQ(toks.size(), 16u);
  EXPECT_EQ(toks[3], "t3");
  EXPECT_EQ(f.get_i32_array("tokenizer.ggml.token_type").size(), 16u);
  EXPECT_EQ(f.get_u32("tokenizer.ggml.eos_token_id"), 2u);
}

TEST(Gguf, Version2ParsesAndVersion1IsRejected) {
  std::vector<uint8_t> bytes = read_bytes(kLlama);
  bytes[4] = 2;  // v2 and v3 share the layout (v3 added big-endian files)
  EXPECT_EQ(GgufFile::from_bytes(bytes.data(), bytes.size(), "v2.gguf").version(), 2u);
  bytes[4] = 1;
  expect_error([&] { GgufFile::from_bytes(bytes.data(), bytes.size(), "v1.gguf"); }, {"v1.gguf", "version 1"});
  bytes[0] = 'X';
  expect_error([&] { GgufFile::from_bytes(bytes.data(), bytes.size(), "bad.gguf"); }, {"bad.gguf", "magic"});
}

// Every prefix of a real file is either rejected with kf::Error or (the full file) parses.
TEST(Gguf, EveryTruncationIsAnError) {
  const std::vector<uint8_t> bytes = read_bytes(kLlama);
  for (size_t n = 0; n < bytes.size(); n += (n < 4096 ? 1 : 97)) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);  // own copy: ASan sees overreads
    EXPECT_THROW(GgufFile::from_bytes(cut.data(), cut.size(), "cut.gguf"), Error) << n;
  }
  EXPECT_NO_THROW(GgufFile::from_bytes(bytes.data(), bytes.size(), "full.gguf"));
  std::vector<uint8_t> cut(bytes.begin(), bytes.end() - 1);
  expect_error([&] { GgufFile::from_bytes(cut.data(), cut.size(), "cut.gguf"); }, {"cut.gguf", "tensor '"});
}

TEST(Gguf, HandBuiltGoodFile) {
  Builder g;
  g.header(2, 2);
  g.kv_str("general.architecture", "llama");
  g.kv_u32("general.alignment", 64);
  g.alignment = 64;
  g.tensor("a", {32, 2}, 8, 0);    // Q8_0 2 rows: 68 bytes
  g.tensor("b", {3}, 0, 128);      // F32
  g.pad();
  g.data(128 + 12);
  const GgufFile f = g.parse();
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.tensor("a").shape, (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(f.tensor("a").nbytes, 68u);
  EXPECT_EQ(f.tensor("b").offset % 64, 0u);
}

TEST(Gguf, LyingHeaders) {
  {  // tensor data beyond the end of the file
    Builder g;
    g.header(1, 0);
    g.tensor("blk.0.ffn_up.weight", {64, 4}, 0, 0);
    g.pad();
    g.data(100);  // needs 1024
    expect_error([&] { g.parse(); }, {"test.gguf", "blk.0.ffn_up.weight"});
  }
  {  // overlapping tensors
    Builder g;
    g.header(2, 0);
    g.tensor("first", {16}, 0, 0);
    g.tensor("second", {16}, 0, 32);  // first covers [0, 64)
    g.pad();
    g.data(128);
    expect_error([&] { g.parse(); }, {"test.gguf", "first", "second", "overlap"});
  }
  {  // unknown / unsupported ggml type
    Builder g;
    g.header(1, 0);
    g.tensor("blk.0.attn_q.weight", {32}, 6, 0);  // Q5_0
    g.pad();
    g.data(64);
    expect_error([&] { g.parse(); }, {"test.gguf", "blk.0.attn_q.weight", "Q5_0"});
    Builder h;
    h.header(1, 0);
    h.tensor("weird", {32}, 999, 0);
    h.pad();
    h.data(64);
    expect_error([&] { h.parse(); }, {"test.gguf", "weird", "999"});
  }
  {  // misaligned offset
    Builder g;
    g.header(1, 0);
    g.tensor("t", {4}, 0, 4);
    g.pad();
    g.data(64);
    expect_error([&] { g.parse(); }, {"test.gguf", "'t'", "alignment"});
  }
  {  // counts far larger than the file
    Builder g;
    g.header(1ull << 60, 0);
    expect_error([&] { g.parse(); }, {"test.gguf", "tensor count"});
    Builder h;
    h.header(0, 1ull << 60);
    expect_error([&] { h.parse(); }, {"test.gguf", "metadata count"});
  }
  {  // string length lying
    Builder g;
    g.header(0, 1);
    g.put<uint64_t>(1ull << 62);
    g.data(16);
    expect_error([&] { g.parse(); }, {"test.gguf", "string length"});
  }
  {  // array count lying
    Builder g;
    g.header(0, 1);
    g.str("tokenizer.ggml.tokens");
    g.put<uint32_t>(9);   // array
    g.put<uint32_t>(8);   // of strings
    g.put<uint64_t>(1ull << 50);
    g.data(16);
    expect_error([&] { g.parse(); }, {"test.gguf", "tokenizer.ggml.tokens"});
  }
  {  // dims overflowing
    Builder g;
    g.header(1, 0);
    g.tensor("big", {1ull << 40, 1ull << 40, 1ull << 40}, 0, 0);
    expect_error([&] { g.parse(); }, {"test.gguf", "big"});
  }
  {  // row not a multiple of the block
    Builder g;
    g.header(1, 0);
    g.tensor("odd", {33}, 8, 0);
    g.pad();
    g.data(64);
    expect_error([&] { g.parse(); }, {"test.gguf", "odd", "block"});
  }
  {  // duplicate key, bad alignment, unknown value type
    Builder g;
    g.header(0, 2);
    g.kv_u32("x", 1);
    g.kv_u32("x", 2);
    expect_error([&] { g.parse(); }, {"test.gguf", "duplicate", "'x'"});
    Builder h;
    h.header(0, 1);
    h.kv_u32("general.alignment", 48);
    expect_error([&] { h.parse(); }, {"test.gguf", "general.alignment", "48"});
    Builder k;
    k.header(0, 1);
    k.str("k");
    k.put<uint32_t>(13);
    k.data(8);
    expect_error([&] { k.parse(); }, {"test.gguf", "'k'", "type 13"});
  }
}

TEST(Gguf, MissingFileNamesPath) {
  expect_error([] { GgufFile f("/nonexistent/model.gguf"); }, {"/nonexistent/model.gguf"});
}

}  // namespace
}  // namespace kf

// Dequantisation: (a) hand-built blocks whose expected values are computed here
// from the GGUF/ggml block definitions; (b) random blocks dequantised by the
// Python gguf package (tests/fixtures/gguf/quants.gguf, tools/make_gguf_fixtures.py).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "util/dequant.h"
#include "io/gguf.h"

namespace kf {
namespace {

void put_f16(uint8_t* p, float x) {
  const uint16_t h = f32_to_f16(x);
  std::memcpy(p, &h, 2);
}

TEST(Dequant, Q8_0HandBuilt) {
  uint8_t b[34];
  put_f16(b, 0.5f);
  for (int i = 0; i < 32; ++i) b[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 16));
  float y[32];
  dequantize(DType::Q8_0, b, y, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], 0.5f * (i - 16)) << i;
}

TEST(Dequant, Q4_0HandBuilt) {
  uint8_t b[18];
  put_f16(b, 2.f);
  for (int i = 0; i < 16; ++i) b[2 + i] = static_cast<uint8_t>(i | ((15 - i) << 4));
  float y[32];
  dequantize(DType::Q4_0, b, y, 32);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], 2.f * (i - 8)) << i;             // low nibbles: elements 0..15
    EXPECT_EQ(y[16 + i], 2.f * (15 - i - 8)) << i;   // high nibbles: elements 16..31
  }
}

TEST(Dequant, Q4_1HandBuilt) {
  uint8_t b[20];
  put_f16(b, 0.25f);
  put_f16(b + 2, -1.f);
  for (int i = 0; i < 16; ++i) b[4 + i] = static_cast<uint8_t>((i * 7 % 16) | ((i * 3 % 16) << 4));
  float y[32];
  dequantize(DType::Q4_1, b, y, 32);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(y[i], 0.25f * (i * 7 % 16) - 1.f) << i;
    EXPECT_EQ(y[16 + i], 0.25f * (i * 3 % 16) - 1.f) << i;
  }
}

// Q4_K: 8 sub-blocks of 32 with 6-bit scale sc[j] and min m[j] packed in 12 bytes.
TEST(Dequant, Q4_KHandBuilt) {
  uint8_t b[144] = {};
  const float d = 0.5f, dmin = 0.25f;
  put_f16(b, d);
  put_f16(b + 2, dmin);
  int sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = j < 4 ? 1 + j : 17 + 11 * j % 47;  // > 15 for j >= 4: exercises the top 2 bits
    mn[j] = j < 4 ? 60 - j : 16 + 5 * j;
  }
  uint8_t* s = b + 4;
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j]);
    s[j + 4] = static_cast<uint8_t>(mn[j]);
  }
  for (int j = 4; j < 8; ++j) {
    s[j + 4] = static_cast<uint8_t>((sc[j] & 15) | ((mn[j] & 15) << 4));
    s[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
    s[j] |= static_cast<uint8_t>((mn[j] >> 4) << 6);
  }
  // Element 32j + l: nibble of qs[32(j/2) + l], low for even j, high for odd j.
  auto q_of = [](int e) { return (e * 5 + 3) % 16; };
  uint8_t* qs = b + 16;
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32, l = e % 32;
    qs[32 * (j / 2) + l] |= static_cast<uint8_t>(j % 2 ? q_of(e) << 4 : q_of(e));
  }
  std::vector<float> y(256);
  dequantize(DType::Q4_K, b, y.data(), 256);
  for (int e = 0; e < 256; ++e) {
    const int j = e / 32;
    EXPECT_FLOAT_EQ(y[e], d * sc[j] * q_of(e) - dmin * mn[j]) << e;
  }
}

// Q6_K: element e has a 6-bit value v, scale index e/16; low 4 bits in
// ql[64h + l + 32(k&1)] (high nibble for k >= 2), high 2 bits in bits 2k of qh[32h + l],
// where h = e/128, k = (e%128)/32, l = e%32.
TEST(Dequant, Q6_KHandBuilt) {
  uint8_t b[210] = {};
  const float d = 0.125f;
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  auto* sc = reinterpret_cast<int8_t*>(b + 192);
  for (int i = 0; i < 16; ++i) sc[i] = static_cast<int8_t>(i % 2 ? -3 * i : 5 + i);
  put_f16(b + 208, d);
  auto v_of = [](int e) { return (e * 37 + 11) % 64; };
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, k = (e % 128) / 32, l = e % 32, v = v_of(e);
    uint8_t& low = ql[64 * h + l + 32 * (k & 1)];
    low |= static_cast<uint8_t>(k >= 2 ? (v & 15) << 4 : (v & 15));
    qh[32 * h + l] |= static_cast<uint8_t>((v >> 4) << (2 * k));
  }
  std::vector<float> y(256);
  dequantize(DType::Q6_K, b, y.data(), 256);
  for (int e = 0; e < 256; ++e) EXPECT_FLOAT_EQ(y[e], d * sc[e / 16] * (v_of(e) - 32)) << e;
}

TEST(Dequant, PlainTypes) {
  const float x[4] = {1.f, -2.5f, 3.140625f, 0.f};
  uint16_t h[4], bf[4];
  for (int i = 0; i < 4; ++i) h[i] = f32_to_f16(x[i]), bf[i] = f32_to_bf16(x[i]);
  float y[4];
  dequantize(DType::F32, x, y, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[i], x[i]);
  dequantize(DType::F16, h, y, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[i], x[i]);
  dequantize(DType::BF16, bf, y, 4);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(y[i], x[i]);  // all exactly representable
  // An empty tensor has no storage (found by fuzz_safetensors: memcpy of null pointers under UBSan).
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0}) dequantize(t, nullptr, nullptr, 0);
}

TEST(Dequant, BadInput) {
  uint8_t b[34] = {};
  float y[32];
  EXPECT_THROW(dequantize(DType::Q8_0, b, y, 31), Error);  // not a whole block
  EXPECT_THROW(dequantize(DType::I32, b, y, 4), Error);
  EXPECT_FALSE(can_dequantize(DType::U8));
  EXPECT_TRUE(can_dequantize(DType::Q6_K));
}

class DequantFixture : public ::testing::TestWithParam<const char*> {};

TEST_P(DequantFixture, MatchesPythonGguf) {
  const GgufFile f(KINFER_SOURCE_DIR "/tests/fixtures/gguf/quants.gguf");
  const std::string type = GetParam();
  const GgufTensor& raw = f.tensor(type + ".raw");
  const GgufTensor& want = f.tensor(type + ".expected");
  ASSERT_EQ(std::string(dtype_name(raw.dtype)), type);
  ASSERT_EQ(raw.shape, want.shape);
  ASSERT_EQ(want.dtype, DType::F32);
  std::vector<float> y(raw.numel), ref(raw.numel);
  std::memcpy(ref.data(), want.data, ref.size() * 4);
  dequantize(raw.dtype, raw.data, y.data(), raw.numel);
  for (int64_t i = 0; i < raw.numel; ++i) {
    ASSERT_NEAR(y[i], ref[i], 1e-6f * std::max(1.f, std::fabs(ref[i]))) << type << " element " << i;
  }
  // bf16 path = bf16 rounding of the f32 path
  std::vector<uint16_t> yb(raw.numel);
  dequantize_bf16(raw.dtype, raw.data, yb.data(), raw.numel);
  for (int64_t i = 0; i < raw.numel; ++i) ASSERT_EQ(yb[i], f32_to_bf16(y[i])) << i;
}

INSTANTIATE_TEST_SUITE_P(Types, DequantFixture,
                         ::testing::Values("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"));

}  // namespace
}  // namespace kf

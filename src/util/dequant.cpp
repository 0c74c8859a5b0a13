#include "util/dequant.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "util/error.h"

namespace kf {

namespace {

uint16_t u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
float half(const uint8_t* p) { return f16_to_f32(u16(p)); }

// Q8_0: 34 bytes = f16 d, i8 q[32].
void q8_0(const uint8_t* b, float* y) {
  const float d = half(b);
  for (int i = 0; i < 32; ++i) y[i] = d * static_cast<int8_t>(b[2 + i]);
}

// Q4_0: 18 bytes = f16 d, u8 qs[16]; element i < 16 is the low nibble of qs[i], i+16 the high.
void q4_0(const uint8_t* b, float* y) {
  const float d = half(b);
  const uint8_t* qs = b + 2;
  for (int i = 0; i < 16; ++i) {
    y[i] = d * ((qs[i] & 0xF) - 8);
    y[i + 16] = d * ((qs[i] >> 4) - 8);
  }
}

// Q4_1: 20 bytes = f16 d, f16 m, u8 qs[16].
void q4_1(const uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  const uint8_t* qs = b + 4;
  for (int i = 0; i < 16; ++i) {
    y[i] = d * (qs[i] & 0xF) + m;
    y[i + 16] = d * (qs[i] >> 4) + m;
  }
}

// Q4_K's 12 scale bytes hold 8 six-bit scales and 8 six-bit mins:
// sub-blocks 0..3 use the low 6 bits of bytes 0..3 (scale) and 4..7 (min);
// sub-blocks 4..7 take their low 4 bits from bytes 8..11 (scale: low nibble,
// min: high nibble) and their top 2 bits from the top bits of bytes 0..7.
void q4k_scale_min(int j, const uint8_t* s, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K: 144 bytes = f16 d, f16 dmin, u8 scales[12], u8 qs[128]; 8 sub-blocks of 32.
// Each 32-byte group of qs holds two sub-blocks: low nibbles, then high nibbles.
void q4_k(const uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int g = 0; g < 4; ++g) {
    int sc0, m0, sc1, m1;
    q4k_scale_min(2 * g, scales, &sc0, &m0);
    q4k_scale_min(2 * g + 1, scales, &sc1, &m1);
    const float d0 = d * sc0, dm0 = dmin * m0, d1 = d * sc1, dm1 = dmin * m1;
    for (int l = 0; l < 32; ++l) {
      y[64 * g + l] = d0 * (qs[32 * g + l] & 0xF) - dm0;
      y[64 * g + 32 + l] = d1 * (qs[32 * g + l] >> 4) - dm1;
    }
  }
}

// Q6_K: 210 bytes = u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits),
// i8 scales[16] (one per 16 elements), f16 d. Two halves of 128 elements; in
// each, element l + 32k (k = 0..3, l < 32) takes its low 4 bits from
// ql[l + 32(k&1)] (low nibble for k < 2, high nibble for k >= 2) and its
// high 2 bits from bits 2k..2k+1 of qh[l]; the 6-bit value is offset by 32.
void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half(b + 208);
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is + 0] * q1;
      y[l + 32] = d * sc[is + 2] * q2;
      y[l + 64] = d * sc[is + 4] * q3;
      y[l + 96] = d * sc[is + 6] * q4;
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

using BlockFn = void (*)(const uint8_t*, float*);
BlockFn block_fn(DType t) {
  switch (t) {
    case DType::Q8_0: return q8_0;
    case DType::Q4_0: return q4_0;
    case DType::Q4_1: return q4_1;
    case DType::Q4_K: return q4_k;
    case DType::Q6_K: return q6_k;
    default: return nullptr;
  }
}

}  // namespace

bool can_dequantize(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || block_fn(t) != nullptr;
}

void dequantize(DType t, const void* src, float* dst, int64_t n) {
  KF_CHECK(n >= 0, "dequantize: negative element count {}", n);
  const auto* s = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32:  // an empty tensor may have no storage, and memcpy must not see null pointers
      if (n > 0) std::memcpy(dst, s, size_t(n) * 4);
      return;
    case DType::F16: for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(u16(s + 2 * i)); return;
    case DType::BF16: for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(u16(s + 2 * i)); return;
    default: break;
  }
  const BlockFn fn = block_fn(t);
  KF_CHECK(fn, "dequantize: unsupported dtype {}", dtype_name(t));
  const int bs = dtype_block(t);
  const size_t block_bytes = dtype_bytes(t, bs);
  KF_CHECK(n % bs == 0, "dequantize: {} elements is not a multiple of the {} block size {}", n, dtype_name(t), bs);
  for (int64_t b = 0; b < n / bs; ++b) fn(s + b * block_bytes, dst + b * bs);
}

void dequantize_bf16(DType t, const void* src, uint16_t* dst, int64_t n) {
  if (t == DType::BF16) {
    std::memcpy(dst, src, size_t(n) * 2);
    return;
  }
  // Through an f32 scratch of a few blocks at a time.
  const int bs = dtype_block(t);
  const int64_t chunk = int64_t(bs) * 64;
  std::vector<float> tmp(static_cast<size_t>(chunk));
  const auto* s = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min(chunk, n - i);
    dequantize(t, s + dtype_bytes(t, i), tmp.data(), m);
    for (int64_t k = 0; k < m; ++k) dst[i + k] = f32_to_bf16(tmp[k]);
  }
}

}  // namespace kf

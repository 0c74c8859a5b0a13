// Byte layouts of the GGUF block formats as the CPU matmul kernels read them
// (the format definition is util/dequant.h), and the few helpers both kernel
// levels share. Every read is a memcpy: blocks sit at any byte alignment.
#pragma once
#include <cstdint>
#include <cstring>

#include "util/tensor.h"

namespace kf::cpu {

// Bytes per block and where the quantised values start.
constexpr int kQ8_0Bytes = 34;   // f16 d | i8 q[32]
constexpr int kQ4_0Bytes = 18;   // f16 d | u8 qs[16]
constexpr int kQ4_1Bytes = 20;   // f16 d | f16 m | u8 qs[16]
constexpr int kQ4_KBytes = 144;  // f16 d | f16 dmin | u8 scales[12] | u8 qs[128]
constexpr int kQ6_KBytes = 210;  // u8 ql[128] | u8 qh[64] | i8 scales[16] | f16 d

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float load_f16(const uint8_t* p) { return f16_to_f32(load_u16(p)); }
inline float round_to_f16(float v) { return f16_to_f32(f32_to_f16(v)); }

// Q4_K's 12 scale bytes -> 8 six-bit sub-block scales and 8 six-bit mins.
// Bytes 0..3 hold scales 0..3 in their low 6 bits, bytes 4..7 mins 0..3;
// scale/min j >= 4 takes its low 4 bits from byte j+4 (scale: low nibble,
// min: high nibble) and its top 2 bits from the top of byte j-4 / j.
inline void q4k_scales_mins(const uint8_t* s12, uint8_t scales[8], uint8_t mins[8]) {
  const uint32_t a = load_u32(s12), b = load_u32(s12 + 4), c = load_u32(s12 + 8);
  const uint32_t sc_lo = a & 0x3f3f3f3fu, mn_lo = b & 0x3f3f3f3fu;
  const uint32_t sc_hi = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);
  const uint32_t mn_hi = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);
  std::memcpy(scales, &sc_lo, 4);
  std::memcpy(scales + 4, &sc_hi, 4);
  std::memcpy(mins, &mn_lo, 4);
  std::memcpy(mins + 4, &mn_hi, 4);
}

}  // namespace kf::cpu

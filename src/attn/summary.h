// How a KV pool stores its page key summaries (DESIGN.md: the mean of a
// full page's post-RoPE keys, per KV head), shared by the CPU reference and
// the CUDA kernels (host and device code).
//
// FP8 summaries (`--summary-dtype fp8`): each (page, KV head) summary vector
// is stored as fp8 e4m3 codes, one byte per dim, with one power-of-two scale:
// value[d] = e4m3(code[d]) * scale. The scale is the smallest power of two
// that brings the vector's largest |mean| within e4m3's range (448), so the
// encoding keeps e4m3's 4 significant bits on every dim whatever the keys'
// magnitude, and dequantizing is exact (a power of two times a short
// mantissa). Scoring is q̄ · value = scale * (q̄ · e4m3(code)): the scale
// commutes exactly with the sum. Half the bytes of bf16 summaries, which the
// block top-k kernel reads for every candidate page of every step.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KF_HOST_DEVICE __host__ __device__
#else
#define KF_HOST_DEVICE
#endif

namespace kf::attn {

enum class SummaryKind : int { F32 = 0, BF16 = 1, FP8 = 2 };

KF_HOST_DEVICE inline int summary_elem_bytes(SummaryKind k) {
  return k == SummaryKind::F32 ? 4 : k == SummaryKind::BF16 ? 2 : 1;
}

// Bytes one (page, KV head) summary takes, the FP8 scale included.
KF_HOST_DEVICE inline int64_t summary_bytes(SummaryKind k, int head_dim) {
  return k == SummaryKind::FP8 ? head_dim + 4 : static_cast<int64_t>(head_dim) * summary_elem_bytes(k);
}
// The kind of a pool whose K/V elements take elem_bytes, unless fp8 is asked for.
KF_HOST_DEVICE inline SummaryKind summary_kind_for(int elem_bytes, bool fp8) {
  return fp8 ? SummaryKind::FP8 : elem_bytes == 2 ? SummaryKind::BF16 : SummaryKind::F32;
}

constexpr float kE4m3Max = 448.f;  // 1.75 * 2^8, code 0x7e

// The power-of-two scale of a summary vector whose largest |value| is amax:
// the smallest 2^x with amax / 2^x <= 448. 1 for amax 0, inf or NaN.
KF_HOST_DEVICE inline float fp8_summary_scale(float amax) {
  if (!(amax > 0.f) || amax > 3.0e38f) return 1.f;
  int e = 0;
  const float m = frexpf(amax, &e);  // amax = m * 2^e, m in [0.5, 1); 448 = 0.875 * 2^9
  const int x = m <= 0.875f ? e - 9 : e - 8;
  return ldexpf(1.f, x < -126 ? -126 : x);  // a normal float, so 1 / scale is finite
}

// x -> e4m3 code, rounding to nearest even, saturating to +-448 (NaN -> 0x7f).
KF_HOST_DEVICE inline uint8_t fp8_e4m3_encode(float x) {
  const uint8_t sign = x < 0.f ? 0x80 : 0x00;  // -0 -> +0: same value
  const float a = fabsf(x);
  if (a != a) return 0x7f;
  if (a >= kE4m3Max) return sign | 0x7e;
  if (a == 0.f) return sign;
  int e = 0;
  frexpf(a, &e);  // a in [2^(e-1), 2^e)
  const int E = e - 1 < -6 ? -6 : e - 1;  // below 2^-6: subnormals, quantum 2^-9
  // a / 2^(E-3) rounded to an integer n in [0, 16] (exact scaling, rintf is
  // round-half-even); code = exponent field * 8 + mantissa, which for n = 16
  // carries into the next exponent and for E = -6 gives the subnormals.
  const int n = static_cast<int>(rintf(ldexpf(a, 3 - E)));
  return static_cast<uint8_t>(sign | (((E + 7) << 3) + n - 8));
}

KF_HOST_DEVICE inline float fp8_e4m3_decode(uint8_t c) {
  const int exp = (c >> 3) & 15, mant = c & 7;
  float v;
  if (exp == 15 && mant == 7) v = NAN;
  else if (exp == 0) v = ldexpf(static_cast<float>(mant), -9);
  else v = ldexpf(static_cast<float>(8 + mant), exp - 10);
  return (c & 0x80) ? -v : v;
}

}  // namespace kf::attn

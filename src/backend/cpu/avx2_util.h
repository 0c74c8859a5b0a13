// Helpers shared by the AVX2 kernel files of the CPU backend. Every function
// carries the target attribute (the files are not built with -mavx2), so it
// is only ever called from kernels that run after the CPU check.
#pragma once
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/quant_blocks.h"

#define KF_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace kf::cpu {

KF_AVX2 inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
KF_AVX2 inline __m128i load64(const void* p) { return _mm_loadl_epi64(static_cast<const __m128i*>(p)); }
// Two f16 at p (four bytes) -> lanes 0 and 1 (2 and 3 are zero).
KF_AVX2 inline __m128 f16x2(const uint8_t* p) { return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(load_u32(p)))); }
// One f16 at p -> lane 0 (the others are zero).
KF_AVX2 inline __m128 f16x1(const uint8_t* p) { return _mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p))); }
// Four f16 at p (eight bytes) -> four lanes.
KF_AVX2 inline __m128 f16x4(const uint8_t* p) { return _mm_cvtph_ps(load64(p)); }
// Lanes 0, 1 of a float pair at p.
KF_AVX2 inline __m128 f32x2(const float* p) { return _mm_castsi128_ps(load64(p)); }

// Weight rows are read a few at a time, a block of each in turn: short
// interleaved streams that the hardware prefetcher does not pick up in time,
// so each block also prefetches the same block kPrefetchTiles tiles ahead.
constexpr int kPrefetchTiles = 4;
KF_AVX2 inline void prefetch(const uint8_t* p, size_t bytes) {
  for (size_t off = 0; off < bytes; off += 64) _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T0);
}

// (a0 + a2) + (a1 + a3)
KF_AVX2 inline float hsum4(__m128 a) {
  const __m128 s = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))
KF_AVX2 inline float hsum8(__m256 a) { return hsum4(_mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1))); }

// x rows in Q8_32: row r's block b has q at q(r) + 32 b, (d, s) at ds(r) + 2 b,
// Σq at sums(r)[b], and (for packed weights) its 8 pieces at pieces(r) + 128 b.
struct Rows32 {
  const ActRows& x;
  int64_t nb;
  const int8_t* q(int64_t r) const { return x.q + r * x.k; }
  const float* ds(int64_t r) const { return x.scale + r * 2 * nb; }
  const int16_t* sums(int64_t r) const { return x.sums + r * nb; }
  const int8_t* pieces(int64_t r) const { return x.pieces + r * 4 * x.k; }
};

// y[r + i][c + j] = lane j of acc[i] (+ bias), for the lanes of columns < c1.
template <int R>
KF_AVX2 inline void store_lanes(const __m128 (&acc)[R], int64_t r, int64_t c, int64_t c1, const float* bias, float* y,
                                int64_t ldy) {
  for (int i = 0; i < R; ++i) {
    alignas(16) float v[4];
    _mm_store_ps(v, acc[i]);
    for (int j = 0; j < 4 && c + j < c1; ++j) y[(r + i) * ldy + c + j] = bias ? v[j] + bias[c + j] : v[j];
  }
}

// The interleaved-weight kernels (matmul_avx2_packed.cpp).
void spread_q8_avx2(const int8_t* q, int64_t k, int8_t* pieces);
void q8_0x4_tile_avx2(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                      const float* bias, float* y, int64_t ldy);
void q4_0x4_tile_avx2(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                      const float* bias, float* y, int64_t ldy);
void q4_1x4_tile_avx2(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                      const float* bias, float* y, int64_t ldy);

}  // namespace kf::cpu
#endif

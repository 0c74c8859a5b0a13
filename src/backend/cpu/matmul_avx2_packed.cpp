// AVX2 kernels for the interleaved weights Q8_0x4, Q4_0x4, Q4_1x4
// (packed_weights.h): one 16-byte load holds 4 values of each of 4 weight
// rows, so one maddubs against a piece of x (4 values repeated, see
// ActRows::pieces) adds 4 products to each of the 4 rows' sums, and a block's
// four sums come out in the four lanes of one vector with its four scales:
// the block's float work is one FMA for four outputs. A tile is R rows of x
// by one group of 4 weight rows; every y[r, c] sees the same operations in
// every tile (batch invariance).
#include "backend/cpu/avx2_util.h"

#ifdef KF_AVX2
#include <algorithm>

#include "backend/cpu/packed_weights.h"

namespace kf::cpu {
namespace {

constexpr int kRowsPerTile = 4;

// The 4-bit formats: 4 pieces hold the low nibbles (elements 4k..4k+3 of each
// row: x piece k) and, shifted, the high nibbles (elements 16+4k..: piece 4+k).
// Each maddubs lane is at most 2*15*127, so all 8 add up in i16 (<= 30480).
template <bool kHasMin>
struct Q4x4 {
  static constexpr int kBlockBytes = 4 * (kHasMin ? kQ4_1Bytes : kQ4_0Bytes);
  static constexpr int kScaleBytes = kHasMin ? 16 : 8;

  template <int R>
  KF_AVX2 static void run(const Rows32& x, int64_t r, const uint8_t* group, size_t ahead, __m128 (&acc)[R]) {
    const __m128i m4 = _mm_set1_epi8(0x0F), ones = _mm_set1_epi16(1);
    for (int i = 0; i < R; ++i) acc[i] = _mm_setzero_ps();
    for (int64_t b = 0; b < x.nb; ++b) {
      const uint8_t* blk = group + b * kBlockBytes;
      prefetch(blk + ahead, kBlockBytes);
      const __m128 d = f16x4(blk), m = kHasMin ? f16x4(blk + 8) : _mm_setzero_ps();
      __m128i lo[4], hi[4];
      for (int k = 0; k < 4; ++k) {
        const __m128i raw = load128(blk + kScaleBytes + 16 * k);
        lo[k] = _mm_and_si128(raw, m4);
        hi[k] = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
      }
      for (int i = 0; i < R; ++i) {
        const int8_t* xp = x.pieces(r + i) + 128 * b;
        __m128i s = _mm_maddubs_epi16(lo[0], load128(xp));
        for (int k = 1; k < 4; ++k) s = _mm_add_epi16(s, _mm_maddubs_epi16(lo[k], load128(xp + 16 * k)));
        for (int k = 0; k < 4; ++k) s = _mm_add_epi16(s, _mm_maddubs_epi16(hi[k], load128(xp + 64 + 16 * k)));
        __m128i isum = _mm_madd_epi16(s, ones);  // lane j: row j's Σ nibble*q
        const float* ds = x.ds(r + i) + 2 * b;
        if constexpr (!kHasMin) isum = _mm_sub_epi32(isum, _mm_set1_epi32(8 * x.sums(r + i)[b]));
        acc[i] = _mm_fmadd_ps(_mm_mul_ps(d, _mm_broadcast_ss(ds)), _mm_cvtepi32_ps(isum), acc[i]);
        if constexpr (kHasMin) acc[i] = _mm_fmadd_ps(m, _mm_broadcast_ss(ds + 1), acc[i]);
      }
    }
  }
};

// Q8_0: signed x signed as |w| x (x with w's sign); w is never -128 here
// (can_pack). A maddubs lane reaches 2*127*127, so each piece widens to i32.
struct Q8x4 {
  static constexpr int kBlockBytes = 4 * kQ8_0Bytes;

  template <int R>
  KF_AVX2 static void run(const Rows32& x, int64_t r, const uint8_t* group, size_t ahead, __m128 (&acc)[R]) {
    const __m128i ones = _mm_set1_epi16(1);
    for (int i = 0; i < R; ++i) acc[i] = _mm_setzero_ps();
    for (int64_t b = 0; b < x.nb; ++b) {
      const uint8_t* blk = group + b * kBlockBytes;
      prefetch(blk + ahead, kBlockBytes);
      const __m128 d = f16x4(blk);
      const uint8_t* q = blk + 8;
      __m128i mag[8];
      for (int k = 0; k < 8; ++k) mag[k] = _mm_abs_epi8(load128(q + 16 * k));
      for (int i = 0; i < R; ++i) {
        const int8_t* xp = x.pieces(r + i) + 128 * b;
        __m128i isum = _mm_setzero_si128();
        for (int k = 0; k < 8; ++k) {
          const __m128i signed_x = _mm_sign_epi8(load128(xp + 16 * k), load128(q + 16 * k));
          isum = _mm_add_epi32(isum, _mm_madd_epi16(_mm_maddubs_epi16(mag[k], signed_x), ones));
        }
        acc[i] = _mm_fmadd_ps(_mm_mul_ps(d, _mm_broadcast_ss(x.ds(r + i) + 2 * b)), _mm_cvtepi32_ps(isum), acc[i]);
      }
    }
  }
};

// Rows [r0, r1) of x against the groups of weight rows covering [c0, c1)
// (c0 is a multiple of 4; the packed matrix has a whole number of groups).
template <class K, int R>
KF_AVX2 void group_rows(const Rows32& x, int64_t r, const WeightRows& w, int64_t c0, int64_t c1, const float* bias,
                        float* y, int64_t ldy) {
  const size_t group_bytes = 4 * w.row_bytes;
  for (int64_t c = c0; c < c1; c += 4) {
    __m128 acc[R];
    K::template run<R>(x, r, w.data + (c / 4) * group_bytes, kPrefetchTiles * group_bytes, acc);
    store_lanes<R>(acc, r, c, c1, bias, y, ldy);
  }
}

template <class K>
KF_AVX2 void packed_tile(const ActRows& xa, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                         const float* bias, float* y, int64_t ldy) {
  const Rows32 x{xa, xa.k / kQ8Block32};
  int64_t r = r0;
  for (; r + kRowsPerTile <= r1; r += kRowsPerTile) group_rows<K, kRowsPerTile>(x, r, w, c0, c1, bias, y, ldy);
  for (; r < r1; ++r) group_rows<K, 1>(x, r, w, c0, c1, bias, y, ldy);
}

}  // namespace

KF_AVX2 void spread_q8_avx2(const int8_t* q, int64_t k, int8_t* pieces) {
  for (int64_t i = 0; i < k; i += 16) {
    const __m128i v = load128(q + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pieces + 4 * i), _mm_shuffle_epi32(v, 0x00));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pieces + 4 * i + 16), _mm_shuffle_epi32(v, 0x55));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pieces + 4 * i + 32), _mm_shuffle_epi32(v, 0xAA));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(pieces + 4 * i + 48), _mm_shuffle_epi32(v, 0xFF));
  }
}

void q8_0x4_tile_avx2(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                      const float* bias, float* y, int64_t ldy) {
  packed_tile<Q8x4>(x, r0, r1, w, c0, c1, bias, y, ldy);
}
void q4_0x4_tile_avx2(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                      const float* bias, float* y, int64_t ldy) {
  packed_tile<Q4x4<false>>(x, r0, r1, w, c0, c1, bias, y, ldy);
}
void q4_1x4_tile_avx2(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                      const float* bias, float* y, int64_t ldy) {
  packed_tile<Q4x4<true>>(x, r0, r1, w, c0, c1, bias, y, ldy);
}

}  // namespace kf::cpu
#endif

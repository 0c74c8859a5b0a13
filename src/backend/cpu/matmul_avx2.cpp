// AVX2 + FMA + F16C level of the CPU matmul kernels (matmul_kernels.h).
//
// Every function here carries a target attribute instead of the file being
// built with -mavx2, so the rest of the binary stays baseline x86-64 and runs
// on any CPU; best_kernels() only hands these out after checking the CPU.
//
// Integer kernels work on 128-bit vectors: on the 2-core AMD EPYC (Zen 1)
// this engine is tuned on, 256-bit integer ops are split in two anyway, and
// the nibble unpacking needs no lane crossing this way. A block's dot is
// maddubs (u8 x s8 -> pairs of i16) then madd (-> i32), exact; its scale is
// applied in float with one FMA into a 4-lane accumulator per (x row, w row).
// The float kernels use 8-lane FMAs. Sums over lanes are reduced in one fixed
// order at the end, so each y[r, c] has the same bits in every tile shape.
#include "backend/cpu/matmul_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KF_HAVE_AVX2_KERNELS 1
#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "backend/cpu/avx2_util.h"
#include "backend/cpu/quant_blocks.h"
#endif

namespace kf::cpu {

#ifdef KF_HAVE_AVX2_KERNELS
namespace {

// ---- the tile driver -------------------------------------------------------------

// Runs K::run<R, C>(x, r, w, c, bias, y, ldy) over [r0, r1) x [c0, c1): full
// tiles of K::kRows x K::kCols, leftover rows one at a time with K::kRowCols
// columns (decode is such a row), leftover columns one at a time.
template <class K, int R, int C>
KF_AVX2 void tile_cols(const ActRows& x, int64_t r, const WeightRows& w, int64_t c0, int64_t c1, const float* bias,
                       float* y, int64_t ldy) {
  int64_t c = c0;
  for (; c + C <= c1; c += C) K::template run<R, C>(x, r, w, c, bias, y, ldy);
  for (; c < c1; ++c) K::template run<R, 1>(x, r, w, c, bias, y, ldy);
}

template <class K>
KF_AVX2 void tile(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                  const float* bias, float* y, int64_t ldy) {
  int64_t r = r0;
  for (; r + K::kRows <= r1; r += K::kRows) tile_cols<K, K::kRows, K::kCols>(x, r, w, c0, c1, bias, y, ldy);
  for (; r < r1; ++r) tile_cols<K, 1, K::kRowCols>(x, r, w, c0, c1, bias, y, ldy);
}

template <int R, int C>
KF_AVX2 inline void store(const __m128 (&acc)[R][C], int64_t r, int64_t c, const float* bias, float* y, int64_t ldy) {
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j) {
      float v = hsum4(acc[i][j]);
      if (bias) v += bias[c + j];
      y[(r + i) * ldy + c + j] = v;
    }
}

// ---- activation quantisation -----------------------------------------------------

// Round half to even, clamped to [-127, 127] (NaN becomes -127, never UB).
KF_AVX2 inline __m256i to_i32(__m256 v) {
  v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.f)), _mm256_set1_ps(127.f));
  return _mm256_cvtps_epi32(v);
}
// 32 i32 in four vectors -> 32 i8 in order.
KF_AVX2 inline void pack_i8(__m256i a, __m256i b, __m256i c, __m256i d, int8_t* out) {
  const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);  // lanes interleave by 128 bits
  const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), v);
}
KF_AVX2 inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

KF_AVX2 void quantize_q8_32(const float* x, int64_t k, int8_t* q, float* scale, int16_t* sums) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t b = 0; b < k / kQ8Block32; ++b, x += 32, q += 32) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_loadu_ps(x + 8 * i);
      amax = _mm256_max_ps(amax, _mm256_and_ps(v[i], abs_mask));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    const float d = m / 127.f, id = m != 0.f ? 127.f / m : 0.f;
    __m256i qi[4];
    for (int i = 0; i < 4; ++i) qi[i] = to_i32(_mm256_mul_ps(v[i], _mm256_set1_ps(id)));
    const int sum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3])));
    pack_i8(qi[0], qi[1], qi[2], qi[3], q);
    scale[2 * b] = round_to_f16(d);
    scale[2 * b + 1] = round_to_f16(d * static_cast<float>(sum));
    sums[b] = static_cast<int16_t>(sum);
  }
}

KF_AVX2 void quantize_q8_256(const float* x, int64_t k, int8_t* q, float* scale, int16_t* sums) {
  for (int64_t b = 0; b < k / kQ8Block256; ++b, x += 256, q += 256) {
    float amax = 0.f, max = 0.f;  // the first element of largest magnitude, with its sign
    for (int j = 0; j < 256; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float iscale = amax != 0.f ? -127.f / max : 0.f;
    for (int g = 0; g < 8; ++g) {
      __m256i qi[4];
      for (int i = 0; i < 4; ++i) qi[i] = to_i32(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 8 * i), _mm256_set1_ps(iscale)));
      pack_i8(qi[0], qi[1], qi[2], qi[3], q + 32 * g);
      sums[16 * b + 2 * g] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(qi[0], qi[1])));
      sums[16 * b + 2 * g + 1] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(qi[2], qi[3])));
    }
    scale[b] = amax != 0.f ? 1.f / iscale : 0.f;
  }
}

// ---- 32-element block formats (x in Q8_32) -----------------------------------------

// Q4_0 and Q4_1 with one weight row per vector lane: four rows of w go
// through a block together, their four sums of nibble*q reduced to one
// vector, so the block's float work (its scales, the FMA) is one vector op
// for four outputs. Q4_1 (w = d*nibble + m) adds (dw dx) Σ nibble*q + mw sx
// per block; Q4_0 (w = d*(nibble - 8)) adds (dw dx) (Σ nibble*q - 8 Σq).
// Short tiles repeat their last weight row in the spare lanes.
template <bool kHasMin>
struct Q4Lanes {
  static constexpr int kBlockBytes = kHasMin ? kQ4_1Bytes : kQ4_0Bytes;
  static constexpr int kQs = kHasMin ? 4 : 2;  // offset of the nibbles in a block
  static constexpr int kRows = 4, kLanes = 4;

  // Scales of block b of the four rows: (dw, mw) per lane.
  KF_AVX2 static void scales(const uint8_t* const (&row)[kLanes], int64_t b, __m128& d, __m128& m) {
    if constexpr (kHasMin) {
      const __m128i dm = _mm_setr_epi32(static_cast<int>(load_u32(row[0] + b * kBlockBytes)),
                                        static_cast<int>(load_u32(row[1] + b * kBlockBytes)),
                                        static_cast<int>(load_u32(row[2] + b * kBlockBytes)),
                                        static_cast<int>(load_u32(row[3] + b * kBlockBytes)));
      // f16 pairs (d, m) per lane -> d0..d3 | m0..m3
      const __m128i split = _mm_shuffle_epi8(dm, _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
      d = _mm_cvtph_ps(split);
      m = _mm_cvtph_ps(_mm_srli_si128(split, 8));
    } else {
      d = _mm_cvtph_ps(_mm_setr_epi16(static_cast<int16_t>(load_u16(row[0] + b * kBlockBytes)),
                                      static_cast<int16_t>(load_u16(row[1] + b * kBlockBytes)),
                                      static_cast<int16_t>(load_u16(row[2] + b * kBlockBytes)),
                                      static_cast<int16_t>(load_u16(row[3] + b * kBlockBytes)), 0, 0, 0, 0));
      m = _mm_setzero_ps();
    }
  }

  // Rows [r, r + R) of x against the four weight rows `row`; sums into acc.
  template <int R>
  KF_AVX2 static void run(const Rows32& x, int64_t r, const uint8_t* const (&row)[kLanes], size_t ahead,
                          __m128 (&acc)[R]) {
    const __m128i m4 = _mm_set1_epi8(0x0F), ones = _mm_set1_epi16(1);
    for (int i = 0; i < R; ++i) acc[i] = _mm_setzero_ps();
    for (int64_t b = 0; b < x.nb; ++b) {
      __m128i lo[kLanes], hi[kLanes];
      for (int j = 0; j < kLanes; ++j) {
        const uint8_t* blk = row[j] + b * kBlockBytes;
        prefetch(blk + ahead, kBlockBytes);
        const __m128i raw = load128(blk + kQs);
        lo[j] = _mm_and_si128(raw, m4);
        hi[j] = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
      }
      __m128 d, m;
      scales(row, b, d, m);
      for (int i = 0; i < R; ++i) {
        const int8_t* xq = x.q(r + i) + 32 * b;
        const __m128i xl = load128(xq), xh = load128(xq + 16);
        __m128i p[kLanes];  // i16 sums of 4 products (|.| <= 4*15*127)
        for (int j = 0; j < kLanes; ++j)
          p[j] = _mm_add_epi16(_mm_maddubs_epi16(lo[j], xl), _mm_maddubs_epi16(hi[j], xh));
        // Lane j <- Σ p[j]: pairs, then quads (|.| <= 30480, still i16), then i32.
        const __m128i quads = _mm_hadd_epi16(_mm_hadd_epi16(p[0], p[1]), _mm_hadd_epi16(p[2], p[3]));
        __m128i isum = _mm_madd_epi16(quads, ones);
        const float* ds = x.ds(r + i) + 2 * b;
        if constexpr (!kHasMin) isum = _mm_sub_epi32(isum, _mm_set1_epi32(8 * x.sums(r + i)[b]));
        acc[i] = _mm_fmadd_ps(_mm_mul_ps(d, _mm_broadcast_ss(ds)), _mm_cvtepi32_ps(isum), acc[i]);
        if constexpr (kHasMin) acc[i] = _mm_fmadd_ps(m, _mm_broadcast_ss(ds + 1), acc[i]);
      }
    }
  }

  template <int R>
  KF_AVX2 static void rows(const Rows32& x, int64_t r, const WeightRows& w, int64_t c0, int64_t c1, const float* bias,
                           float* y, int64_t ldy) {
    for (int64_t c = c0; c < c1; c += kLanes) {
      const uint8_t* row[kLanes];
      for (int j = 0; j < kLanes; ++j) row[j] = w.data + std::min(c + j, c1 - 1) * w.row_bytes;
      __m128 acc[R];
      run<R>(x, r, row, kPrefetchTiles * kLanes * w.row_bytes, acc);
      store_lanes<R>(acc, r, c, c1, bias, y, ldy);
    }
  }

  KF_AVX2 static void tile(const ActRows& xa, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1,
                           const float* bias, float* y, int64_t ldy) {
    const Rows32 x{xa, xa.k / kQ8Block32};
    int64_t r = r0;
    for (; r + kRows <= r1; r += kRows) rows<kRows>(x, r, w, c0, c1, bias, y, ldy);
    for (; r < r1; ++r) rows<1>(x, r, w, c0, c1, bias, y, ldy);
  }
};

// Q8_0: signed x signed, as |w| x (x with the sign of w); each half's pairs
// fit in i16 but their sum may not, so both widen to i32 first.
struct Q8_0 {
  static constexpr int kRows = 4, kCols = 2, kRowCols = 4;
  template <int R, int C>
  KF_AVX2 static void run(const ActRows& xa, int64_t r, const WeightRows& w, int64_t c, const float* bias, float* y,
                          int64_t ldy) {
    const Rows32 x{xa, xa.k / kQ8Block32};
    const __m128i ones = _mm_set1_epi16(1);
    __m128 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm_setzero_ps();
    for (int64_t b = 0; b < x.nb; ++b) {
      for (int j = 0; j < C; ++j) {
        const uint8_t* blk = w.data + (c + j) * w.row_bytes + b * kQ8_0Bytes;
        prefetch(blk + kPrefetchTiles * C * w.row_bytes, kQ8_0Bytes);
        const __m128 d = f16x1(blk);
        const __m128i w0 = load128(blk + 2), w1 = load128(blk + 18);
        const __m128i a0 = _mm_abs_epi8(w0), a1 = _mm_abs_epi8(w1);
        for (int i = 0; i < R; ++i) {
          const int8_t* xq = x.q(r + i) + 32 * b;
          const __m128i p0 = _mm_madd_epi16(_mm_maddubs_epi16(a0, _mm_sign_epi8(load128(xq), w0)), ones);
          const __m128i p1 = _mm_madd_epi16(_mm_maddubs_epi16(a1, _mm_sign_epi8(load128(xq + 16), w1)), ones);
          const __m128 f = _mm_cvtepi32_ps(_mm_add_epi32(p0, p1));
          const __m128 sc = _mm_mul_ps(d, f32x2(x.ds(r + i) + 2 * b));
          acc[i][j] = _mm_fmadd_ps(_mm_broadcastss_ps(sc), f, acc[i][j]);
        }
      }
    }
    store<R, C>(acc, r, c, bias, y, ldy);
  }
};

// ---- 256-element K formats (x in Q8_256) ---------------------------------------------

// Shuffle masks that broadcast i16 lane j of a vector to all 8 lanes.
KF_AVX2 inline __m128i splat16(__m128i v, int j) {
  return _mm_shuffle_epi8(v, _mm_set1_epi16(static_cast<int16_t>((2 * j) | ((2 * j + 1) << 8))));
}

// Q4_K: sub-block j (32 elements) is d*sc_j*nibble - dmin*m_j, so a block adds
// (d dx) Σ_j sc_j Σ nibble*q - (dmin dx) Σ_j m_j Σq.
struct Q4_K {
  static constexpr int kRows = 2, kCols = 2, kRowCols = 2;
  template <int R, int C>
  KF_AVX2 static void run(const ActRows& x, int64_t r, const WeightRows& w, int64_t c, const float* bias, float* y,
                          int64_t ldy) {
    const int64_t nb = x.k / kQ8Block256;
    const __m128i m4 = _mm_set1_epi8(0x0F);
    __m128 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m128i bsum32[R];  // Σq per 32 of each x row: pairs of its sums per 16
      for (int i = 0; i < R; ++i) {
        const int16_t* s16 = x.sums + (r + i) * (x.k / 16) + 16 * b;
        bsum32[i] = _mm_hadd_epi16(load128(s16), load128(s16 + 8));
      }
      for (int j = 0; j < C; ++j) {
        const uint8_t* blk = w.data + (c + j) * w.row_bytes + b * kQ4_KBytes;
        prefetch(blk + kPrefetchTiles * C * w.row_bytes, kQ4_KBytes);
        const __m128 dm = f16x2(blk);  // d, dmin
        uint8_t sm[16];                // 8 scales, then 8 mins
        q4k_scales_mins(blk + 4, sm, sm + 8);
        const __m128i packed = load128(sm);
        const __m128i scales = _mm_cvtepu8_epi16(packed), mins = _mm_cvtepu8_epi16(_mm_srli_si128(packed, 8));
        const uint8_t* qs = blk + 16;
        for (int i = 0; i < R; ++i) {
          const int8_t* xq = x.q + (r + i) * x.k + 256 * b;
          __m128i isum = _mm_setzero_si128();
          for (int g = 0; g < 4; ++g) {  // 32 bytes of qs: sub-block 2g in the low nibbles, 2g+1 in the high
            const __m128i a = load128(qs + 32 * g), bb = load128(qs + 32 * g + 16);
            const __m128i lo = _mm_add_epi16(_mm_maddubs_epi16(_mm_and_si128(a, m4), load128(xq + 64 * g)),
                                             _mm_maddubs_epi16(_mm_and_si128(bb, m4), load128(xq + 64 * g + 16)));
            const __m128i hi =
                _mm_add_epi16(_mm_maddubs_epi16(_mm_and_si128(_mm_srli_epi16(a, 4), m4), load128(xq + 64 * g + 32)),
                              _mm_maddubs_epi16(_mm_and_si128(_mm_srli_epi16(bb, 4), m4), load128(xq + 64 * g + 48)));
            isum = _mm_add_epi32(isum, _mm_madd_epi16(lo, splat16(scales, 2 * g)));
            isum = _mm_add_epi32(isum, _mm_madd_epi16(hi, splat16(scales, 2 * g + 1)));
          }
          const __m128 msum = _mm_cvtepi32_ps(_mm_madd_epi16(mins, bsum32[i]));
          const __m128 sc = _mm_mul_ps(dm, _mm_set1_ps(x.scale[(r + i) * nb + b]));  // d dx, dmin dx
          acc[i][j] = _mm_fmadd_ps(_mm_broadcastss_ps(sc), _mm_cvtepi32_ps(isum), acc[i][j]);
          acc[i][j] = _mm_fnmadd_ps(_mm_permute_ps(sc, 0x55), msum, acc[i][j]);
        }
      }
    }
    store<R, C>(acc, r, c, bias, y, ldy);
  }
};

// Q6_K: 16 groups of 16 elements with i8 scales, values q6 - 32; a block adds
// (d dx) (Σ_g sc_g Σ q6*q - 32 Σ_g sc_g Σq).
struct Q6_K {
  static constexpr int kRows = 2, kCols = 2, kRowCols = 2;
  template <int R, int C>
  KF_AVX2 static void run(const ActRows& x, int64_t r, const WeightRows& w, int64_t c, const float* bias, float* y,
                          int64_t ldy) {
    const int64_t nb = x.k / kQ8Block256;
    const __m128i m4 = _mm_set1_epi8(0x0F), m2 = _mm_set1_epi8(0x30);
    __m128 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      for (int j = 0; j < C; ++j) {
        const uint8_t* blk = w.data + (c + j) * w.row_bytes + b * kQ6_KBytes;
        prefetch(blk + kPrefetchTiles * C * w.row_bytes, kQ6_KBytes);
        const __m128i sc8 = load128(blk + 192);
        const __m128i sc_lo = _mm_cvtepi8_epi16(sc8), sc_hi = _mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8));
        const __m128 d = f16x1(blk + 208);
        for (int i = 0; i < R; ++i) {
          const int8_t* xq = x.q + (r + i) * x.k + 256 * b;
          const int16_t* s16 = x.sums + (r + i) * (x.k / 16) + 16 * b;
          // 32 Σ_g sc_g Σq, subtracted from the first lane.
          const __m128i offset = _mm_slli_epi32(
              _mm_add_epi32(_mm_madd_epi16(sc_lo, load128(s16)), _mm_madd_epi16(sc_hi, load128(s16 + 8))), 5);
          __m128i isum = _mm_sub_epi32(_mm_setzero_si128(), offset);
          for (int h = 0; h < 2; ++h) {  // halves of 128 elements
            const uint8_t* ql = blk + 64 * h;
            const uint8_t* qh = blk + 128 + 32 * h;
            const __m128i scales = h == 0 ? sc_lo : sc_hi;
            for (int half = 0; half < 2; ++half) {  // l in [0, 16) or [16, 32)
              const __m128i a = load128(ql + 16 * half), bq = load128(ql + 32 + 16 * half);
              const __m128i hb = load128(qh + 16 * half);
              // element l + 32k for k = 0..3 (see util/dequant.h)
              const __m128i q6[4] = {
                  _mm_or_si128(_mm_and_si128(a, m4), _mm_and_si128(_mm_slli_epi16(hb, 4), m2)),
                  _mm_or_si128(_mm_and_si128(bq, m4), _mm_and_si128(_mm_slli_epi16(hb, 2), m2)),
                  _mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m4), _mm_and_si128(hb, m2)),
                  _mm_or_si128(_mm_and_si128(_mm_srli_epi16(bq, 4), m4), _mm_and_si128(_mm_srli_epi16(hb, 2), m2)),
              };
              for (int kk = 0; kk < 4; ++kk) {
                const __m128i p = _mm_maddubs_epi16(q6[kk], load128(xq + 128 * h + 32 * kk + 16 * half));
                isum = _mm_add_epi32(isum, _mm_madd_epi16(p, splat16(scales, 2 * kk + half)));
              }
            }
          }
          const __m128 sc = _mm_mul_ps(d, _mm_set1_ps(x.scale[(r + i) * nb + b]));
          acc[i][j] = _mm_fmadd_ps(_mm_broadcastss_ps(sc), _mm_cvtepi32_ps(isum), acc[i][j]);
        }
      }
    }
    store<R, C>(acc, r, c, bias, y, ldy);
  }
};

// ---- float weights (x in F32) -----------------------------------------------------------

struct LoadF32 {
  static constexpr int kBytes = 4;
  KF_AVX2 static __m256 load8(const uint8_t* p) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p)); }
};
struct LoadF16 {
  static constexpr int kBytes = 2;
  KF_AVX2 static __m256 load8(const uint8_t* p) { return _mm256_cvtph_ps(load128(p)); }
};
struct LoadBF16 {
  static constexpr int kBytes = 2;
  KF_AVX2 static __m256 load8(const uint8_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load128(p)), 16));
  }
};

// 8 lanes over k (lane l takes the indices = l mod 8); the last k % 8 elements
// go through zero-padded copies, so the arithmetic is the same for every row.
template <class Load>
struct FloatW {
  static constexpr int kRows = 4, kCols = 3, kRowCols = 8;
  template <int R, int C>
  KF_AVX2 static void run(const ActRows& x, int64_t r, const WeightRows& w, int64_t c, const float* bias, float* y,
                          int64_t ldy) {
    __m256 acc[R][C];
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm256_setzero_ps();
    const int64_t k = x.k, k8 = k / 8 * 8;
    for (int64_t e = 0; e < k8; e += 8) {
      __m256 wv[C];
      for (int j = 0; j < C; ++j) {
        const uint8_t* p = w.data + (c + j) * w.row_bytes + e * Load::kBytes;
        if (e % 32 == 0) prefetch(p + kPrefetchTiles * C * w.row_bytes, 1);
        wv[j] = Load::load8(p);
      }
      for (int i = 0; i < R; ++i) {
        const __m256 xv = _mm256_loadu_ps(x.f32 + (r + i) * k + e);
        for (int j = 0; j < C; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
      }
    }
    if (k8 < k) {
      const int64_t tail = k - k8;
      __m256 wv[C];
      for (int j = 0; j < C; ++j) {
        alignas(32) uint8_t pad[8 * Load::kBytes] = {};
        std::memcpy(pad, w.data + (c + j) * w.row_bytes + k8 * Load::kBytes, tail * Load::kBytes);
        wv[j] = Load::load8(pad);
      }
      for (int i = 0; i < R; ++i) {
        alignas(32) float pad[8] = {};
        std::memcpy(pad, x.f32 + (r + i) * k + k8, tail * sizeof(float));
        const __m256 xv = _mm256_load_ps(pad);
        for (int j = 0; j < C; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
      }
    }
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) {
        float v = hsum8(acc[i][j]);
        if (bias) v += bias[c + j];
        y[(r + i) * ldy + c + j] = v;
      }
  }
};

bool cpu_has_f16c() {  // CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports has no "f16c")
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
}

bool cpu_has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
}

}  // namespace

const MatmulKernels* avx2_kernels() {
  static const MatmulKernels k = [] {
    MatmulKernels m;
    m.isa = "avx2";
    m.quantize_q8_32 = quantize_q8_32;
    m.quantize_q8_256 = quantize_q8_256;
    m.f32 = tile<FloatW<LoadF32>>;
    m.f16 = tile<FloatW<LoadF16>>;
    m.bf16 = tile<FloatW<LoadBF16>>;
    m.q8_0 = tile<Q8_0>;
    m.q4_0 = Q4Lanes<false>::tile;
    m.q4_1 = Q4Lanes<true>::tile;
    m.q4_k = tile<Q4_K>;
    m.q6_k = tile<Q6_K>;
    m.spread = spread_q8_avx2;
    m.q8_0x4 = q8_0x4_tile_avx2;
    m.q4_0x4 = q4_0x4_tile_avx2;
    m.q4_1x4 = q4_1x4_tile_avx2;
    return m;
  }();
  static const bool supported = cpu_has_avx2();
  return supported ? &k : nullptr;
}

#else  // not x86-64 with GCC/clang: the portable level only

const MatmulKernels* avx2_kernels() { return nullptr; }

#endif

}  // namespace kf::cpu

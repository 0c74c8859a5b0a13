#include "backend/cpu/vector_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cpu/matmul_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KF_HAVE_AVX2_KERNELS 1
#include <immintrin.h>
#endif

namespace kf::cpu {
namespace {

// ---- portable ------------------------------------------------------------------

// Sum of a[i]*b[i] with 8 fixed lanes (lane l takes i = l mod 8), combined in a
// fixed order.
float dot8(const float* a, const float* b, int n) {
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) lane[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) lane[j] += a[i] * b[i];
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

void logits_portable(const float* q, int heads, const float* k, int n, int d, float scale, float* out, int ld) {
  for (int j = 0; j < n; ++j)
    for (int g = 0; g < heads; ++g)
      out[g * ld + j] = scale * dot8(q + static_cast<int64_t>(g) * d, k + static_cast<int64_t>(j) * d, d);
}

void accumulate_portable(float* acc, int heads, const float* rescale, const float* w, int ld, const float* v, int n,
                         int d) {
  for (int g = 0; g < heads; ++g) {
    float* a = acc + static_cast<int64_t>(g) * d;
    if (rescale[g] != 1.f)
      for (int i = 0; i < d; ++i) a[i] *= rescale[g];
    for (int j = 0; j < n; ++j) {
      const float* vj = v + static_cast<int64_t>(j) * d;
      for (int i = 0; i < d; ++i) a[i] += w[g * ld + j] * vj[i];
    }
  }
}

void silu_mul_portable(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

// ---- AVX2 + FMA ------------------------------------------------------------------

#ifdef KF_HAVE_AVX2_KERNELS
#define KF_AVX2 __attribute__((target("avx2,fma")))

KF_AVX2 inline float hsum8(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// q_g . k_j over 8 lanes, the tail of d in lane order; each key is loaded
// once for all the heads of the group.
KF_AVX2 void logits_avx2(const float* q, int heads, const float* k, int n, int d, float scale, float* out, int ld) {
  const int d8 = d / 8 * 8;
  for (int j = 0; j < n; ++j) {
    const float* kj = k + static_cast<int64_t>(j) * d;
    for (int g0 = 0; g0 < heads; g0 += 4) {
      const int gn = std::min(4, heads - g0);
      __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int i = 0; i < d8; i += 8) {
        const __m256 kv = _mm256_loadu_ps(kj + i);
        for (int g = 0; g < gn; ++g) a[g] = _mm256_fmadd_ps(_mm256_loadu_ps(q + static_cast<int64_t>(g0 + g) * d + i), kv, a[g]);
      }
      for (int g = 0; g < gn; ++g) {
        const float* qg = q + static_cast<int64_t>(g0 + g) * d;
        float s = hsum8(a[g]);
        for (int i = d8; i < d; ++i) s += qg[i] * kj[i];
        out[(g0 + g) * ld + j] = scale * s;
      }
    }
  }
}

// Slabs of 16 accumulators for up to 4 heads stay in registers while every
// key adds to them; each value row is loaded once for all heads.
KF_AVX2 void accumulate_avx2(float* acc, int heads, const float* rescale, const float* w, int ld, const float* v, int n,
                             int d) {
  for (int g0 = 0; g0 < heads; g0 += 4) {
    const int gn = std::min(4, heads - g0);
    int i = 0;
    for (; i + 16 <= d; i += 16) {
      __m256 a[4][2];
      for (int g = 0; g < gn; ++g) {
        float* ag = acc + static_cast<int64_t>(g0 + g) * d + i;
        for (int t = 0; t < 2; ++t) {
          a[g][t] = _mm256_loadu_ps(ag + 8 * t);
          if (rescale[g0 + g] != 1.f) a[g][t] = _mm256_mul_ps(a[g][t], _mm256_set1_ps(rescale[g0 + g]));
        }
      }
      for (int j = 0; j < n; ++j) {
        const float* vj = v + static_cast<int64_t>(j) * d + i;
        const __m256 v0 = _mm256_loadu_ps(vj), v1 = _mm256_loadu_ps(vj + 8);
        for (int g = 0; g < gn; ++g) {
          const __m256 wj = _mm256_set1_ps(w[(g0 + g) * ld + j]);
          a[g][0] = _mm256_fmadd_ps(wj, v0, a[g][0]);
          a[g][1] = _mm256_fmadd_ps(wj, v1, a[g][1]);
        }
      }
      for (int g = 0; g < gn; ++g)
        for (int t = 0; t < 2; ++t) _mm256_storeu_ps(acc + static_cast<int64_t>(g0 + g) * d + i + 8 * t, a[g][t]);
    }
    for (; i < d; ++i)  // the tail of d, one element of each head at a time
      for (int g = g0; g < g0 + gn; ++g) {
        float& ag = acc[static_cast<int64_t>(g) * d + i];
        float a = rescale[g] != 1.f ? ag * rescale[g] : ag;
        for (int j = 0; j < n; ++j) a += w[g * ld + j] * v[static_cast<int64_t>(j) * d + i];
        ag = a;
      }
  }
}

// e^x for 8 lanes: x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, so
// n ln2 is exact to float precision), e^r by its degree-6 Taylor polynomial
// (relative error < 2e-7 on that range), times 2^n built in the exponent
// bits. x is clamped to [-87, 88], where 2^n stays a normal float.
KF_AVX2 inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 high part: 9 bits, exact product
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);      // ln2 low part
  __m256 p = _mm256_set1_ps(1.f / 720.f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

KF_AVX2 void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.f), e)), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {  // the tail through padded copies: the same arithmetic per element
    alignas(32) float g[8] = {}, u[8] = {}, o[8];
    std::memcpy(g, gate + i, (n - i) * sizeof(float));
    std::memcpy(u, up + i, (n - i) * sizeof(float));
    silu_mul_avx2(g, u, o, 8);
    std::memcpy(out + i, o, (n - i) * sizeof(float));
  }
}
#endif

}  // namespace

const VectorKernels& portable_vector_kernels() {
  static const VectorKernels k{"portable", logits_portable, accumulate_portable, silu_mul_portable};
  return k;
}

const VectorKernels* avx2_vector_kernels() {
#ifdef KF_HAVE_AVX2_KERNELS
  static const VectorKernels k{"avx2", logits_avx2, accumulate_avx2, silu_mul_avx2};
  return avx2_kernels() ? &k : nullptr;  // the same CPU check as the matmul kernels
#else
  return nullptr;
#endif
}

const VectorKernels& best_vector_kernels() {
  const VectorKernels* avx2 = avx2_vector_kernels();
  return std::string(best_kernels().isa) == "avx2" && avx2 ? *avx2 : portable_vector_kernels();
}

}  // namespace kf::cpu

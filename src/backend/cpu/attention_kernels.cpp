#include "backend/cpu/attention_kernels.h"

#include <cstdlib>
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

void logits_portable(const float* q, const float* k, int n, int d, float scale, float* out) {
  for (int j = 0; j < n; ++j) out[j] = scale * dot8(q, k + static_cast<int64_t>(j) * d, d);
}

void accumulate_portable(float* acc, float rescale, const float* w, const float* v, int n, int d) {
  if (rescale != 1.f)
    for (int i = 0; i < d; ++i) acc[i] *= rescale;
  for (int j = 0; j < n; ++j) {
    const float* vj = v + static_cast<int64_t>(j) * d;
    for (int i = 0; i < d; ++i) acc[i] += w[j] * vj[i];
  }
}

// ---- AVX2 + FMA ------------------------------------------------------------------

#ifdef KF_HAVE_AVX2_KERNELS
#define KF_AVX2 __attribute__((target("avx2,fma")))

KF_AVX2 inline float hsum8(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// q . k_j over 8 lanes for four keys at a time, the tail of d in lane order.
KF_AVX2 void logits_avx2(const float* q, const float* k, int n, int d, float scale, float* out) {
  const int d8 = d / 8 * 8;
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const float* kj = k + static_cast<int64_t>(j) * d;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < d8; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + i), a0);
      a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + d + i), a1);
      a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + 2 * d + i), a2);
      a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + 3 * d + i), a3);
    }
    float s[4] = {hsum8(a0), hsum8(a1), hsum8(a2), hsum8(a3)};
    for (int t = 0; t < 4; ++t) {
      for (int i = d8; i < d; ++i) s[t] += q[i] * kj[static_cast<int64_t>(t) * d + i];
      out[j + t] = scale * s[t];
    }
  }
  for (; j < n; ++j) {
    const float* kj = k + static_cast<int64_t>(j) * d;
    __m256 a = _mm256_setzero_ps();
    for (int i = 0; i < d8; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(kj + i), a);
    float s = hsum8(a);
    for (int i = d8; i < d; ++i) s += q[i] * kj[i];
    out[j] = scale * s;
  }
}

// Slabs of 32 accumulators stay in registers while every key adds to them.
KF_AVX2 void accumulate_avx2(float* acc, float rescale, const float* w, const float* v, int n, int d) {
  const __m256 r = _mm256_set1_ps(rescale);
  const bool rescaled = rescale != 1.f;
  int i = 0;
  for (; i + 32 <= d; i += 32) {
    __m256 a[4];
    for (int t = 0; t < 4; ++t) {
      a[t] = _mm256_loadu_ps(acc + i + 8 * t);
      if (rescaled) a[t] = _mm256_mul_ps(a[t], r);
    }
    for (int j = 0; j < n; ++j) {
      const __m256 wj = _mm256_set1_ps(w[j]);
      const float* vj = v + static_cast<int64_t>(j) * d + i;
      for (int t = 0; t < 4; ++t) a[t] = _mm256_fmadd_ps(wj, _mm256_loadu_ps(vj + 8 * t), a[t]);
    }
    for (int t = 0; t < 4; ++t) _mm256_storeu_ps(acc + i + 8 * t, a[t]);
  }
  for (; i + 8 <= d; i += 8) {
    __m256 a = _mm256_loadu_ps(acc + i);
    if (rescaled) a = _mm256_mul_ps(a, r);
    for (int j = 0; j < n; ++j) a = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_loadu_ps(v + static_cast<int64_t>(j) * d + i), a);
    _mm256_storeu_ps(acc + i, a);
  }
  for (; i < d; ++i) {
    float a = rescaled ? acc[i] * rescale : acc[i];
    for (int j = 0; j < n; ++j) a += w[j] * v[static_cast<int64_t>(j) * d + i];
    acc[i] = a;
  }
}
#endif

}  // namespace

const AttnKernels& portable_attn_kernels() {
  static const AttnKernels k{"portable", logits_portable, accumulate_portable};
  return k;
}

const AttnKernels* avx2_attn_kernels() {
#ifdef KF_HAVE_AVX2_KERNELS
  static const AttnKernels k{"avx2", logits_avx2, accumulate_avx2};
  return avx2_kernels() ? &k : nullptr;  // the same CPU check as the matmul kernels
#else
  return nullptr;
#endif
}

const AttnKernels& best_attn_kernels() {
  const AttnKernels* avx2 = avx2_attn_kernels();
  return std::string(best_kernels().isa) == "avx2" && avx2 ? *avx2 : portable_attn_kernels();
}

}  // namespace kf::cpu

// Portable C++ level of the CPU matmul kernels (matmul_kernels.h): plain loops
// that any compiler and CPU run. Each block's dot is an exact integer sum; the
// float sums go block by block, left to right.
#include <algorithm>
#include <cmath>

#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/quant_blocks.h"

namespace kf::cpu {
namespace {

// Clamps first so that NaN or huge values never reach the integer conversion.
int8_t to_int8(float v) { return static_cast<int8_t>(std::fmin(127.f, std::fmax(-127.f, std::nearbyint(v)))); }

void quantize_q8_32(const float* x, int64_t k, int8_t* q, float* scale, int16_t* sums) {
  for (int64_t b = 0; b < k / kQ8Block32; ++b) {
    const float* xb = x + b * kQ8Block32;
    int8_t* qb = q + b * kQ8Block32;
    float amax = 0.f;
    for (int j = 0; j < kQ8Block32; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.f, id = amax != 0.f ? 127.f / amax : 0.f;
    int sum = 0;
    for (int j = 0; j < kQ8Block32; ++j) {
      qb[j] = to_int8(xb[j] * id);
      sum += qb[j];
    }
    scale[2 * b] = round_to_f16(d);
    scale[2 * b + 1] = round_to_f16(d * static_cast<float>(sum));
    sums[b] = static_cast<int16_t>(sum);
  }
}

void quantize_q8_256(const float* x, int64_t k, int8_t* q, float* scale, int16_t* sums) {
  for (int64_t b = 0; b < k / kQ8Block256; ++b) {
    const float* xb = x + b * kQ8Block256;
    int8_t* qb = q + b * kQ8Block256;
    float amax = 0.f, max = 0.f;  // the first element of largest magnitude, with its sign
    for (int j = 0; j < kQ8Block256; ++j)
      if (std::fabs(xb[j]) > amax) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    const float iscale = amax != 0.f ? -127.f / max : 0.f;
    for (int j = 0; j < kQ8Block256; ++j) qb[j] = to_int8(iscale * xb[j]);
    for (int g = 0; g < kQ8Block256 / 16; ++g) {
      int s = 0;
      for (int j = 0; j < 16; ++j) s += qb[16 * g + j];
      sums[b * 16 + g] = static_cast<int16_t>(s);
    }
    scale[b] = amax != 0.f ? 1.f / iscale : 0.f;
  }
}

// ---- one row of x . one row of w ----------------------------------------------

float dot_q8_0(const ActRows& x, int64_t r, const uint8_t* w) {
  const int64_t nb = x.k / kQ8Block32;
  const int8_t* xq = x.q + r * x.k;
  const float* xs = x.scale + r * 2 * nb;
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b, w += kQ8_0Bytes) {
    int isum = 0;
    for (int j = 0; j < 32; ++j) isum += static_cast<int8_t>(w[2 + j]) * xq[32 * b + j];
    sum += load_f16(w) * xs[2 * b] * static_cast<float>(isum);
  }
  return sum;
}

float dot_q4_0(const ActRows& x, int64_t r, const uint8_t* w) {
  const int64_t nb = x.k / kQ8Block32;
  const int8_t* xq = x.q + r * x.k;
  const float* xs = x.scale + r * 2 * nb;
  const int16_t* xsum = x.sums + r * nb;
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b, w += kQ4_0Bytes) {
    int isum = 0;
    for (int j = 0; j < 16; ++j)
      isum += (w[2 + j] & 0xF) * xq[32 * b + j] + (w[2 + j] >> 4) * xq[32 * b + 16 + j];
    sum += load_f16(w) * xs[2 * b] * static_cast<float>(isum - 8 * xsum[b]);
  }
  return sum;
}

float dot_q4_1(const ActRows& x, int64_t r, const uint8_t* w) {
  const int64_t nb = x.k / kQ8Block32;
  const int8_t* xq = x.q + r * x.k;
  const float* xs = x.scale + r * 2 * nb;
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b, w += kQ4_1Bytes) {
    int isum = 0;
    for (int j = 0; j < 16; ++j)
      isum += (w[4 + j] & 0xF) * xq[32 * b + j] + (w[4 + j] >> 4) * xq[32 * b + 16 + j];
    sum += load_f16(w) * xs[2 * b] * static_cast<float>(isum) + load_f16(w + 2) * xs[2 * b + 1];
  }
  return sum;
}

float dot_q4_k(const ActRows& x, int64_t r, const uint8_t* w) {
  const int64_t nb = x.k / kQ8Block256;
  const int8_t* xq = x.q + r * x.k;
  const float* xd = x.scale + r * nb;
  const int16_t* bsums = x.sums + r * (x.k / 16);
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b, w += kQ4_KBytes) {
    uint8_t sc[8], mn[8];
    q4k_scales_mins(w + 4, sc, mn);
    const uint8_t* qs = w + 16;
    const int8_t* xb = xq + b * kQ8Block256;
    int isum = 0, msum = 0;
    for (int j = 0; j < 8; ++j) {  // sub-block j: nibbles of qs[32*(j/2) ..], low for even j
      int s = 0;
      for (int l = 0; l < 32; ++l) {
        const uint8_t byte = qs[32 * (j / 2) + l];
        s += ((j % 2) ? (byte >> 4) : (byte & 0xF)) * xb[32 * j + l];
      }
      isum += sc[j] * s;
      msum += mn[j] * (bsums[b * 16 + 2 * j] + bsums[b * 16 + 2 * j + 1]);
    }
    sum += load_f16(w) * xd[b] * static_cast<float>(isum) - load_f16(w + 2) * xd[b] * static_cast<float>(msum);
  }
  return sum;
}

float dot_q6_k(const ActRows& x, int64_t r, const uint8_t* w) {
  const int64_t nb = x.k / kQ8Block256;
  const int8_t* xq = x.q + r * x.k;
  const float* xd = x.scale + r * nb;
  float sum = 0.f;
  for (int64_t b = 0; b < nb; ++b, w += kQ6_KBytes) {
    const uint8_t* ql = w;
    const uint8_t* qh = w + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(w + 192);
    const int8_t* xb = xq + b * kQ8Block256;
    int isum = 0;
    for (int h = 0; h < 2; ++h) {  // halves of 128; element l + 32k takes ql/qh bits as util/dequant.h says
      int group[8] = {};
      for (int l = 0; l < 32; ++l) {
        const int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        group[l / 16 + 0] += q1 * xb[l];
        group[l / 16 + 2] += q2 * xb[l + 32];
        group[l / 16 + 4] += q3 * xb[l + 64];
        group[l / 16 + 6] += q4 * xb[l + 96];
      }
      for (int g = 0; g < 8; ++g) isum += sc[g] * group[g];
      ql += 64;
      qh += 32;
      sc += 8;
      xb += 128;
    }
    sum += load_f16(w + 208) * xd[b] * static_cast<float>(isum);
  }
  return sum;
}

// Float weights: 8 lanes over k (lane l takes the indices = l mod 8), then a
// fixed pairwise sum.
template <typename Load>
float dot_float(const float* x, const uint8_t* w, int64_t k, Load load) {
  float lane[8] = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int j = 0; j < 8; ++j) lane[j] += x[i + j] * load(w, i + j);
  for (int j = 0; i < k; ++i, ++j) lane[j] += x[i] * load(w, i);
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

float dot_f32(const ActRows& x, int64_t r, const uint8_t* w) {
  return dot_float(x.f32 + r * x.k, w, x.k, [](const uint8_t* p, int64_t i) {
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
  });
}
float dot_f16(const ActRows& x, int64_t r, const uint8_t* w) {
  return dot_float(x.f32 + r * x.k, w, x.k, [](const uint8_t* p, int64_t i) { return load_f16(p + 2 * i); });
}
float dot_bf16(const ActRows& x, int64_t r, const uint8_t* w) {
  return dot_float(x.f32 + r * x.k, w, x.k, [](const uint8_t* p, int64_t i) { return bf16_to_f32(load_u16(p + 2 * i)); });
}

template <float (*Dot)(const ActRows&, int64_t, const uint8_t*)>
void tile(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0, int64_t c1, const float* bias,
          float* y, int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      float v = Dot(x, r, w.data + c * w.row_bytes);
      if (bias) v += bias[c];
      y[r * ldy + c] = v;
    }
}

}  // namespace

const MatmulKernels& portable_kernels() {
  static const MatmulKernels k = [] {
    MatmulKernels m;
    m.isa = "portable";
    m.quantize_q8_32 = quantize_q8_32;
    m.quantize_q8_256 = quantize_q8_256;
    m.f32 = tile<dot_f32>;
    m.f16 = tile<dot_f16>;
    m.bf16 = tile<dot_bf16>;
    m.q8_0 = tile<dot_q8_0>;
    m.q4_0 = tile<dot_q4_0>;
    m.q4_1 = tile<dot_q4_1>;
    m.q4_k = tile<dot_q4_k>;
    m.q6_k = tile<dot_q6_k>;
    return m;
  }();
  return k;
}

}  // namespace kf::cpu

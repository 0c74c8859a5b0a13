// The CPU matmul kernels for every weight format (F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q4_K, Q6_K) on random blocks and odd sizes:
// - against the dequantise-then-multiply reference (util/dequant.h) in double,
//   with the kernel's own quantised activations (tight) and with the F32
//   activations (the activation quantisation error only);
// - the AVX2 level against the portable level (same quantised activations,
//   results equal up to float summation order);
// - batch invariance through the backend: a row alone == the same row in any
//   batch, tile and thread count, bitwise;
// - embedding rows of a quantised table == the reference dequantisation;
// - the interleaved layouts (packed_weights.h): pack/unpack round trip, the
//   packed AVX2 kernels against the plain ones, and through the backend
//   (pack_weight) batch invariance and embedding rows.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/matmul_kernels.h"
#include "backend/cpu/packed_weights.h"
#include "util/dequant.h"

namespace kf {
namespace {

using cpu::ActFormat;
using cpu::ActRows;
using cpu::MatmulKernels;

constexpr DType kWeightTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0,
                                  DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K};

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// Random weights [out, k] of dtype t: random quantised values, scales of a
// realistic size (finite f16) so every block contributes.
std::vector<uint8_t> random_weights(DType t, int64_t out, int64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<uint8_t> w(dtype_bytes(t, out * k));
  if (t == DType::F32 || t == DType::F16 || t == DType::BF16) {
    for (int64_t i = 0; i < out * k; ++i) {
      const float v = 0.1f * u(rng);
      if (t == DType::F32) std::memcpy(&w[4 * i], &v, 4);
      else if (t == DType::F16) put_f16(&w[2 * i], v);
      else {
        const uint16_t b = f32_to_bf16(v);
        std::memcpy(&w[2 * i], &b, 2);
      }
    }
    return w;
  }
  for (uint8_t& b : w) b = static_cast<uint8_t>(rng());
  const size_t block = dtype_bytes(t, dtype_block(t));
  for (size_t off = 0; off < w.size(); off += block) {
    uint8_t* b = &w[off];
    switch (t) {
      case DType::Q8_0:
      case DType::Q4_0: put_f16(b, 0.01f * u(rng)); break;
      case DType::Q4_1:
        put_f16(b, 0.01f * std::fabs(u(rng)));
        put_f16(b + 2, 0.08f * u(rng));
        break;
      case DType::Q4_K:
        put_f16(b, 0.002f * std::fabs(u(rng)));
        put_f16(b + 2, 0.004f * std::fabs(u(rng)));
        break;
      case DType::Q6_K: put_f16(b + 208, 0.0005f * u(rng)); break;
      default: break;
    }
  }
  return w;
}

std::vector<float> randn(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// x [n, k] quantised by a kernel level for weights of dtype t, kept alive here.
struct Quantized {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int16_t> sums;
  ActRows rows;
  Quantized(const MatmulKernels& K, DType t, const std::vector<float>& x, int64_t n, int64_t k) {
    const ActFormat f = cpu::act_format(t);
    rows.k = k;
    if (f == ActFormat::F32) {
      rows.f32 = x.data();
      return;
    }
    const int64_t ns = cpu::act_scale_floats(f, k), nsum = cpu::act_sum_count(f, k);
    q.resize(n * k);
    scale.resize(n * ns);
    sums.resize(n * nsum);
    for (int64_t r = 0; r < n; ++r) K.quantize(f)(x.data() + r * k, k, q.data() + r * k, scale.data() + r * ns, sums.data() + r * nsum);
    rows.q = q.data();
    rows.scale = scale.data();
    rows.sums = sums.data();
  }
  // Row r of x as the kernels see it: d * q per block (x itself for F32 kernels).
  std::vector<double> dequantized(DType t, int64_t r) const {
    const int64_t k = rows.k;
    std::vector<double> v(k);
    const ActFormat f = cpu::act_format(t);
    for (int64_t i = 0; i < k; ++i) {
      if (f == ActFormat::F32) v[i] = rows.f32[r * k + i];
      else if (f == ActFormat::Q8_32) v[i] = double(scale[r * 2 * (k / 32) + 2 * (i / 32)]) * q[r * k + i];
      else v[i] = double(scale[r * (k / 256) + i / 256]) * q[r * k + i];
    }
    return v;
  }
};

std::vector<float> run_kernel(const MatmulKernels& K, DType t, const ActRows& x, int64_t n,
                              const std::vector<uint8_t>& w, int64_t out, const float* bias) {
  std::vector<float> y(n * out, NAN);
  const cpu::WeightRows wr{w.data(), dtype_bytes(t, x.k), x.k};
  K.tile(t)(x, 0, n, wr, 0, out, bias, y.data(), out);
  return y;
}

struct Shape {
  int64_t n, k, out;
};
std::vector<Shape> shapes_for(DType t) {
  const int64_t b = dtype_block(t) == 256 ? 256 : 32;
  const int64_t k0 = t == DType::F32 || t == DType::F16 || t == DType::BF16 ? 7 : b;  // odd k for float weights
  return {{1, k0, 1}, {1, 3 * b, 13}, {3, 2 * b, 5}, {5, 3 * b, 29}, {9, b, 8}, {2, k0 + 3 * b, 3}};
}

const MatmulKernels* levels[] = {&cpu::portable_kernels(), cpu::avx2_kernels()};

TEST(CpuMatmulKernels, MatchDequantizedReference) {
  for (const MatmulKernels* K : levels) {
    if (!K) continue;
    for (DType t : kWeightTypes) {
      for (const Shape& s : shapes_for(t)) {
        const auto w = random_weights(t, s.out, s.k, 7 + s.k);
        const auto x = randn(s.n * s.k, 11 + s.n);
        const auto bias = randn(s.out, 3);
        const Quantized xq(*K, t, x, s.n, s.k);
        const auto y = run_kernel(*K, t, xq.rows, s.n, w, s.out, bias.data());
        std::vector<float> wrow(s.k);
        for (int64_t c = 0; c < s.out; ++c) {
          dequantize(t, w.data() + c * dtype_bytes(t, s.k), wrow.data(), s.k);
          for (int64_t r = 0; r < s.n; ++r) {
            const std::vector<double> xr = xq.dequantized(t, r);
            double ref = bias[c], mag = std::fabs(bias[c]), ref_f32 = bias[c];
            for (int64_t i = 0; i < s.k; ++i) {
              ref += wrow[i] * xr[i];
              ref_f32 += double(wrow[i]) * x[r * s.k + i];
              mag += std::fabs(wrow[i] * xr[i]);
            }
            // Q4_1 adds the block minimum times Q8_1's s = d*Σq rounded to f16.
            const double tol = 2e-6 * mag + (t == DType::Q4_1 ? 1e-3 * mag : 0.0) + 1e-6;
            const float got = y[r * s.out + c];
            ASSERT_NEAR(got, ref, tol) << K->isa << " " << dtype_name(t) << " n=" << s.n << " k=" << s.k
                                       << " out=" << s.out << " r=" << r << " c=" << c;
            // Against F32 activations: only the activation rounding (<= d/2 per element) differs.
            ASSERT_NEAR(got, ref_f32, 0.02 * mag + 1e-5) << K->isa << " " << dtype_name(t) << " vs F32 activations";
          }
        }
      }
    }
  }
}

TEST(CpuMatmulKernels, Avx2MatchesPortable) {
  const MatmulKernels* avx2 = cpu::avx2_kernels();
  if (!avx2) GTEST_SKIP() << "this CPU has no AVX2/FMA/F16C";
  const MatmulKernels& port = cpu::portable_kernels();
  for (DType t : kWeightTypes) {
    for (const Shape& s : shapes_for(t)) {
      const auto w = random_weights(t, s.out, s.k, 5 + s.out);
      const auto x = randn(s.n * s.k, 17 + s.k);
      const Quantized qa(*avx2, t, x, s.n, s.k), qp(port, t, x, s.n, s.k);
      // The two quantisers agree bit for bit.
      EXPECT_EQ(qa.q, qp.q) << dtype_name(t);
      EXPECT_EQ(qa.scale, qp.scale) << dtype_name(t);
      EXPECT_EQ(qa.sums, qp.sums) << dtype_name(t);
      const auto ya = run_kernel(*avx2, t, qa.rows, s.n, w, s.out, nullptr);
      const auto yp = run_kernel(port, t, qp.rows, s.n, w, s.out, nullptr);
      for (int64_t i = 0; i < s.n * s.out; ++i)
        ASSERT_NEAR(ya[i], yp[i], 1e-5 * (std::fabs(yp[i]) + 1.0))
            << dtype_name(t) << " n=" << s.n << " k=" << s.k << " out=" << s.out << " at " << i;
    }
  }
}

TEST(CpuMatmulKernels, QuantizersHandleZeroAndExtremeRows) {
  for (const MatmulKernels* K : levels) {
    if (!K) continue;
    for (ActFormat f : {ActFormat::Q8_32, ActFormat::Q8_256}) {
      std::vector<float> x(256, 0.f);
      x[3] = -1e30f;
      x[200] = 5.f;
      std::vector<int8_t> q(256);
      std::vector<float> scale(cpu::act_scale_floats(f, 256));
      std::vector<int16_t> sums(cpu::act_sum_count(f, 256));
      K->quantize(f)(x.data(), 256, q.data(), scale.data(), sums.data());
      EXPECT_EQ(q[3], -127) << K->isa;  // the extreme value maps to -127 in both formats
      EXPECT_EQ(q[0], 0);
      std::fill(x.begin(), x.end(), 0.f);
      K->quantize(f)(x.data(), 256, q.data(), scale.data(), sums.data());
      for (float v : scale) EXPECT_EQ(v, 0.f) << K->isa;
      for (int8_t v : q) EXPECT_EQ(v, 0);
    }
  }
}

TEST(CpuMatmulKernels, BackendMatmulIsBatchInvariantForEveryFormat) {
  const int64_t kRows = 37, out = 45;
  for (DType t : kWeightTypes) {
    const int64_t k = dtype_block(t) == 256 ? 512 : (dtype_block(t) == 32 ? 96 : 67);
    auto w = random_weights(t, out, k, 21);
    const auto x = randn(kRows * k, 22);
    auto bias = randn(out, 23);
    const Tensor wt(w.data(), t, {out, k}), bt(bias.data(), DType::F32, {out});
    auto single = make_cpu_backend(CpuOptions{1, false});
    std::vector<float> alone(kRows * out);
    for (int64_t r = 0; r < kRows; ++r)
      single->matmul(Tensor(const_cast<float*>(x.data()) + r * k, DType::F32, {1, k}), wt, &bt,
                     Tensor(alone.data() + r * out, DType::F32, {1, out}));
    for (int threads : {1, 2, 3}) {
      auto be = make_cpu_backend(CpuOptions{threads, false});
      for (int64_t batch : {1, 2, 4, 5, 8, 13, 37}) {
        for (int64_t r0 = 0; r0 + batch <= kRows; r0 += batch) {
          std::vector<float> y(batch * out);
          be->matmul(Tensor(const_cast<float*>(x.data()) + r0 * k, DType::F32, {batch, k}), wt, &bt,
                     Tensor(y.data(), DType::F32, {batch, out}));
          ASSERT_EQ(0, std::memcmp(y.data(), alone.data() + r0 * out, y.size() * sizeof(float)))
              << dtype_name(t) << " batch " << batch << " at row " << r0 << " with " << threads << " threads";
        }
      }
    }
  }
}

TEST(CpuMatmulKernels, EmbedDequantizesRowsOfEveryFormat) {
  auto be = make_cpu_backend(CpuOptions{1, false});
  for (DType t : kWeightTypes) {
    const int64_t vocab = 6, d = dtype_block(t) == 256 ? 512 : 64;
    auto table = random_weights(t, vocab, d, 31);
    std::vector<int32_t> ids = {5, 0, 3, 3};
    std::vector<float> out(ids.size() * d), ref(d);
    be->embed(Tensor(table.data(), t, {vocab, d}), Tensor(ids.data(), DType::I32, {4}),
              Tensor(out.data(), DType::F32, {4, d}));
    for (size_t i = 0; i < ids.size(); ++i) {
      dequantize(t, table.data() + ids[i] * dtype_bytes(t, d), ref.data(), d);
      ASSERT_EQ(0, std::memcmp(ref.data(), out.data() + i * d, d * sizeof(float))) << dtype_name(t) << " row " << i;
    }
  }
}

TEST(CpuMatmulKernels, BackendTakesEveryWeightFormatAndRejectsOthers) {
  auto be = make_cpu_backend(CpuOptions{1, false});
  for (DType t : kWeightTypes) EXPECT_TRUE(be->takes_weight(t)) << dtype_name(t);
  EXPECT_FALSE(be->takes_weight(DType::I32));
  std::vector<int32_t> w(4);
  std::vector<float> x(2), y(2);
  EXPECT_THROW(be->matmul(Tensor(x.data(), DType::F32, {1, 2}), Tensor(w.data(), DType::I32, {2, 2}), nullptr,
                          Tensor(y.data(), DType::F32, {1, 2})),
               Error);
}

// ---- interleaved (packed) weights ------------------------------------------------

constexpr DType kPackable[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1};

// Random plain weights with no Q8_0 value of -128 (which can_pack refuses).
std::vector<uint8_t> packable_weights(DType t, int64_t out, int64_t k, uint32_t seed) {
  auto w = random_weights(t, out, k, seed);
  if (t == DType::Q8_0)
    for (size_t off = 0; off < w.size(); off += 34)
      for (int j = 2; j < 34; ++j)
        if (w[off + j] == 0x80) w[off + j] = 0x81;
  return w;
}

TEST(CpuPackedWeights, PackThenUnpackGivesEveryRowBack) {
  for (DType t : kPackable) {
    const int64_t rows = 12, k = 96;
    const auto w = packable_weights(t, rows, k, 41);
    ASSERT_TRUE(cpu::can_pack(t, rows, k, w.data())) << dtype_name(t);
    EXPECT_FALSE(cpu::can_pack(t, rows - 1, k, w.data())) << dtype_name(t);  // not whole groups of 4 rows
    std::vector<uint8_t> packed(w.size()), row(dtype_bytes(t, k));
    cpu::pack_rows(t, rows, k, w.data(), packed.data());
    EXPECT_NE(packed, w) << dtype_name(t);
    for (int64_t r = 0; r < rows; ++r) {
      cpu::unpack_row(cpu::packed_dtype(t), k, packed.data(), r, row.data());
      ASSERT_EQ(0, std::memcmp(row.data(), w.data() + r * row.size(), row.size())) << dtype_name(t) << " row " << r;
    }
  }
  auto w = packable_weights(DType::Q8_0, 4, 32, 42);
  w[34 + 5] = 0x80;  // a -128 in row 1
  EXPECT_FALSE(cpu::can_pack(DType::Q8_0, 4, 32, w.data()));
  EXPECT_FALSE(cpu::can_pack(DType::Q4_K, 4, 256, w.data()));  // no interleaved layout
}

TEST(CpuPackedWeights, PackedKernelsMatchPlainKernels) {
  const MatmulKernels* avx2 = cpu::avx2_kernels();
  if (!avx2) GTEST_SKIP() << "this CPU has no AVX2/FMA/F16C";
  for (DType t : kPackable) {
    const DType pt = cpu::packed_dtype(t);
    for (const Shape& s : {Shape{1, 32, 4}, Shape{3, 64, 8}, Shape{5, 96, 28}, Shape{9, 32, 12}, Shape{4, 128, 24}}) {
      const auto w = packable_weights(t, s.out, s.k, 9 + s.out);
      std::vector<uint8_t> packed(w.size());
      cpu::pack_rows(t, s.out, s.k, w.data(), packed.data());
      const auto x = randn(s.n * s.k, 13 + s.k);
      const auto bias = randn(s.out, 4);
      Quantized xq(*avx2, t, x, s.n, s.k);
      std::vector<int8_t> pieces(s.n * 4 * s.k);
      for (int64_t r = 0; r < s.n; ++r) avx2->spread(xq.q.data() + r * s.k, s.k, pieces.data() + r * 4 * s.k);
      ActRows rows = xq.rows;
      rows.pieces = pieces.data();
      const auto yp = run_kernel(*avx2, pt, rows, s.n, packed, s.out, bias.data());
      const auto y = run_kernel(*avx2, t, xq.rows, s.n, w, s.out, bias.data());
      for (int64_t i = 0; i < s.n * s.out; ++i)
        ASSERT_NEAR(yp[i], y[i], 1e-5 * (std::fabs(y[i]) + 1.0))
            << dtype_name(pt) << " n=" << s.n << " k=" << s.k << " out=" << s.out << " at " << i;
      // A column range starting inside the matrix (a thread's share) writes only its columns.
      std::vector<float> part(s.n * s.out, NAN);
      avx2->tile(pt)(rows, 0, s.n, cpu::WeightRows{packed.data(), dtype_bytes(t, s.k), s.k}, 4, s.out - 1, nullptr,
                     part.data(), s.out);
      for (int64_t r = 0; r < s.n; ++r)
        for (int64_t c = 0; c < s.out; ++c) {
          const float got = part[r * s.out + c];
          if (c < 4 || c >= s.out - 1) EXPECT_TRUE(std::isnan(got)) << dtype_name(pt) << " wrote column " << c;
          else ASSERT_NEAR(got, y[r * s.out + c] - bias[c], 1e-5 * (std::fabs(y[r * s.out + c]) + 1.0));
        }
    }
  }
}

TEST(CpuPackedWeights, BackendPacksAndStaysBatchInvariant) {
  const int64_t kRows = 21, out = 44, k = 96;
  for (DType t : kPackable) {
    auto single = make_cpu_backend(CpuOptions{1, false});
    Buffer w(t, {out, k}, *single);
    const auto host = packable_weights(t, out, k, 51);
    std::memcpy(w.view().data, host.data(), host.size());
    const Buffer plain_w = [&] {
      Buffer b(t, {out, k}, *single);
      std::memcpy(b.view().data, host.data(), host.size());
      return b;
    }();
    Buffer pw = single->pack_weight(std::move(w));
    if (!cpu::has_matmul_kernel(cpu::packed_dtype(t))) {  // the portable level keeps plain weights
      EXPECT_EQ(pw.view().dtype, t);
      continue;
    }
    ASSERT_EQ(pw.view().dtype, cpu::packed_dtype(t)) << dtype_name(t);
    const auto x = randn(kRows * k, 52);
    std::vector<float> alone(kRows * out), plain(kRows * out);
    single->matmul(Tensor(const_cast<float*>(x.data()), DType::F32, {kRows, k}), plain_w, nullptr,
                   Tensor(plain.data(), DType::F32, {kRows, out}));
    for (int64_t r = 0; r < kRows; ++r)
      single->matmul(Tensor(const_cast<float*>(x.data()) + r * k, DType::F32, {1, k}), pw, nullptr,
                     Tensor(alone.data() + r * out, DType::F32, {1, out}));
    for (int64_t i = 0; i < kRows * out; ++i) ASSERT_NEAR(alone[i], plain[i], 1e-5 * (std::fabs(plain[i]) + 1.0));
    for (int threads : {1, 2, 3}) {
      auto be = make_cpu_backend(CpuOptions{threads, false});
      for (int64_t batch : {2, 5, 8, 21}) {
        for (int64_t r0 = 0; r0 + batch <= kRows; r0 += batch) {
          std::vector<float> y(batch * out);
          be->matmul(Tensor(const_cast<float*>(x.data()) + r0 * k, DType::F32, {batch, k}), pw, nullptr,
                     Tensor(y.data(), DType::F32, {batch, out}));
          ASSERT_EQ(0, std::memcmp(y.data(), alone.data() + r0 * out, y.size() * sizeof(float)))
              << dtype_name(pw.view().dtype) << " batch " << batch << " at row " << r0 << " with " << threads
              << " threads";
        }
      }
    }
    // A packed table embeds the same rows as the plain one.
    std::vector<int32_t> ids = {43, 0, 5, 5, 17};
    std::vector<float> e(ids.size() * k), ep(ids.size() * k);
    const Tensor idt(ids.data(), DType::I32, {int64_t(ids.size())});
    single->embed(plain_w, idt, Tensor(e.data(), DType::F32, {int64_t(ids.size()), k}));
    single->embed(pw, idt, Tensor(ep.data(), DType::F32, {int64_t(ids.size()), k}));
    EXPECT_EQ(0, std::memcmp(e.data(), ep.data(), e.size() * sizeof(float))) << dtype_name(t);
  }
}

}  // namespace
}  // namespace kf

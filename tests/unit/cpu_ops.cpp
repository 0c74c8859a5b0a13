// CPU backend ops vs naive double-precision references, the batch-invariance
// property of matmul (a row alone == the same row inside any batch, any
// thread count, bitwise), and the thread pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/vector_kernels.h"
#include "util/thread_pool.h"

namespace kf {
namespace {

std::vector<float> randn(int64_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Tensor view(std::vector<float>& v, std::initializer_list<int64_t> dims) {
  return Tensor(v.data(), DType::F32, dims);
}
Tensor view(std::vector<int32_t>& v, std::initializer_list<int64_t> dims) {
  return Tensor(v.data(), DType::I32, dims);
}

std::unique_ptr<Backend> cpu(int threads) {
  CpuOptions o;
  o.n_threads = threads;
  return make_cpu_backend(o);
}

// token_logprobs: the target's log-softmax and the top k in (value desc, id
// asc) order, against a brute force; sampled targets (-j-1); ties; k = 0; a
// vocabulary smaller than k.
TEST(CpuOps, TokenLogprobsMatchBruteForce) {
  auto be = cpu(1);
  const int64_t rows = 3, vocab = 50;
  std::vector<float> logits = randn(rows * vocab, 11, 2.f);
  logits[1 * vocab + 7] = logits[1 * vocab + 30] = 9.f;  // a tie at the top: 7 before 30
  std::vector<int32_t> row = {0, 1, 2, 1}, target = {5, -2, 49, 30}, sampled = {3, 12};
  for (int k : {0, 1, 5, 20}) {
    std::vector<float> values((k + 1) * 4, NAN);
    std::vector<int32_t> ids((k + 1) * 4, -7);
    be->token_logprobs(view(logits, {rows, vocab}), view(row, {4}), view(target, {4}), view(sampled, {2}), k,
                       view(values, {4, k + 1}), view(ids, {4, k + 1}));
    for (int e = 0; e < 4; ++e) {
      const float* l = logits.data() + row[e] * vocab;
      double mx = -INFINITY, sum = 0;
      for (int v = 0; v < vocab; ++v) mx = std::max(mx, double(l[v]));
      for (int v = 0; v < vocab; ++v) sum += std::exp(l[v] - mx);
      const double lse = mx + std::log(sum);
      const int t = target[e] >= 0 ? target[e] : sampled[-target[e] - 1];
      EXPECT_EQ(ids[e * (k + 1)], t);
      EXPECT_NEAR(values[e * (k + 1)], l[t] - lse, 1e-5);
      std::vector<int> order(vocab);
      for (int v = 0; v < vocab; ++v) order[v] = v;
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
      for (int j = 0; j < k; ++j) {
        EXPECT_EQ(ids[e * (k + 1) + 1 + j], order[j]) << "entry " << e << " rank " << j << " k " << k;
        EXPECT_NEAR(values[e * (k + 1) + 1 + j], l[order[j]] - lse, 1e-5);
      }
    }
  }
  // Fewer tokens than k: the rest is -inf / -1.
  std::vector<float> small = {0.f, 1.f};
  std::vector<int32_t> r0 = {0}, t0 = {0};
  std::vector<float> values(4);
  std::vector<int32_t> ids(4);
  be->token_logprobs(view(small, {1, 2}), view(r0, {1}), view(t0, {1}), view(t0, {1}), 3, view(values, {1, 4}),
                     view(ids, {1, 4}));
  EXPECT_EQ(ids[1], 1);
  EXPECT_EQ(ids[2], 0);
  EXPECT_EQ(ids[3], -1);
  EXPECT_TRUE(std::isinf(values[3]));
  EXPECT_NEAR(values[1] - values[2], 1.f, 1e-6);
}

TEST(CpuOps, MatmulMatchesDoubleReference) {
  auto be = cpu(2);
  const int64_t shapes[][3] = {{1, 1, 1}, {1, 7, 5}, {3, 64, 4}, {5, 67, 13}, {17, 96, 33}, {40, 129, 70}};
  for (auto& s : shapes) {
    const int64_t n = s[0], in = s[1], out = s[2];
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      auto x = randn(n * in, 1 + in), w = randn(out * in, 2 + out), b = randn(out, 3);
      std::vector<float> y(n * out, NAN);
      Tensor bt = view(b, {out});
      be->matmul(view(x, {n, in}), view(w, {out, in}), with_bias ? &bt : nullptr, view(y, {n, out}));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < out; ++c) {
          double ref = with_bias ? b[c] : 0.0, mag = std::fabs(ref);
          for (int64_t k = 0; k < in; ++k) {
            ref += double(x[r * in + k]) * w[c * in + k];
            mag += std::fabs(double(x[r * in + k]) * w[c * in + k]);
          }
          ASSERT_NEAR(y[r * out + c], ref, 1e-6 * mag + 1e-6)
              << "n=" << n << " in=" << in << " out=" << out << " r=" << r << " c=" << c;
        }
    }
  }
}

TEST(CpuOps, MatmulIsBatchInvariantBitwise) {
  // Rows computed one at a time on one thread are the reference; every batch
  // size 1..37 at every offset, with 1..3 threads, must reproduce them exactly.
  const int64_t kRows = 37;
  for (int64_t in : {64, 67, 576}) {
    const int64_t out = 45;
    auto x = randn(kRows * in, 11, 2.f), w = randn(out * in, 12, 0.1f), b = randn(out, 13);
    Tensor wt = view(w, {out, in}), bt = view(b, {out});
    auto single = cpu(1);
    std::vector<float> alone(kRows * out);
    for (int64_t r = 0; r < kRows; ++r) {
      Tensor xr(x.data() + r * in, DType::F32, {1, in});
      Tensor yr(alone.data() + r * out, DType::F32, {1, out});
      single->matmul(xr, wt, &bt, yr);
    }
    for (int threads = 1; threads <= 3; ++threads) {
      auto be = cpu(threads);
      for (int64_t batch = 1; batch <= kRows; ++batch) {
        for (int64_t r0 = 0; r0 + batch <= kRows; r0 += std::max<int64_t>(1, batch / 2)) {
          std::vector<float> y(batch * out);
          Tensor xb(x.data() + r0 * in, DType::F32, {batch, in});
          be->matmul(xb, wt, &bt, view(y, {batch, out}));
          ASSERT_EQ(0, std::memcmp(y.data(), alone.data() + r0 * out, y.size() * sizeof(float)))
              << "in=" << in << " threads=" << threads << " batch=" << batch << " r0=" << r0;
        }
      }
    }
  }
}

TEST(CpuOps, BlasPathAgreesWithinRounding) {
  CpuOptions o;
  o.use_blas = true;
  auto blas = make_cpu_backend(o);
  auto ref = cpu(2);
  const int64_t n = 9, in = 100, out = 31;
  auto x = randn(n * in, 5), w = randn(out * in, 6), b = randn(out, 7);
  std::vector<float> y1(n * out), y2(n * out);
  Tensor bt = view(b, {out});
  blas->matmul(view(x, {n, in}), view(w, {out, in}), &bt, view(y1, {n, out}));
  ref->matmul(view(x, {n, in}), view(w, {out, in}), &bt, view(y2, {n, out}));
  for (size_t i = 0; i < y1.size(); ++i) ASSERT_NEAR(y1[i], y2[i], 1e-4) << i;
  EXPECT_NE(blas->name().find("OpenBLAS"), std::string::npos);
}

TEST(CpuOps, RmsnormMatchesReferenceAndMayAlias) {
  auto be = cpu(2);
  const int64_t rows = 300, d = 77;  // enough rows to be threaded
  const float eps = 1e-5f;
  auto x = randn(rows * d, 21, 3.f), w = randn(d, 22);
  std::vector<float> y(rows * d);
  be->rmsnorm(view(x, {rows, d}), view(w, {d}), eps, view(y, {rows, d}));
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += double(x[r * d + i]) * x[r * d + i];
    const double inv = 1.0 / std::sqrt(ss / d + eps);
    for (int64_t i = 0; i < d; ++i) ASSERT_NEAR(y[r * d + i], x[r * d + i] * inv * w[i], 1e-5);
  }
  std::vector<float> inplace = x;
  be->rmsnorm(view(inplace, {rows, d}), view(w, {d}), eps, view(inplace, {rows, d}));
  EXPECT_EQ(0, std::memcmp(inplace.data(), y.data(), y.size() * sizeof(float)));
}

TEST(CpuOps, RopeRotateHalfMatchesReference) {
  auto be = cpu(2);
  const int64_t n = 40, heads = 3, hd = 16;
  std::vector<float> inv(hd / 2);
  for (int64_t i = 0; i < hd / 2; ++i) inv[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / hd));
  auto x = randn(n * heads * hd, 31);
  std::vector<int32_t> pos(n);
  for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>((i * 7) % 53);
  std::vector<float> y = x;
  RopeParams p;
  p.inv_freq = inv.data();
  be->rope(view(y, {n, heads, hd}), view(pos, {n}), p);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd; ++i) {
        // out = x * cos(emb) + rotate_half(x) * sin(emb), emb = cat(freqs, freqs)
        const float* v = x.data() + (r * heads + h) * hd;
        const int64_t f = i % (hd / 2);
        const double ang = double(pos[r]) * inv[f];
        const double rot = i < hd / 2 ? -v[i + hd / 2] : v[i - hd / 2];
        const double ref = v[i] * std::cos(ang) + rot * std::sin(ang);
        ASSERT_NEAR(y[(r * heads + h) * hd + i], ref, 2e-5) << r << " " << h << " " << i;
      }
}

TEST(CpuOps, SiluMulEmbedAdd) {
  auto be = cpu(2);
  const int64_t n = 5000;
  auto g = randn(n, 41, 4.f), u = randn(n, 42);
  std::vector<float> o(n), gu(2 * n);
  const int64_t rows = 5, f = n / rows;  // merged rows: gate | up
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < f; ++c) {
      gu[r * 2 * f + c] = g[r * f + c];
      gu[r * 2 * f + f + c] = u[r * f + c];
    }
  be->silu_mul(view(gu, {rows, 2 * f}), view(o, {rows, f}));
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(o[i], g[i] / (1.0 + std::exp(-double(g[i]))) * u[i], 1e-5 * (1 + std::fabs(o[i])));

  const int64_t vocab = 10, d = 6;
  auto table = randn(vocab * d, 43);
  std::vector<int32_t> ids = {3, 0, 9, 3};
  std::vector<float> e(ids.size() * d);
  be->embed(view(table, {vocab, d}), view(ids, {4}), view(e, {4, d}));
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t j = 0; j < d; ++j) ASSERT_EQ(e[i * d + j], table[ids[i] * d + j]);
  std::vector<int32_t> bad = {10};
  std::vector<float> e1(d);
  EXPECT_THROW(be->embed(view(table, {vocab, d}), view(bad, {1}), view(e1, {1, d})), Error);

  std::vector<float> a = {1, 2, 3}, b = {0.5f, -2, 10};
  be->add(view(a, {3}), view(b, {3}));
  EXPECT_EQ(a, (std::vector<float>{1.5f, 0, 13}));
}

TEST(CpuOps, BadShapesThrow) {
  auto be = cpu(1);
  std::vector<float> x(12), w(12), y(12);
  EXPECT_THROW(be->matmul(view(x, {3, 4}), view(w, {4, 3}), nullptr, view(y, {3, 4})), Error);
  EXPECT_THROW(be->rmsnorm(view(x, {3, 4}), view(w, {5}), 1e-6f, view(y, {3, 4})), Error);
  std::vector<int32_t> ids = {0};
  EXPECT_THROW(be->matmul(view(ids, {1, 1}), view(w, {1, 1}), nullptr, view(y, {1, 1})), Error);
}

// The composite ops of a layer's second half against a double-precision
// brute force: matmul_add_rmsnorm (y = in w^T, x += y, out = rmsnorm(x) *
// norm_w; without norm_w only the add) and mlp (the same after
// silu(gate) * up), and their shape errors.
TEST(CpuOps, ProjectionAndMlpAddTheResidualThenNorm) {
  auto be = cpu(2);
  const int64_t n = 3, k = 24, d = 16, f = 20;
  const float eps = 1e-6f;
  auto in = randn(n * k, 51), w = randn(d * k, 52, 0.2f), x0 = randn(n * d, 53), nw = randn(d, 54);
  auto wgu = randn(2 * f * d, 55, 0.25f), wd = randn(d * f, 56, 0.2f), h = randn(n * d, 57);
  // y [n, d] -> the residual after the add and the normed output, in double
  auto reference = [&](const std::vector<double>& y, bool norm, std::vector<double>& x, std::vector<double>& out) {
    x.assign(x0.begin(), x0.end());
    out.assign(n * d, 0.0);
    for (int64_t r = 0; r < n; ++r) {
      double ss = 0;
      for (int64_t c = 0; c < d; ++c) x[r * d + c] += y[r * d + c], ss += x[r * d + c] * x[r * d + c];
      const double inv = 1.0 / std::sqrt(ss / d + eps);
      for (int64_t c = 0; c < d; ++c) out[r * d + c] = norm ? x[r * d + c] * inv * nw[c] : y[r * d + c];
    }
  };
  auto expect_near = [](const std::vector<float>& got, const std::vector<double>& want, const char* what) {
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-4 * (1 + std::fabs(want[i]))) << what << " [" << i << "]";
  };
  std::vector<double> y(n * d), xr, outr;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c) {
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += double(in[r * k + j]) * w[c * k + j];
      y[r * d + c] = acc;
    }
  for (bool norm : {true, false}) {
    std::vector<float> x = x0, out(n * d);
    const Tensor nt = view(nw, {d});
    be->matmul_add_rmsnorm(view(in, {n, k}), view(w, {d, k}), view(x, {n, d}), norm ? &nt : nullptr, eps,
                           view(out, {n, d}));
    reference(y, norm, xr, outr);
    expect_near(x, xr, "projection residual");
    expect_near(out, outr, "projection out");
  }
  // The MLP: y = (silu(h wg^T) * h wu^T) wd^T.
  std::vector<double> ffn(n * f);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < f; ++c) {
      double g = 0, u = 0;
      for (int64_t j = 0; j < d; ++j) {
        g += double(h[r * d + j]) * wgu[c * d + j];
        u += double(h[r * d + j]) * wgu[(f + c) * d + j];
      }
      ffn[r * f + c] = g / (1 + std::exp(-g)) * u;
    }
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c) {
      double acc = 0;
      for (int64_t j = 0; j < f; ++j) acc += ffn[r * f + j] * wd[c * f + j];
      y[r * d + c] = acc;
    }
  for (bool norm : {true, false}) {
    std::vector<float> x = x0, hh = h, gu(n * 2 * f), ff(n * f);
    const Tensor nt = view(nw, {d});
    be->mlp(view(hh, {n, d}), view(wgu, {2 * f, d}), view(wd, {d, f}), view(gu, {n, 2 * f}), view(ff, {n, f}),
            view(x, {n, d}), norm ? &nt : nullptr, eps, view(hh, {n, d}));  // out aliasing h, as the model does
    reference(y, norm, xr, outr);
    expect_near(x, xr, "mlp residual");
    expect_near(hh, outr, "mlp out");
  }
  // Shape errors name the op.
  std::vector<float> x = x0, out(n * d), small(d - 1), gu(n * 2 * f), ff(n * f);
  const Tensor bad_norm = view(small, {d - 1});
  auto throws = [](const std::function<void()>& f, const std::string& text) {
    try {
      f();
      ADD_FAILURE() << "no error; expected one naming " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  auto project = [&](const Tensor& wt, const Tensor* norm, const Tensor& o) {
    be->matmul_add_rmsnorm(view(in, {n, k}), wt, view(x, {n, d}), norm, eps, o);
  };
  throws([&] { project(view(w, {d, k}), &bad_norm, view(out, {n, d})); }, "matmul_add_rmsnorm: norm weight");
  throws([&] { project(view(w, {d, k}), nullptr, view(x, {n, d})); }, "apart");
  throws([&] { project(view(w, {k, d}), nullptr, view(out, {n, d})); }, "does not fit w");
  throws([&] {
    be->mlp(view(h, {n, d}), view(wgu, {2 * f, d}), view(wd, {d, f}), view(gu, {n, 2 * f}), view(ff, {n, f}),
            view(x, {n - 1, d}), nullptr, eps, view(out, {n, d}));
  }, "mlp: x");
}

TEST(ThreadPool, CoversEveryIndexOnceAndPropagatesErrors) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.size(), 3);
  for (int64_t n : {1, 2, 3, 10, 1001}) {
    for (int rep = 0; rep < 50; ++rep) {
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[i]++;
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << i;
    }
  }
  EXPECT_THROW(pool.parallel_for(100,
                                 [](int64_t b, int64_t) {
                                   if (b > 0) fail("boom at {}", b);
                                 }),
               Error);
  // Still usable afterwards, and nested calls run serially instead of deadlocking.
  std::atomic<int64_t> total{0};
  pool.parallel_for(4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) { total += e2 - b2; });
  });
  EXPECT_EQ(total.load(), 40);
}

}  // namespace
}  // namespace kf

namespace kf {
namespace {

// The vectorised SiLU (its own exp) against std::exp, over the whole useful
// range and at the clamps, with a length that leaves a tail.
TEST(CpuOps, SiluMulKernelsMatchStdExp) {
  std::vector<float> g, u;
  for (float x = -100.f; x <= 100.f; x += 0.37f) g.push_back(x);
  for (float x : {-1e30f, -88.5f, 0.f, 1e-30f, 88.5f, 1e30f}) g.push_back(x);
  for (size_t i = 0; i < g.size(); ++i) u.push_back(1.f + 0.01f * static_cast<float>(i % 7));
  const int64_t n = static_cast<int64_t>(g.size());
  for (const cpu::VectorKernels* k : {&cpu::portable_vector_kernels(), cpu::avx2_vector_kernels()}) {
    if (!k) continue;
    std::vector<float> out(n);
    k->silu_mul(g.data(), u.data(), out.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double ref = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
      // exp's argument is clamped to [-87, 88]: below -88, silu(g) = g / (1 + e^88) instead of ~0.
      ASSERT_NEAR(out[i], ref, 1e-6 * std::fabs(ref) + 1e-37 * std::fabs(g[i]) * u[i]) << k->isa << " at g = " << g[i];
    }
  }
}

}  // namespace
}  // namespace kf

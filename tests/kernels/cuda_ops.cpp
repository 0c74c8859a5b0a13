// CUDA backend elementwise ops, GEMM and KV cache writes against brute-force
// fp64 definitions and the CPU KV reference (cpu_kv_write / cpu_kv_copy_pages),
// on random bf16-exact inputs.
#include <cmath>
#include <numeric>

#include "attn/summary.h"
#include "backend/cpu/attention.h"
#include "backend/cuda/gemm_cutlass.h"
#include "kernels/cuda_test_util.h"

namespace kf {
namespace {

using test::dev_bf16;
using test::dev_i32;
using test::host_bf16;
using test::rand_bf16;
using test::rel_l2;

struct CudaOps : ::testing::Test {
  void SetUp() override {
    KF_REQUIRE_CUDA();
    be = make_cuda_backend(0);
  }
  std::unique_ptr<Backend> be;
  std::mt19937 rng{1234};
};

TEST_F(CudaOps, Embed) {
  for (int d : {72, 70}) {
    const int vocab = 100, n = 9;
    auto table = rand_bf16(vocab * d, rng);
    std::vector<int32_t> ids(n);
    for (int& i : ids) i = static_cast<int>(rng() % vocab);
    Buffer t = dev_bf16(*be, table, {vocab, d}), id = dev_i32(*be, ids, {n});
    Buffer out(DType::BF16, {n, d}, *be);
    test::poison(*be, out);
    be->embed(t, id, out);
    auto got = host_bf16(*be, out);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < d; ++j) ASSERT_EQ(got[i * d + j], table[ids[i] * d + j]) << "row " << i;
  }
}

// Row r of the fp64 product x · wᵀ (+ bias): x [*, in], w [out, in].
std::vector<float> matmul_ref_row(const std::vector<float>& x, const std::vector<float>& w, const float* bias,
                                  int in, int out, int r) {
  std::vector<float> row(out);
  for (int o = 0; o < out; ++o) {
    double acc = bias ? bias[o] : 0.0;
    for (int k = 0; k < in; ++k) acc += double(x[size_t(r) * in + k]) * w[size_t(o) * in + k];
    row[o] = float(acc);
  }
  return row;
}

// A matmul's output on the host as floats (bf16 or f32).
std::vector<float> host_floats(Backend& g, const Buffer& y) {
  if (y.view().dtype == DType::BF16) return host_bf16(g, y);
  std::vector<float> out(y.view().numel());
  g.download(out.data(), y);
  return out;
}

// Decode and prefill batch sizes, odd shapes, bias, f32 output (the LM head).
TEST_F(CudaOps, Matmul) {
  struct Shape {
    int n, in, out;
    bool bias, f32 = false;
  };
  for (Shape s : {Shape{1, 64, 96, false}, Shape{7, 576, 1536, true}, Shape{33, 1024, 3072, false},
                  Shape{64, 1024, 2048, true}, Shape{3, 136, 40, true}, Shape{65, 1024, 1024, false},
                  Shape{1, 1024, 1024, false}, Shape{17, 2048, 1024, true}, Shape{32, 3072, 6144, false},
                  Shape{16, 128, 8, true}, Shape{48, 512, 16896, false}, Shape{5, 256, 32768, false, true},
                  Shape{64, 384, 200, false, true}, Shape{9, 384, 6144, true}}) {
    auto x = rand_bf16(size_t(s.n) * s.in, rng), w = rand_bf16(size_t(s.out) * s.in, rng);
    auto bias = rand_bf16(s.out, rng);
    Buffer dx = dev_bf16(*be, x, {s.n, s.in}), dw = dev_bf16(*be, w, {s.out, s.in});
    Buffer db = dev_bf16(*be, bias, {s.out});
    Buffer dy(s.f32 ? DType::F32 : DType::BF16, {s.n, s.out}, *be);
    test::poison(*be, dy);
    be->matmul(dx, dw, s.bias ? &db.view() : nullptr, dy);
    std::vector<float> ref;
    for (int i = 0; i < s.n; ++i) {
      const std::vector<float> row = matmul_ref_row(x, w, s.bias ? bias.data() : nullptr, s.in, s.out, i);
      ref.insert(ref.end(), row.begin(), row.end());
    }
    const std::vector<float> got = host_floats(*be, dy);
    EXPECT_LT(rel_l2(got, ref), s.f32 ? 1e-5 : 6e-3) << s.n << "x" << s.in << "x" << s.out;
  }
}

// Decode-sized GEMMs run CUTLASS's kernel (gemm_cutlass.h) where built:
// against a backend whose GEMMs are all cuBLASLt's (KINFER_GEMM_CUTLASS=0) and
// the fp64 product, on Qwen3-0.6B and -8B projection shapes; the shapes it
// does not take (more rows, a bias, an f32 output, K not a multiple of 8) give
// cuBLASLt's result bit for bit; a graph replay equals the direct launch.
TEST_F(CudaOps, MatmulCutlassMatchesCublasLt) {
  if (!cuda::cutlass_gemm_built()) GTEST_SKIP() << "built without CUTLASS: every GEMM is cuBLASLt's";
  std::unique_ptr<Backend> lt = test::cuda_backend_with("KINFER_GEMM_CUTLASS", "0");
  struct Shape {
    int n, in, out;
    bool bias = false, f32 = false;
  };
  for (Shape s : {Shape{1, 1024, 4096}, Shape{7, 2048, 1024}, Shape{32, 1024, 6144}, Shape{32, 3072, 1024},
                  Shape{33, 1024, 4096}, Shape{64, 1024, 4096}, Shape{32, 4096, 6144}, Shape{16, 12288, 4096},
                  Shape{32, 1024, 151936}, Shape{65, 1024, 1024}, Shape{32, 1024, 1024, true},
                  Shape{32, 1024, 1024, false, true}, Shape{32, 1020, 1024}}) {
    SCOPED_TRACE(::testing::Message() << s.n << " rows x [" << s.out << ", " << s.in << "]"
                                      << (s.bias ? " bias" : "") << (s.f32 ? " f32" : ""));
    const bool cutlass = s.n <= cuda::kCutlassMaxRows && !s.bias && !s.f32 && s.in % 8 == 0 && s.out % 8 == 0;
    auto x = rand_bf16(size_t(s.n) * s.in, rng), w = rand_bf16(size_t(s.out) * s.in, rng, -0.05f, 0.05f);
    auto bias = rand_bf16(s.out, rng);
    std::vector<float> got[2];
    Backend* gpus[2] = {be.get(), lt.get()};
    for (int i = 0; i < 2; ++i) {
      Backend& g = *gpus[i];
      Buffer dx = dev_bf16(g, x, {s.n, s.in}), dw = dev_bf16(g, w, {s.out, s.in}), db = dev_bf16(g, bias, {s.out});
      Buffer dy(s.f32 ? DType::F32 : DType::BF16, {s.n, s.out}, g);
      test::poison(g, dy);
      g.matmul(dx, dw, s.bias ? &db.view() : nullptr, dy);
      got[i] = host_floats(g, dy);
      if (i == 0 && cutlass) {  // a graph replay of the CUTLASS launch (programmatic) = the direct one
        std::unique_ptr<Graph> graph = g.record([&] { g.matmul(dx, dw, nullptr, dy); });
        test::poison(g, dy);
        g.replay(*graph);
        EXPECT_EQ(host_bf16(g, dy), got[0]) << "graph replay";
      }
    }
    std::vector<float> rows, ref_rows;  // a few rows: the LM head's product is large
    for (int r = 0; r < s.n; r += std::max(1, s.n / 4)) {
      const std::vector<float> ref = matmul_ref_row(x, w, s.bias ? bias.data() : nullptr, s.in, s.out, r);
      ref_rows.insert(ref_rows.end(), ref.begin(), ref.end());
      rows.insert(rows.end(), got[0].begin() + size_t(r) * s.out, got[0].begin() + size_t(r + 1) * s.out);
    }
    EXPECT_LT(rel_l2(rows, ref_rows), s.f32 ? 1e-5 : 6e-3) << "against the fp64 product";
    EXPECT_LT(rel_l2(got[0], got[1]), s.f32 ? 1e-5 : 6e-3) << "against cuBLASLt";
    if (!cutlass) {
      EXPECT_EQ(got[0], got[1]) << "a shape CUTLASS does not take should be cuBLASLt's, bit for bit";
    }
  }
}

// A backend made with var=value is refused, naming the variable, the value
// and `meaning` (what the values mean).
void expect_refused(const char* var, const char* value, const std::string& meaning) {
  try {
    test::cuda_backend_with(var, value);
    ADD_FAILURE() << var << "=" << value << " was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(std::string(var) + "=" + value + ":"), std::string::npos) << what;
    EXPECT_NE(what.find(meaning), std::string::npos) << what;
  }
}

// The backend's on/off switches take 0 or 1, its counts digits in their
// range; another value is refused when the backend is made.
TEST_F(CudaOps, SwitchesRefuseOtherValues) {
  for (const char* var : {"KINFER_GEMM_TUNE", "KINFER_GEMM_CUTLASS", "KINFER_MLP_FUSED", "KINFER_ATTN_SUMMARIES",
                          "KINFER_ATTN_STAGE", "KINFER_ATTN_BULK", "KINFER_CUDA_SYNC", "KINFER_SILU_EPILOGUE",
                          "KINFER_SPARSE_WARP"}) {
    for (const char* value : {"yes", "", "2"}) expect_refused(var, value, "0 (");
    EXPECT_EQ(std::getenv(var), nullptr) << var << " left set";
  }
  EXPECT_NO_THROW(test::cuda_backend_with("KINFER_MLP_FUSED", "0"));
  for (const char* var : {"KINFER_DECODE_SPLITS", "KINFER_SAMPLE_SUB_CHUNKS"})
    for (const char* value : {"0", "129", "x", "", "-3"}) expect_refused(var, value, "1 to 128");
  // A backend under a switch names it; one without names none.
  for (const auto& [var, value] : {std::pair{"KINFER_CUDA_SYNC", "1"}, {"KINFER_DECODE_SPLITS", "4"},
                                   {"KINFER_SPLIT_K", "0"}, {"KINFER_ATTN_BULK", "0"},
                                   {"KINFER_SPARSE_WARP", "1"}}) {
    const std::string name = test::cuda_backend_with(var, value)->name();
    EXPECT_NE(name.find(std::string(" with ") + var + "=" + value), std::string::npos) << name;
  }
  EXPECT_EQ(make_cuda_backend(0)->name().find(" with "), std::string::npos);
}

TEST_F(CudaOps, RmsnormInPlaceAndOut) {
  for (int d : {576, 128, 70}) {
    const int rows = 13;
    const float eps = 1e-6f;
    auto x = rand_bf16(size_t(rows) * d, rng, -3.f, 3.f), w = rand_bf16(d, rng, 0.5f, 1.5f);
    std::vector<float> ref(x.size());
    for (int r = 0; r < rows; ++r) {
      double ss = 0;
      for (int j = 0; j < d; ++j) ss += double(x[r * d + j]) * x[r * d + j];
      double inv = 1.0 / std::sqrt(ss / d + eps);
      for (int j = 0; j < d; ++j) ref[r * d + j] = float(x[r * d + j] * inv * w[j]);
    }
    Buffer dx = dev_bf16(*be, x, {rows, d}), dw = dev_bf16(*be, w, {d});
    Buffer dy(DType::BF16, {rows, d}, *be);
    be->rmsnorm(dx, dw, eps, dy);
    EXPECT_LT(rel_l2(host_bf16(*be, dy), ref), 5e-3) << "d " << d;
    be->rmsnorm(dx, dw, eps, dx);  // aliasing
    EXPECT_LT(rel_l2(host_bf16(*be, dx), ref), 5e-3) << "in place, d " << d;
  }
}

TEST_F(CudaOps, AddAndSiluMul) {
  for (int n : {4096, 1001}) {
    auto a = rand_bf16(n, rng, -4.f, 4.f), b = rand_bf16(n, rng, -4.f, 4.f);
    Buffer da = dev_bf16(*be, a, {n}), db = dev_bf16(*be, b, {n}), dout(DType::BF16, {n}, *be);
    // Merged gate|up rows ([1, 2n]; n = 1001 takes the unvectorised path).
    std::vector<float> gu(a);
    gu.insert(gu.end(), b.begin(), b.end());
    Buffer dgu = dev_bf16(*be, gu, {1, 2 * n});
    be->silu_mul(dgu, Tensor(dout.view().data, DType::BF16, {1, n}, Device::CUDA));
    std::vector<float> ref(n);
    for (int i = 0; i < n; ++i) ref[i] = float(a[i] / (1.0 + std::exp(-double(a[i]))) * b[i]);
    EXPECT_LT(rel_l2(host_bf16(*be, dout), ref), 5e-3) << n;
    be->add(da, db);
    for (int i = 0; i < n; ++i) ref[i] = a[i] + b[i];
    EXPECT_LT(rel_l2(host_bf16(*be, da), ref), 4e-3) << n;
  }
}

TEST_F(CudaOps, RopeRotateHalf) {
  struct Case {
    int heads, head_dim, rotary_dim;
  };
  for (Case c : {Case{4, 128, 128}, Case{3, 64, 64}, Case{2, 64, 32}}) {
    const int n = 6;
    const float theta = 1000000.f;
    std::vector<float> inv(c.rotary_dim / 2);
    for (int i = 0; i < c.rotary_dim / 2; ++i) inv[i] = std::pow(theta, -2.f * i / c.rotary_dim);
    std::vector<int32_t> pos = {0, 1, 17, 4095, 16383, 32767};
    auto x = rand_bf16(size_t(n) * c.heads * c.head_dim, rng);
    Buffer dx = dev_bf16(*be, x, {n, c.heads, c.head_dim}), dp = dev_i32(*be, pos, {n});
    RopeParams rp;
    rp.theta = theta;
    rp.rotary_dim = c.rotary_dim;
    rp.inv_freq = inv.data();
    be->rope(dx, dp, rp);
    std::vector<float> ref = x;
    const int half = c.rotary_dim / 2;
    for (int r = 0; r < n; ++r)
      for (int h = 0; h < c.heads; ++h) {
        const float* xi = &x[(size_t(r) * c.heads + h) * c.head_dim];
        float* o = &ref[(size_t(r) * c.heads + h) * c.head_dim];
        for (int i = 0; i < half; ++i) {
          const double ang = double(float(pos[r]) * inv[i]);  // fp32 product, as HF
          o[i] = float(xi[i] * std::cos(ang) - xi[i + half] * std::sin(ang));
          o[i + half] = float(xi[i + half] * std::cos(ang) + xi[i] * std::sin(ang));
        }
      }
    EXPECT_LT(rel_l2(host_bf16(*be, dx), ref), 5e-3) << c.head_dim << "/" << c.rotary_dim;
  }
}

// kv_write and kv_copy_pages vs the CPU reference on an f32 copy of the pool.
// int8 summaries (U8 codes + scales) must equal the CPU's bit for bit: both
// take the mean of the same bf16 keys in slot order and encode it alike.
void kv_case(Backend& be, std::mt19937& rng, int Hkv, int P, int D, attn::SummaryKind kind) {
  const bool summary_bf16 = kind == attn::SummaryKind::BF16, i8 = kind == attn::SummaryKind::I8;
  const int n_pages = 9;
  const int64_t pool = int64_t(n_pages) * Hkv * P * D;
  auto k0 = rand_bf16(pool, rng), v0 = rand_bf16(pool, rng);
  std::vector<float> s0(size_t(n_pages) * Hkv * D, 0.f);
  // Rows: fill page 3 completely, page 5 partly, the last slot of page 7 (fills it).
  std::vector<int32_t> slots;
  for (int o = 0; o < P; ++o) slots.push_back(3 * P + o);
  for (int o = 0; o < P / 2; ++o) slots.push_back(5 * P + o);
  slots.push_back(7 * P + P - 1);
  const int n = static_cast<int>(slots.size());
  auto k = rand_bf16(size_t(n) * Hkv * D, rng), v = rand_bf16(size_t(n) * Hkv * D, rng);
  for (size_t i = 0; i < k.size(); ++i)  // heads of magnitudes 2^-10 .. 2^10: scales far from 1
    k[i] = std::ldexp(k[i], int((i / D) % Hkv * 7 % 21) - 10);

  Buffer ck(DType::F32, {n_pages, Hkv, P, D}), cv(DType::F32, {n_pages, Hkv, P, D});
  Buffer cs(i8 ? DType::U8 : DType::F32, {n_pages, Hkv, D}), css(DType::F32, {n_pages, Hkv});
  std::copy(k0.begin(), k0.end(), ck.ptr<float>());
  std::copy(v0.begin(), v0.end(), cv.ptr<float>());
  if (i8) {
    std::fill_n(cs.ptr<uint8_t>(), s0.size(), uint8_t{0});
    std::fill_n(css.ptr<float>(), size_t(n_pages) * Hkv, 1.f);
  } else {
    std::copy(s0.begin(), s0.end(), cs.ptr<float>());
  }
  KvLayer cpu{ck, cv, cs, i8 ? css.view() : Tensor()};
  Buffer crk(DType::F32, {n, Hkv, D}), crv(DType::F32, {n, Hkv, D}), csl(DType::I32, {n});
  std::copy(k.begin(), k.end(), crk.ptr<float>());
  std::copy(v.begin(), v.end(), crv.ptr<float>());
  std::copy(slots.begin(), slots.end(), csl.ptr<int32_t>());
  cpu_kv_write(cpu, crk, crv, csl);

  Buffer gk = dev_bf16(be, k0, {n_pages, Hkv, P, D}), gv = dev_bf16(be, v0, {n_pages, Hkv, P, D});
  Buffer gs = i8            ? Buffer(DType::U8, {n_pages, Hkv, D}, be)
              : summary_bf16 ? dev_bf16(be, s0, {n_pages, Hkv, D})
                             : test::dev_f32(be, s0, {n_pages, Hkv, D});
  Buffer gss = test::dev_f32(be, std::vector<float>(size_t(n_pages) * Hkv, 1.f), {n_pages, Hkv});
  if (i8) be.upload(gs.view(), cs.ptr<uint8_t>());
  KvLayer gpu{gk, gv, gs, i8 ? gss.view() : Tensor()};
  Buffer grk = dev_bf16(be, k, {n, Hkv, D}), grv = dev_bf16(be, v, {n, Hkv, D}), gsl = dev_i32(be, slots, {n});
  be.kv_write(gpu, grk, grv, gsl);

  auto check = [&](const char* what) {
    std::vector<float> ek(ck.ptr<float>(), ck.ptr<float>() + pool), ev(cv.ptr<float>(), cv.ptr<float>() + pool);
    EXPECT_EQ(host_bf16(be, gk), ek) << what << ": K pool";
    EXPECT_EQ(host_bf16(be, gv), ev) << what << ": V pool";
    if (i8) {
      std::vector<uint8_t> codes(s0.size());
      be.download(codes.data(), gs.view());
      EXPECT_EQ(codes, std::vector<uint8_t>(cs.ptr<uint8_t>(), cs.ptr<uint8_t>() + s0.size())) << what << ": i8 codes";
      EXPECT_EQ(test::host_f32(be, gss), std::vector<float>(css.ptr<float>(), css.ptr<float>() + n_pages * Hkv))
          << what << ": i8 scales";
      int scales = 0;  // the pages written have scales other than 1
      for (int i = 0; i < n_pages * Hkv; ++i) scales += css.ptr<float>()[i] != 1.f;
      EXPECT_GE(scales, Hkv) << what;
      return;
    }
    std::vector<float> es(cs.ptr<float>(), cs.ptr<float>() + s0.size());
    auto got_s = summary_bf16 ? host_bf16(be, gs) : test::host_f32(be, gs);
    EXPECT_LT(rel_l2(got_s, es), summary_bf16 ? 5e-3 : 1e-6) << what << ": summaries";
  };
  check("kv_write");

  std::vector<int32_t> src = {3, 5, 1}, dst = {8, 0, 1};
  Buffer c_src(DType::I32, {3}), c_dst(DType::I32, {3});
  std::copy(src.begin(), src.end(), c_src.ptr<int32_t>());
  std::copy(dst.begin(), dst.end(), c_dst.ptr<int32_t>());
  cpu_kv_copy_pages(cpu, c_src, c_dst);
  Buffer g_src = dev_i32(be, src, {3}), g_dst = dev_i32(be, dst, {3});
  be.kv_copy_pages(gpu, g_src, g_dst);
  check("kv_copy_pages");
}

TEST_F(CudaOps, KvWriteAndCopyPages) {
  kv_case(*be, rng, 2, 16, 128, attn::SummaryKind::F32);
  kv_case(*be, rng, 3, 32, 64, attn::SummaryKind::BF16);
  kv_case(*be, rng, 8, 16, 128, attn::SummaryKind::BF16);
  kv_case(*be, rng, 8, 16, 128, attn::SummaryKind::I8);
  kv_case(*be, rng, 3, 32, 64, attn::SummaryKind::I8);
}

}  // namespace
}  // namespace kf

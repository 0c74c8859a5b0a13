// The fused ops of the decode step against the CPU reference backend (whose
// fused ops are, bit for bit, the separate ops they replace): add_rmsnorm,
// the merged-projection silu_mul, and qkv_rope_write (per-head norm + RoPE
// + KV write + page summaries), across head counts, head_dim 64/128, partial
// rotary, page sizes 16/32 and rows that complete pages: scattered decode
// rows and prefill chunks; every completed page's summary is checked bit for
// bit against the mean of the keys the GPU pool holds; and qkv_attention, the
// fused sparse kernel writing the page summaries, against the separate ops.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <algorithm>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "attn/summary.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_util.h"
#include "backend/cuda/gemm_cutlass.h"
#include "backend/cuda/kernels.h"
#include "cuda_test_util.h"

namespace kf {
namespace {

using test::dev_bf16;
using test::dev_i32;
using test::host_bf16;
using test::rand_bf16;

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

Tensor host_view(std::vector<float>& v, std::initializer_list<int64_t> shape) {
  return Tensor(v.data(), DType::F32, shape, Device::CPU);
}

class CudaFused : public ::testing::Test {
 protected:
  void SetUp() override {
    KF_REQUIRE_CUDA();
    be = make_cuda_backend(0);
    cpu = make_cpu_backend(CpuOptions{2, false});
  }
  std::unique_ptr<Backend> be, cpu;
  std::mt19937 rng{2024};
};

TEST_F(CudaFused, AddRmsnormMatchesAddThenNorm) {
  // 100: the scalar kernel; 8200: past the block kernel's register cache.
  for (int d : {1024, 576, 100, 5120, 8192, 8200})
    for (int rows : {1, 7, 64}) {
      auto x = rand_bf16(size_t(rows) * d, rng, -3.f, 3.f), y = rand_bf16(size_t(rows) * d, rng, -3.f, 3.f);
      auto w = rand_bf16(d, rng, 0.5f, 1.5f);
      Buffer dx = dev_bf16(*be, x, {rows, d}), dy = dev_bf16(*be, y, {rows, d}), dw = dev_bf16(*be, w, {d});
      std::vector<float> cx = x, cy = y, cw = w, cout(x.size());
      cpu->add_rmsnorm(host_view(cx, {rows, d}), host_view(cy, {rows, d}), host_view(cw, {d}), 1e-6f,
                       host_view(cout, {rows, d}));
      be->add_rmsnorm(dx, dy, dw, 1e-6f, dy);  // out aliasing y, as the model does
      EXPECT_LT(rel_l2(host_bf16(*be, dx), cx), 4e-3) << "x, d " << d << " rows " << rows;
      EXPECT_LT(rel_l2(host_bf16(*be, dy), cout), 6e-3) << "out, d " << d << " rows " << rows;
    }
}

struct QkvCase {
  int hq, hkv, hd, rotary, page_size;
  bool qk_norm;
};

TEST_F(CudaFused, QkvRopeWriteMatchesCpu) {
  // The chunk kernel for all but the last (RoPE pairs of 24 dims: not whole
  // power-of-two chunks apart, the warp-per-head kernel); 9/3 heads of 64:
  // SmolLM2. Cases without the per-head norm (whose sum of squares the two
  // kernels add in different orders) also run from a misaligned q|k|v (the
  // warp-per-head kernel), which must give the chunk kernel's bits.
  for (const QkvCase c : {QkvCase{16, 8, 128, 128, 16, true}, QkvCase{8, 2, 64, 64, 32, false},
                          QkvCase{4, 4, 128, 64, 16, true}, QkvCase{28, 4, 128, 128, 16, false},
                          QkvCase{9, 3, 64, 64, 16, false}, QkvCase{4, 2, 64, 48, 16, true}})
    // Scattered rows (1 or 37, decode-like, some sharing a page) and prefill
    // chunks (consecutive slots filling whole pages) of 40 rows, where the
    // launch writes the summaries itself, and of 300, where kv.cu's kernel does.
    for (int n : {1, 37, -40, -300}) {
      const bool chunk = n < 0;
      n = std::abs(n);
      const int pages = 24, P = c.page_size, width = (c.hq + 2 * c.hkv) * c.hd;
      std::vector<int32_t> slots(n);
      if (chunk) {
        const int start = static_cast<int>(rng() % (pages * P - n + 1));
        std::iota(slots.begin(), slots.end(), start);
      } else {
        // Distinct slots; every fourth row takes the last offset of a page, so summaries are written.
        std::vector<int32_t> slot_pool(pages * P);
        std::iota(slot_pool.begin(), slot_pool.end(), 0);
        std::shuffle(slot_pool.begin(), slot_pool.end(), rng);
        slots.assign(slot_pool.begin(), slot_pool.begin() + n);
        for (int i = 0; i < n; i += 4) slots[i] = (i % pages) * P + P - 1;
        std::sort(slots.begin(), slots.end());
        slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
      }
      std::vector<int32_t> pos;
      const int rows = static_cast<int>(slots.size());
      pos.resize(rows);
      for (int& p : pos) p = static_cast<int>(rng() % 30000);
      auto qkv = rand_bf16(size_t(rows) * width, rng, -2.f, 2.f);
      auto qn = rand_bf16(c.hd, rng, 0.5f, 1.5f), kn = rand_bf16(c.hd, rng, 0.5f, 1.5f);
      const size_t pool_n = size_t(pages) * c.hkv * P * c.hd, sum_n = size_t(pages) * c.hkv * c.hd;
      auto k0 = rand_bf16(pool_n, rng), v0 = rand_bf16(pool_n, rng);
      std::vector<float> inv(c.rotary / 2);
      for (int i = 0; i < c.rotary / 2; ++i) inv[i] = std::pow(1e6f, -2.f * i / c.rotary);
      RopeParams rope;
      rope.rotary_dim = c.rotary;
      rope.inv_freq = inv.data();

      // CPU reference.
      std::vector<float> cq(size_t(rows) * c.hq * c.hd), ck = k0, cv = v0, cs(sum_n, 0.f), cqkv = qkv, cqn = qn,
                                                         ckn = kn;
      std::vector<int32_t> cslots = slots, cpos = pos;
      KvLayer ckv{host_view(ck, {pages, c.hkv, P, c.hd}), host_view(cv, {pages, c.hkv, P, c.hd}),
                  host_view(cs, {pages, c.hkv, c.hd})};
      const Tensor cqn_t = host_view(cqn, {c.hd}), ckn_t = host_view(ckn, {c.hd});
      cpu->qkv_rope_write(host_view(cqkv, {rows, width}), c.qk_norm ? &cqn_t : nullptr,
                          c.qk_norm ? &ckn_t : nullptr, 1e-6f, Tensor(cpos.data(), DType::I32, {rows}),
                          rope, ckv, Tensor(cslots.data(), DType::I32, {rows}), host_view(cq, {rows, c.hq, c.hd}));

      // GPU.
      Buffer gk = dev_bf16(*be, k0, {pages, c.hkv, P, c.hd}), gv = dev_bf16(*be, v0, {pages, c.hkv, P, c.hd});
      Buffer gs = dev_bf16(*be, std::vector<float>(sum_n, 0.f), {pages, c.hkv, c.hd});
      Buffer gq(DType::BF16, {rows, c.hq, c.hd}, *be);
      Buffer gqkv = dev_bf16(*be, qkv, {rows, width}), gqn = dev_bf16(*be, qn, {c.hd}), gkn = dev_bf16(*be, kn, {c.hd});
      Buffer gslots = dev_i32(*be, slots, {rows}), gpos = dev_i32(*be, pos, {rows});
      KvLayer gkv{gk.view(), gv.view(), gs.view()};
      be->qkv_rope_write(gqkv, c.qk_norm ? &gqn.view() : nullptr, c.qk_norm ? &gkn.view() : nullptr, 1e-6f, gpos,
                         rope, gkv, gslots, gq);
      const std::string what = "hq " + std::to_string(c.hq) + " hkv " + std::to_string(c.hkv) + " hd " +
                               std::to_string(c.hd) + " rows " + std::to_string(rows);
      EXPECT_LT(rel_l2(host_bf16(*be, gq), cq), 1e-2) << what << ": q";
      EXPECT_LT(rel_l2(host_bf16(*be, gk), ck), 1e-2) << what << ": K pool";
      EXPECT_EQ(host_bf16(*be, gv), cv) << what << ": V pool (copied, exact)";
      EXPECT_LT(rel_l2(host_bf16(*be, gs), cs), 1e-2) << what << ": summaries";
      if (!c.qk_norm) {  // q|k|v 2 bytes off 16-byte alignment: the warp-per-head kernel, the same bits
        std::vector<float> padded(qkv.size() + 8, 0.f);
        std::copy(qkv.begin(), qkv.end(), padded.begin() + 1);
        Buffer gpad = dev_bf16(*be, padded, {int64_t(padded.size())});
        const Tensor off_qkv(gpad.ptr<uint16_t>() + 1, DType::BF16, {rows, width}, Device::CUDA);
        Buffer gk2 = dev_bf16(*be, k0, {pages, c.hkv, P, c.hd}), gv2 = dev_bf16(*be, v0, {pages, c.hkv, P, c.hd});
        Buffer gs2 = dev_bf16(*be, std::vector<float>(sum_n, 0.f), {pages, c.hkv, c.hd});
        Buffer gq2(DType::BF16, {rows, c.hq, c.hd}, *be);
        KvLayer gkv2{gk2.view(), gv2.view(), gs2.view()};
        be->qkv_rope_write(off_qkv, nullptr, nullptr, 1e-6f, gpos, rope, gkv2, gslots, gq2);
        EXPECT_EQ(host_bf16(*be, gq2), host_bf16(*be, gq)) << what << ": q, the two kernels";
        EXPECT_EQ(host_bf16(*be, gk2), host_bf16(*be, gk)) << what << ": K pool, the two kernels";
        EXPECT_EQ(host_bf16(*be, gv2), host_bf16(*be, gv)) << what << ": V pool, the two kernels";
        EXPECT_EQ(host_bf16(*be, gs2), host_bf16(*be, gs)) << what << ": summaries, the two kernels";
      }
      double summary_mass = 0;
      for (float s : cs) summary_mass += std::fabs(s);
      EXPECT_GT(summary_mass, 0) << what << ": no page was completed";
      // Exact: each completed page's summary is the bf16 mean of the keys the
      // GPU pool holds after the launch (a key read before it was written, or
      // recomputed differently, shows here).
      const std::vector<float> pool_k = host_bf16(*be, gk), sums = host_bf16(*be, gs);
      int completed = 0;
      for (const int32_t slot : slots) {
        if (slot % P != P - 1) continue;
        ++completed;
        const int page = slot / P;
        for (int h = 0; h < c.hkv; ++h)
          for (int d = 0; d < c.hd; ++d) {
            float sum = 0.f;
            for (int j = 0; j < P; ++j) sum += pool_k[((size_t(page) * c.hkv + h) * P + j) * c.hd + d];
            const float want = bf16_to_f32(f32_to_bf16(sum / static_cast<float>(P)));
            ASSERT_EQ(sums[(size_t(page) * c.hkv + h) * c.hd + d], want)
                << what << (chunk ? " chunk" : "") << ": summary of page " << page << " head " << h << " dim " << d;
          }
      }
      EXPECT_GT(completed, 0) << what;
    }
}


// The fused decode MLP (backend/cuda/mlp.cu) against the CPU's three ops
// (f32 throughout: the GPU's bf16 roundings of gate|up, ffn and out are the
// difference) and against the GPU's own three ops (the same roundings: only
// the order of the fp32 sums differs). Shapes: Qwen3-0.6B (the plan must
// apply there), SmolLM2-135M, small ones with few blocks, and row counts
// around the 16-row tiles and the two warp groups (33-64 rows).
// The fused kernel is opt-in (KINFER_MLP_FUSED=1, read when a backend is made).
// The CPU reference of Backend::mlp (residual res, the next layer's norm):
// ffn = silu(gate) · up, out = the normed sum, resid = res + the MLP.
struct MlpRef {
  std::vector<float> ffn, out, resid;
};
MlpRef cpu_mlp(Backend& cpu, std::vector<float> x, std::vector<float> res, std::vector<float> norm,
               std::vector<float> wgu, std::vector<float> wd, int n, int d, int f) {
  MlpRef r{std::vector<float>(size_t(n) * f), std::vector<float>(size_t(n) * d), std::move(res)};
  std::vector<float> gu(size_t(n) * 2 * f);
  const Tensor norm_t = host_view(norm, {d});
  cpu.mlp(host_view(x, {n, d}), host_view(wgu, {2 * f, d}), host_view(wd, {d, f}), host_view(gu, {n, 2 * f}),
          host_view(r.ffn, {n, f}), host_view(r.resid, {n, d}), &norm_t, 1e-6f, host_view(r.out, {n, d}));
  return r;
}

std::unique_ptr<Backend> make_fused_mlp_backend() { return test::cuda_backend_with("KINFER_MLP_FUSED", "1"); }

TEST_F(CudaFused, MlpMatchesCpuAndSeparateOps) {
  std::unique_ptr<Backend> fused = make_fused_mlp_backend();
  Backend* separate = be.get();
  int sms = 0, smem = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
  EXPECT_GT(cuda::mlp_decode_plan(32, 1024, 3072, sms, smem).grid, 0) << "Qwen3-0.6B's MLP must run fused";
  EXPECT_GT(cuda::mlp_decode_plan(64, 1024, 3072, sms, smem).grid, 0);
  EXPECT_EQ(cuda::mlp_decode_plan(65, 1024, 3072, sms, smem).grid, 0) << "65 rows: the separate ops";
  EXPECT_EQ(cuda::mlp_decode_plan(32, 4096, 12288, sms, smem).grid, 0) << "Qwen3-8B: weights too big";
  struct Case {
    int d, f;
    std::vector<int> rows;
  };
  for (const Case& c : {Case{1024, 3072, {1, 5, 16, 17, 32, 33, 64}}, Case{576, 1536, {1, 32, 64}},
                        Case{256, 512, {7, 40}}, Case{64, 128, {3}}, Case{2048, 6144, {32}}})
    for (int n : c.rows) {
      SCOPED_TRACE(::testing::Message() << "d " << c.d << " f " << c.f << " rows " << n);
      const float scale_in = 1.f / std::sqrt(float(c.d)), scale_f = 1.f / std::sqrt(float(c.f));
      auto x = rand_bf16(size_t(n) * c.d, rng, -2.f, 2.f);
      auto res = rand_bf16(size_t(n) * c.d, rng, -2.f, 2.f);  // the residual stream
      auto norm = rand_bf16(size_t(c.d), rng, 0.5f, 1.5f);    // the next layer's input norm
      auto wgu = rand_bf16(size_t(2) * c.f * c.d, rng, -2.f * scale_in, 2.f * scale_in);
      auto wd = rand_bf16(size_t(c.d) * c.f, rng, -2.f * scale_f, 2.f * scale_f);
      const MlpRef ref = cpu_mlp(*cpu, x, res, norm, wgu, wd, n, c.d, c.f);
      std::vector<float> ffn[2], out[2], resid[2];
      Backend* gpus[2] = {fused.get(), separate};
      for (int i = 0; i < 2; ++i) {
        Backend& g = *gpus[i];
        Buffer dx = dev_bf16(g, x, {n, c.d}), dres = dev_bf16(g, res, {n, c.d}), dnorm = dev_bf16(g, norm, {c.d}),
               dwgu = dev_bf16(g, wgu, {2 * c.f, c.d}), dwd = dev_bf16(g, wd, {c.d, c.f}),
               dgu(DType::BF16, {n, 2 * c.f}, g), dffn(DType::BF16, {n, c.f}, g);
        test::poison(g, dffn);
        g.mlp(dx, dwgu, dwd, dgu, dffn, dres, &dnorm.view(), 1e-6f, dx);  // out aliasing the input, as the model does
        ffn[i] = host_bf16(g, dffn);
        out[i] = host_bf16(g, dx);
        resid[i] = host_bf16(g, dres);
      }
      EXPECT_LT(rel_l2(resid[0], ref.resid), 1e-2) << "residual + MLP";
      EXPECT_LT(rel_l2(resid[0], resid[1]), 6e-3) << "fused vs separate GPU ops";
      EXPECT_LT(rel_l2(ffn[0], ref.ffn), 8e-3);
      EXPECT_LT(rel_l2(out[0], ref.out), 1e-2);
      EXPECT_LT(rel_l2(ffn[0], ffn[1]), 3e-3) << "fused vs separate GPU ops";
      EXPECT_LT(rel_l2(out[0], out[1]), 6e-3) << "fused vs separate GPU ops";
      // The fused kernel ran (its fp32 sums go in another order): not bitwise the separate ops.
      if (c.d == 1024 && n >= 16) {
        EXPECT_NE(out[0], out[1]) << "the fused path was not taken";
      }
    }
}

// A graph replay equals the direct launch bit for bit, and launches with
// different grid sizes (Qwen3-0.6B: 128 blocks; d 64: 16) share the barrier
// counter in any order without a reset.
TEST_F(CudaFused, MlpGraphReplayAndGridSizesShareTheBarrier) {
  be = make_fused_mlp_backend();
  struct Shape {
    int d, f, n;
  };
  const Shape shapes[2] = {{1024, 3072, 32}, {64, 128, 9}};
  std::vector<Buffer> keep;
  std::vector<std::function<void()>> run;
  std::vector<const Buffer*> outs;
  for (const Shape& s : shapes) {
    keep.push_back(dev_bf16(*be, rand_bf16(size_t(s.n) * s.d, rng, -2.f, 2.f), {s.n, s.d}));
    keep.push_back(dev_bf16(*be, rand_bf16(size_t(2) * s.f * s.d, rng, -0.05f, 0.05f), {2 * s.f, s.d}));
    keep.push_back(dev_bf16(*be, rand_bf16(size_t(s.d) * s.f, rng, -0.05f, 0.05f), {s.d, s.f}));
    keep.emplace_back(DType::BF16, std::initializer_list<int64_t>{s.n, 2 * s.f}, *be);
    keep.emplace_back(DType::BF16, std::initializer_list<int64_t>{s.n, s.f}, *be);
    keep.emplace_back(DType::BF16, std::initializer_list<int64_t>{s.n, s.d}, *be);
    keep.push_back(dev_bf16(*be, rand_bf16(size_t(s.n) * s.d, rng, -2.f, 2.f), {s.n, s.d}));  // residual
  }
  for (int i = 0; i < 2; ++i) {
    const Buffer* b = &keep[7 * i];
    // Without a norm: out holds the MLP's output, the residual gets it added.
    run.push_back([this, b] { be->mlp(b[0], b[1], b[2], b[3], b[4], b[6], nullptr, 1e-6f, b[5]); });
    outs.push_back(&b[5]);
  }
  std::vector<float> direct[2];
  for (int i = 0; i < 2; ++i) {
    run[i]();
    direct[i] = host_bf16(*be, *outs[i]);
  }
  std::unique_ptr<Graph> g = be->record([&] {
    run[0]();
    run[1]();
    run[0]();
  });
  for (int rep = 0; rep < 3; ++rep) {
    for (int i = 0; i < 2; ++i) test::poison(*be, *outs[i]);
    be->replay(*g);
    run[1]();
    for (int i = 0; i < 2; ++i) EXPECT_EQ(host_bf16(*be, *outs[i]), direct[i]) << "shape " << i << " rep " << rep;
  }
}

// The gate|up matrix from pack_mlp_gate_up has its rows interleaved by 8
// (KINFER_SILU_EPILOGUE=0: as given), and mlp() with it equals mlp() with the
// matrix as given bit for bit: at decode batches CUTLASS's GEMM ending in
// silu_mul against the GEMM and silu_mul; at more rows cuBLASLt's GEMM and
// silu_mul_interleaved. Against the CPU within bf16 rounding; a graph replay
// equals the direct launch.
TEST_F(CudaFused, MlpSiluEpilogueEqualsSeparateOps) {
  if (!cuda::cutlass_gemm_built()) GTEST_SKIP() << "built without CUTLASS";
  std::unique_ptr<Backend> off = test::cuda_backend_with("KINFER_SILU_EPILOGUE", "0");
  struct Case {
    int d, f;
    std::vector<int> rows;
  };
  for (const Case& c : {Case{1024, 3072, {1, 5, 32, 33, 64, 65, 200}}, Case{576, 1536, {1, 32}},
                        Case{64, 128, {3, 70}}, Case{4096, 12288, {32}}}) {
    const float scale_in = 1.f / std::sqrt(float(c.d)), scale_f = 1.f / std::sqrt(float(c.f));
    auto wgu = rand_bf16(size_t(2) * c.f * c.d, rng, -2.f * scale_in, 2.f * scale_in);
    auto wd = rand_bf16(size_t(c.d) * c.f, rng, -2.f * scale_f, 2.f * scale_f);
    Buffer given = dev_bf16(*be, wgu, {2 * c.f, c.d}), dwd = dev_bf16(*be, wd, {c.d, c.f});
    Buffer packed = be->pack_mlp_gate_up(dev_bf16(*be, wgu, {2 * c.f, c.d}));
    {
      SCOPED_TRACE(::testing::Message() << "layout of d " << c.d << " f " << c.f);
      const std::vector<float> rows = host_bf16(*be, packed);
      bool same = true;
      for (int r = 0; r < 2 * c.f && same; ++r) {
        const int src = (r % 16 < 8 ? 0 : c.f) + r / 16 * 8 + r % 8;  // gate or up row of feature r/16*8 + r%8
        same = std::equal(rows.begin() + size_t(r) * c.d, rows.begin() + size_t(r + 1) * c.d,
                          wgu.begin() + size_t(src) * c.d);
        EXPECT_TRUE(same) << "row " << r << " is not row " << src << " of [gate; up]";
      }
      EXPECT_EQ(host_bf16(*off, off->pack_mlp_gate_up(dev_bf16(*off, wgu, {2 * c.f, c.d}))), wgu)
          << "KINFER_SILU_EPILOGUE=0 keeps the rows as given";
    }
    for (int n : c.rows) {
      SCOPED_TRACE(::testing::Message() << "d " << c.d << " f " << c.f << " rows " << n);
      auto x = rand_bf16(size_t(n) * c.d, rng, -2.f, 2.f), res = rand_bf16(size_t(n) * c.d, rng, -2.f, 2.f);
      auto norm = rand_bf16(size_t(c.d), rng, 0.5f, 1.5f);
      const MlpRef ref = cpu_mlp(*cpu, x, res, norm, wgu, wd, n, c.d, c.f);
      Buffer dnorm = dev_bf16(*be, norm, {c.d});
      std::vector<float> ffn[2], out[2], resid[2];
      for (int i = 0; i < 2; ++i) {  // 0: interleaved, 1: as given
        Buffer dx = dev_bf16(*be, x, {n, c.d}), dres = dev_bf16(*be, res, {n, c.d}),
               dgu(DType::BF16, {n, 2 * c.f}, *be), dffn(DType::BF16, {n, c.f}, *be);
        test::poison(*be, dffn);
        if (i == 0) cuda_profile(*be, true);
        be->mlp(dx, i == 0 ? packed : given, dwd, dgu, dffn, dres, &dnorm.view(), 1e-6f, dx);
        be->synchronize();
        if (i == 0) {
          const bool epilogue = n <= cuda::kCutlassMaxRows;
          EXPECT_NE(cuda_profile_json(*be).find(epilogue ? "silu_mul in the GEMM" : "then silu_mul"),
                    std::string::npos);
          cuda_profile(*be, false);
        }
        ffn[i] = host_bf16(*be, dffn);
        out[i] = host_bf16(*be, dx);
        resid[i] = host_bf16(*be, dres);
        if (i == 0 && n <= cuda::kCutlassMaxRows) {  // the programmatic launch in a graph = the direct one
          Buffer gx = dev_bf16(*be, x, {n, c.d}), gres = dev_bf16(*be, res, {n, c.d});
          std::unique_ptr<Graph> g =
              be->record([&] { be->mlp(gx, packed, dwd, dgu, dffn, gres, &dnorm.view(), 1e-6f, gx); });
          const std::vector<uint16_t> xb = test::to_bf16(x), rb = test::to_bf16(res);
          be->upload(gx, xb.data());  // the recording ran the ops once
          be->upload(gres, rb.data());
          test::poison(*be, dffn);
          be->replay(*g);
          EXPECT_EQ(host_bf16(*be, dffn), ffn[0]) << "graph replay";
          EXPECT_EQ(host_bf16(*be, gx), out[0]) << "graph replay";
        }
      }
      EXPECT_EQ(ffn[0], ffn[1]) << "silu(gate) · up, interleaved vs as given";
      EXPECT_EQ(out[0], out[1]);
      EXPECT_EQ(resid[0], resid[1]);
      EXPECT_LT(rel_l2(ffn[0], ref.ffn), 8e-3) << "against the CPU";
      EXPECT_LT(rel_l2(out[0], ref.out), 1e-2) << "against the CPU";
    }
  }
}

std::unique_ptr<Backend> make_split_k_backend(int slices) {
  return test::cuda_backend_with("KINFER_SPLIT_K", std::to_string(slices));
}

// matmul_add_rmsnorm with K split into fp32 partial products that the norm
// kernel adds (KINFER_SPLIT_K): against the CPU (f32) and the unsplit GPU ops
// (matmul, then add_rmsnorm), with and without the norm; 65 rows and a K the
// slices do not divide take the unsplit path, bit for bit; a graph replay
// equals the direct launch.
TEST_F(CudaFused, SplitKProjectionMatchesCpuAndUnsplit) {
  struct Case {
    int k, d;
    std::vector<int> rows;
  };
  std::unique_ptr<Backend> unsplit = make_split_k_backend(0);
  for (int slices : {2, 3, 4, 8}) {
    std::unique_ptr<Backend> split = make_split_k_backend(slices);
    for (const Case& c : {Case{2048, 1024, {1, 32, 64, 65}}, Case{3072, 1024, {5, 32}}, Case{1000, 576, {8}},
                          Case{12288, 4096, {32}}})
      for (int n : c.rows)
        for (bool with_norm : {true, false}) {
          SCOPED_TRACE(::testing::Message() << slices << " slices, k " << c.k << " d " << c.d << " rows " << n
                                            << (with_norm ? ", norm" : ", no norm"));
          const bool applies = n <= 64 && c.k % (8 * slices) == 0;
          auto in = rand_bf16(size_t(n) * c.k, rng, -2.f, 2.f);
          auto w = rand_bf16(size_t(c.d) * c.k, rng, -2.f / std::sqrt(float(c.k)), 2.f / std::sqrt(float(c.k)));
          auto res = rand_bf16(size_t(n) * c.d, rng, -2.f, 2.f), norm = rand_bf16(size_t(c.d), rng, 0.5f, 1.5f);
          std::vector<float> cin = in, cw = w, cres = res, cnorm = norm, cout(size_t(n) * c.d);
          const Tensor cnorm_t = host_view(cnorm, {c.d});
          cpu->matmul_add_rmsnorm(host_view(cin, {n, c.k}), host_view(cw, {c.d, c.k}), host_view(cres, {n, c.d}),
                                  with_norm ? &cnorm_t : nullptr, 1e-6f, host_view(cout, {n, c.d}));
          std::vector<float> out[2], resid[2];
          Backend* gpus[2] = {split.get(), unsplit.get()};
          for (int i = 0; i < 2; ++i) {
            Backend& g = *gpus[i];
            Buffer din = dev_bf16(g, in, {n, c.k}), dw = dev_bf16(g, w, {c.d, c.k}), dres = dev_bf16(g, res, {n, c.d}),
                   dnorm = dev_bf16(g, norm, {c.d}), dout(DType::BF16, {n, c.d}, g);
            test::poison(g, dout);
            g.matmul_add_rmsnorm(din, dw, dres, with_norm ? &dnorm.view() : nullptr, 1e-6f, dout);
            resid[i] = host_bf16(g, dres);
            if (with_norm) out[i] = host_bf16(g, dout);
          }
          EXPECT_LT(rel_l2(resid[0], cres), 1e-2);
          EXPECT_LT(rel_l2(resid[0], resid[1]), 6e-3) << "split vs unsplit";
          if (with_norm) {
            EXPECT_LT(rel_l2(out[0], cout), 1.5e-2);
            EXPECT_LT(rel_l2(out[0], out[1]), 8e-3) << "split vs unsplit";
          }
          // The split path adds fp32 partials (no bf16 rounding of the product): not bitwise the unsplit ops.
          if (applies) EXPECT_NE(resid[0], resid[1]) << "the split path was not taken";
          else EXPECT_EQ(resid[0], resid[1]) << "the unsplit path was expected";
        }
  }
  // Graph replay = direct launch (the op adds to the residual: both start from the same values).
  std::unique_ptr<Backend> split = make_split_k_backend(4);
  const int n = 32, k = 2048, d = 1024;
  auto res = rand_bf16(size_t(n) * d, rng, -2.f, 2.f);
  Buffer din = dev_bf16(*split, rand_bf16(size_t(n) * k, rng, -2.f, 2.f), {n, k}),
         dw = dev_bf16(*split, rand_bf16(size_t(d) * k, rng, -0.05f, 0.05f), {d, k}),
         dnorm = dev_bf16(*split, rand_bf16(d, rng, 0.5f, 1.5f), {d}), res_a = dev_bf16(*split, res, {n, d}),
         res_b = dev_bf16(*split, res, {n, d}), out_a(DType::BF16, {n, d}, *split), out_b(DType::BF16, {n, d}, *split);
  split->matmul_add_rmsnorm(din, dw, res_a, &dnorm.view(), 1e-6f, out_a);
  std::unique_ptr<Graph> g =
      split->record([&] { split->matmul_add_rmsnorm(din, dw, res_b, &dnorm.view(), 1e-6f, out_b); });
  const std::vector<uint16_t> res_bits = test::to_bf16(res);
  split->upload(res_b, res_bits.data());  // recording ran the op once
  test::poison(*split, out_b);
  split->replay(*g);
  EXPECT_EQ(host_bf16(*split, res_b), host_bf16(*split, res_a));
  EXPECT_EQ(host_bf16(*split, out_b), host_bf16(*split, out_a));
}

// Backend::qkv_attention where the fused sparse kernel writes the page
// summaries (the default) against the same ops with the summary kernel
// between them (a backend made with KINFER_ATTN_SUMMARIES=0): q, the K and V
// pools, the summaries, the attention output and the page selection, all bit
// for bit. Some sequences' new key fills the last offset of a page (1024,
// 2048, 64: the summary is written; the page is in the local window, which
// selection does not score). Query groups of 2 and 8, head_dim 64, partial
// rotary, no per-head norm, local and the topk oracle, and one multi-row
// sequence beside empty ones (the fused kernel serves it row by row); int8
// summaries (codes and scales bit for bit).
struct QkvAttnCase {
  int hq, hkv, hd, rotary, page_size;
  bool qk_norm;
  AttnKind kind;
  std::vector<int> ctx, rows;  // tokens after the step, new rows (empty: 1 each)
  bool i8 = false;             // summaries as int8 codes + scales
};

TEST_F(CudaFused, QkvAttentionSummariesInTheSparseKernel) {
  const std::vector<int> ctx6 = {3000, 1024, 17, 4096, 2048, 5};  // 1024 and 2048: the new key ends a page
  // The block kernel (these small batches' default), then the warp kernel
  // (KINFER_SPARSE_WARP=1; not the topk oracle's), each against the summary kernel.
  for (const char* warp_kernel : {"0", "1"})
  for (const QkvAttnCase& c :
       {QkvAttnCase{16, 8, 128, 128, 16, true, AttnKind::BlockTopK, ctx6, {}},
        QkvAttnCase{64, 8, 128, 128, 16, true, AttnKind::BlockTopK, ctx6, {}},
        QkvAttnCase{8, 2, 64, 32, 32, false, AttnKind::BlockTopK, {700, 64, 1500}, {}},
        QkvAttnCase{16, 8, 128, 128, 16, true, AttnKind::Local, ctx6, {}},
        QkvAttnCase{16, 8, 128, 128, 16, true, AttnKind::TopK, {900, 2048, 33}, {}},
        QkvAttnCase{16, 8, 128, 128, 16, true, AttnKind::BlockTopK, {640, 0, 0}, {3, 0, 0}},
        QkvAttnCase{16, 8, 128, 128, 16, true, AttnKind::BlockTopK, ctx6, {}, true},
        QkvAttnCase{8, 2, 64, 32, 32, false, AttnKind::BlockTopK, {700, 64, 1500}, {}, true}}) {
    SCOPED_TRACE(::testing::Message() << attn_kind_name(c.kind) << " Hq " << c.hq << " Hkv " << c.hkv << " D "
                                      << c.hd << " rotary " << c.rotary << " P " << c.page_size
                                      << (c.i8 ? " int8 summaries" : "") << " KINFER_SPARSE_WARP=" << warp_kernel);
    std::unique_ptr<Backend> fus = test::cuda_backend_with("KINFER_SPARSE_WARP", warp_kernel);
    std::unique_ptr<Backend> sep =
        test::cuda_backend_with({{"KINFER_ATTN_SUMMARIES", "0"}, {"KINFER_SPARSE_WARP", warp_kernel}});
    const int S = static_cast<int>(c.ctx.size()), P = c.page_size, D = c.hd;
    const std::vector<int> rows = c.rows.empty() ? std::vector<int>(S, 1) : c.rows;
    std::vector<int32_t> q_start(S + 1, 0);
    int max_pages = 1, total_pages = 0;
    for (int s = 0; s < S; ++s) {
      q_start[s + 1] = q_start[s] + rows[s];
      max_pages = std::max(max_pages, (c.ctx[s] + P - 1) / P);
      total_pages += (c.ctx[s] + P - 1) / P;
    }
    const int n = q_start[S], pages = total_pages + 3, width = (c.hq + 2 * c.hkv) * D;
    std::vector<int32_t> perm(pages), table(size_t(S) * max_pages, -1), slots, pos;
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int s = 0, next = 0; s < S; ++s)
      for (int i = 0; i < (c.ctx[s] + P - 1) / P; ++i) table[size_t(s) * max_pages + i] = perm[next++];
    for (int s = 0; s < S; ++s)
      for (int i = 0; i < rows[s]; ++i) {
        const int p = c.ctx[s] - rows[s] + i;
        pos.push_back(p);
        slots.push_back(table[size_t(s) * max_pages + p / P] * P + p % P);
      }
    const size_t pool_n = size_t(pages) * c.hkv * P * D, sum_n = size_t(pages) * c.hkv * D;
    const auto k0 = rand_bf16(pool_n, rng), v0 = rand_bf16(pool_n, rng), s0 = rand_bf16(sum_n, rng);
    std::vector<uint8_t> codes0(sum_n);  // int8 pools: s0 encoded at scale 1/127
    for (size_t i = 0; i < sum_n; ++i) codes0[i] = static_cast<uint8_t>(attn::i8_encode(s0[i], 1.f / 127));
    const auto qkv = rand_bf16(size_t(n) * width, rng, -2.f, 2.f);
    const auto qn = rand_bf16(D, rng, 0.5f, 1.5f), kn = rand_bf16(D, rng, 0.5f, 1.5f);
    std::vector<float> inv(c.rotary / 2);
    for (int i = 0; i < c.rotary / 2; ++i) inv[i] = std::pow(1e6f, -2.f * i / c.rotary);
    RopeParams rope;
    rope.rotary_dim = c.rotary;
    rope.inv_freq = inv.data();
    AttnPolicy pol;
    pol.kind = c.kind;
    pol.topk_pages = 16;
    pol.local_pages = 2;

    struct Run {
      Buffer k, v, sum, q, out, sel, cnt, scale;
    };
    auto run = [&](Backend& b, bool profile) {
      Run r{dev_bf16(b, k0, {pages, c.hkv, P, D}), dev_bf16(b, v0, {pages, c.hkv, P, D}),
            c.i8 ? Buffer(DType::U8, {pages, c.hkv, D}, b) : dev_bf16(b, s0, {pages, c.hkv, D}),
            Buffer(DType::BF16, {n, c.hq, D}, b), Buffer(DType::BF16, {n, c.hq, D}, b),
            Buffer(DType::I32, {S, c.hkv, max_pages}, b), Buffer(DType::I32, {S, c.hkv}, b),
            test::dev_f32(b, std::vector<float>(size_t(pages) * c.hkv, 1.f), {pages, c.hkv})};
      if (c.i8) b.upload(r.sum, codes0.data());
      test::poison(b, r.q);
      test::poison(b, r.out);
      Buffer g_qkv = dev_bf16(b, qkv, {n, width}), g_qn = dev_bf16(b, qn, {D}), g_kn = dev_bf16(b, kn, {D});
      Buffer g_slots = dev_i32(b, slots, {n}), g_pos = dev_i32(b, pos, {n});
      Buffer g_qs = dev_i32(b, q_start, {S + 1}), g_ctx = dev_i32(b, std::vector<int32_t>(c.ctx.begin(), c.ctx.end()), {S});
      Buffer g_tab = dev_i32(b, table, {S, max_pages});
      AttnBatch batch{S, max_pages, g_qs, g_ctx, g_tab, Tensor()};
      PageSelection sel{r.sel, r.cnt};
      if (profile) cuda_profile(b, true);
      b.qkv_attention(g_qkv, c.qk_norm ? &g_qn.view() : nullptr, c.qk_norm ? &g_kn.view() : nullptr, 1e-6f, g_pos,
                      rope, KvLayer{r.k, r.v, r.sum, c.i8 ? r.scale.view() : Tensor()}, g_slots, r.q, batch, pol,
                      1.f / std::sqrt(float(D)), r.out,
                      &sel);
      b.synchronize();
      if (profile) {
        EXPECT_NE(cuda_profile_json(b).find("with the page summaries"), std::string::npos)
            << "the attention kernel did not write the summaries";
        cuda_profile(b, false);
      }
      return r;
    };
    const Run fused = run(*fus, true), separate = run(*sep, false);
    EXPECT_EQ(host_bf16(*fus, fused.q), host_bf16(*sep, separate.q)) << "q";
    EXPECT_EQ(host_bf16(*fus, fused.k), host_bf16(*sep, separate.k)) << "K pool";
    EXPECT_EQ(host_bf16(*fus, fused.v), host_bf16(*sep, separate.v)) << "V pool";
    auto codes = [](Backend& b, const Buffer& sum) {
      std::vector<uint8_t> h(sum.view().numel());
      b.download(h.data(), sum.view());
      return h;
    };
    if (c.i8) {
      EXPECT_EQ(codes(*fus, fused.sum), codes(*sep, separate.sum)) << "int8 summary codes";
      EXPECT_EQ(test::host_f32(*fus, fused.scale), test::host_f32(*sep, separate.scale)) << "int8 summary scales";
      EXPECT_NE(codes(*fus, fused.sum), codes0) << "no page was completed";
    } else {
      EXPECT_EQ(host_bf16(*fus, fused.sum), host_bf16(*sep, separate.sum)) << "summaries";
      EXPECT_NE(host_bf16(*fus, fused.sum), s0) << "no page was completed";
    }
    EXPECT_EQ(host_bf16(*fus, fused.out), host_bf16(*sep, separate.out)) << "attention output";
    EXPECT_EQ(test::host_i32(*fus, fused.sel), test::host_i32(*sep, separate.sel)) << "selected pages";
    EXPECT_EQ(test::host_i32(*fus, fused.cnt), test::host_i32(*sep, separate.cnt)) << "selected page counts";
    EXPECT_NE(host_bf16(*fus, fused.k), k0) << "no key was written";
  }
}

}  // namespace
}  // namespace kf

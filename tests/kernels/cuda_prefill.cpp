// CUDA tensor-core prefill attention (src/backend/cuda/prefill.cu) vs the CPU
// reference (cpu_attention) on the same bf16-exact pool: prompt chunks of 2 to
// 2000 rows with and without prior context, head_dim 64/128, GQA groups
// 1/2/4/8, page sizes 16/32, partial pages, and batches that mix chunks with
// decode rows under dense and blocktopk (decode rows must still follow the
// policy, chunk rows stay dense; no row may be left unwritten).
#include <algorithm>
#include <numeric>
#include <thread>

#include "backend/cpu/attention.h"
#include "kernels/cuda_test_util.h"

namespace kf {
namespace {

using test::rand_bf16;

struct Case {
  int n_heads = 8, n_kv_heads = 2, head_dim = 128, page_size = 16;
  std::vector<int> ctx;   // tokens in cache per sequence after this step
  std::vector<int> rows;  // query rows per sequence (the last rows of its context)
  AttnKind kind = AttnKind::Dense;
  int topk_pages = 4, local_pages = 1;
  uint32_t seed = 1;
};

std::string describe(const Case& c) {
  std::string s = fmt::format("{} Hq{} Hkv{} D{} P{} (ctx,rows)[", attn_kind_name(c.kind), c.n_heads,
                              c.n_kv_heads, c.head_dim, c.page_size);
  for (size_t i = 0; i < c.ctx.size(); ++i) s += fmt::format("{}({},{})", i ? "," : "", c.ctx[i], c.rows[i]);
  return s + "]";
}

// The CPU reference on all cores (the long chunks are O(T^2)).
void parallel(int64_t n, const std::function<void(int64_t)>& fn) {
  const int nt = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> ts;
  for (int t = 0; t < nt; ++t)
    ts.emplace_back([&, t] {
      for (int64_t i = t; i < n; i += nt) fn(i);
    });
  for (auto& th : ts) th.join();
}

void run_case(Backend& be, const Case& c) {
  SCOPED_TRACE(describe(c));
  ASSERT_EQ(c.ctx.size(), c.rows.size());
  std::mt19937 rng(c.seed);
  const int S = static_cast<int>(c.ctx.size()), Hq = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim,
            P = c.page_size;
  std::vector<int32_t> q_start(S + 1, 0), ctx(c.ctx.begin(), c.ctx.end());
  for (int s = 0; s < S; ++s) q_start[s + 1] = q_start[s] + c.rows[s];
  const int n_rows = q_start[S];
  int max_pages = 1, total_pages = 0;
  for (int s = 0; s < S; ++s) {
    max_pages = std::max(max_pages, (ctx[s] + P - 1) / P);
    total_pages += (ctx[s] + P - 1) / P;
  }
  const int n_pages = total_pages + 3;  // a few pages nobody owns
  std::vector<int32_t> perm(n_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> table(size_t(S) * max_pages, -1);  // [S, max_pages]
  for (int s = 0, next = 0; s < S; ++s)
    for (int i = 0; i < (ctx[s] + P - 1) / P; ++i) table[size_t(s) * max_pages + i] = perm[next++];

  const int64_t pool = int64_t(n_pages) * Hkv * P * D;  // [n_pages, Hkv, P, D]
  auto k = rand_bf16(pool, rng), v = rand_bf16(pool, rng);
  auto sum = rand_bf16(size_t(n_pages) * Hkv * D, rng);       // [n_pages, Hkv, D]
  auto q = rand_bf16(size_t(n_rows) * Hq * D, rng, -2.f, 2.f);  // [n_rows, Hq, D]
  const float scale = 1.f / std::sqrt(float(D));
  AttnPolicy pol;
  pol.kind = c.kind;
  pol.topk_pages = c.topk_pages;
  pol.local_pages = c.local_pages;

  // CPU reference.
  Buffer ck(DType::F32, {n_pages, Hkv, P, D}), cv(DType::F32, {n_pages, Hkv, P, D}), cs(DType::F32, {n_pages, Hkv, D});
  std::copy(k.begin(), k.end(), ck.ptr<float>());
  std::copy(v.begin(), v.end(), cv.ptr<float>());
  std::copy(sum.begin(), sum.end(), cs.ptr<float>());
  Buffer cq(DType::F32, {n_rows, Hq, D}), cout(DType::F32, {n_rows, Hq, D});
  std::copy(q.begin(), q.end(), cq.ptr<float>());
  Buffer cqs(DType::I32, {S + 1}), cctx(DType::I32, {S}), ctab(DType::I32, {S, max_pages});
  std::copy(q_start.begin(), q_start.end(), cqs.ptr<int32_t>());
  std::copy(ctx.begin(), ctx.end(), cctx.ptr<int32_t>());
  std::copy(table.begin(), table.end(), ctab.ptr<int32_t>());
  CpuAttnWorkspace ws;
  cpu_attention(cq, KvLayer{ck, cv, cs}, AttnBatch{S, max_pages, cqs, cctx, ctab, {}}, pol, scale, cout, nullptr, ws,
                parallel);

  // GPU, output poisoned with NaN so an unwritten row fails.
  Buffer gk = test::dev_bf16(be, k, {n_pages, Hkv, P, D}), gv = test::dev_bf16(be, v, {n_pages, Hkv, P, D});
  Buffer gs = test::dev_bf16(be, sum, {n_pages, Hkv, D});
  Buffer gq = test::dev_bf16(be, q, {n_rows, Hq, D}), gout(DType::BF16, {n_rows, Hq, D}, be);
  test::poison(be, gout);
  Buffer gqs = test::dev_i32(be, q_start, {S + 1}), gctx = test::dev_i32(be, ctx, {S});
  Buffer gtab = test::dev_i32(be, table, {S, max_pages});
  be.attention(gq, KvLayer{gk, gv, gs}, AttnBatch{S, max_pages, gqs, gctx, gtab, {}}, pol, scale, gout, nullptr);

  const float* ref = cout.ptr<float>();
  auto got = test::host_bf16(be, gout);
  const double err = test::rel_l2(got, std::vector<float>(ref, ref + got.size()));
  EXPECT_LT(err, 1e-2) << "relative L2 error";
  // Per row: the worst row, so one bad tile cannot hide in a long batch.
  const int64_t W = int64_t(Hq) * D;
  int bad = 0;
  for (int r = 0; r < n_rows; ++r) {
    double num = 0, den = 0;
    for (int64_t i = r * W; i < (r + 1) * W; ++i) {
      num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
      den += double(ref[i]) * ref[i];
    }
    const double e = std::sqrt(num / std::max(den, 1e-12));
    if (!(e < 2e-2) && bad++ < 4) ADD_FAILURE() << "row " << r << ": relative L2 error " << e;
  }
  EXPECT_EQ(bad, 0) << "rows off the CPU reference";
}

struct CudaPrefill : ::testing::Test {
  void SetUp() override {
    KF_REQUIRE_CUDA();
    be = make_cuda_backend(0);
  }
  std::unique_ptr<Backend> be;
};

TEST_F(CudaPrefill, Shapes) {
  uint32_t seed = 10;
  for (int D : {64, 128})
    for (int P : {16, 32})
      for (int G : {1, 2, 4, 8}) {
        Case c;
        c.head_dim = D;
        c.page_size = P;
        c.n_kv_heads = 2;
        c.n_heads = 2 * G;
        // Whole prompts, chunks after prior context, partial pages, tile edges.
        c.ctx = {2, 64, 165, 300, 160, 17, 129};
        c.rows = {2, 64, 65, 300, 129, 3, 128};
        c.seed = seed++;
        run_case(*be, c);
      }
}

TEST_F(CudaPrefill, LongChunks) {
  Case c;  // one 2000-row prompt
  c.ctx = {2000};
  c.rows = {2000};
  run_case(*be, c);
  c.head_dim = 64;  // a chunk late in a long prompt, and a fresh one beside it
  c.page_size = 32;
  c.n_heads = 16;
  c.n_kv_heads = 2;
  c.ctx = {3000, 777};
  c.rows = {1000, 777};
  c.seed = 2;
  run_case(*be, c);
}

TEST_F(CudaPrefill, ManyRandomSequences) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 4; ++trial) {
    Case c;
    c.head_dim = trial % 2 ? 64 : 128;
    c.page_size = trial < 2 ? 16 : 32;
    c.n_kv_heads = 1 + trial % 3;
    c.n_heads = c.n_kv_heads * (1 << trial);
    for (int s = 0; s < 24; ++s) {
      const int rows = std::uniform_int_distribution<int>(0, 200)(rng);
      const int prior = std::uniform_int_distribution<int>(0, 1)(rng) ? std::uniform_int_distribution<int>(1, 500)(rng) : 0;
      c.rows.push_back(rows);
      c.ctx.push_back(std::max(1, rows + prior));
    }
    c.seed = 100 + trial;
    run_case(*be, c);
  }
}

TEST_F(CudaPrefill, MixedWithDecodeRows) {
  for (AttnKind kind : {AttnKind::Dense, AttnKind::BlockTopK}) {
    Case c;
    c.kind = kind;
    c.ctx = {300, 40, 50, 33, 700, 9, 2100, 5000};
    c.rows = {1, 7, 0, 33, 1, 9, 1500, 1};  // decode, chunk, empty, prompt, decode, prompt, chunk, decode
    run_case(*be, c);
    c.head_dim = 64;
    c.n_heads = 4;
    c.n_kv_heads = 4;
    c.page_size = 32;
    c.seed = 7;
    run_case(*be, c);
    // As many rows as sequences, one of them a chunk: the decode path serves it.
    c.ctx = {900, 37, 1200};
    c.rows = {1, 2, 0};
    c.seed = 8;
    run_case(*be, c);
  }
}

}  // namespace
}  // namespace kf

// CUDA paged attention vs the CPU reference (cpu_attention) on the same
// bf16-exact pool: dense decode, prefill chunks, local, blocktopk (the page
// selection must be identical) and the topk oracle, across GQA ratios,
// head_dim 64/128, page sizes 16/32, partial pages and contexts up to 32K.
#include <chrono>
#include <numeric>

#include "attn/summary.h"
#include "backend/cpu/attention.h"
#include "kernels/cuda_test_util.h"

namespace kf {
namespace {

using test::rand_bf16;

struct Case {
  int n_heads = 16, n_kv_heads = 8, head_dim = 128, page_size = 16;
  std::vector<int> ctx;   // tokens in cache per sequence after this step
  std::vector<int> rows;  // query rows per sequence (1 = decode); empty = all 1
  AttnKind kind = AttnKind::Dense;
  int topk_pages = 64, local_pages = 4;
  attn::SummaryKind summary = attn::SummaryKind::BF16;
  uint32_t seed = 1;
  // Per-sequence policies (AttnBatch::seq_policy); empty: every sequence has `kind`.
  std::vector<AttnPolicy> seq_policies;
  // The GPU pool gets this many extra pages before the used ones, so page ids
  // (and element offsets, past 2^31 with enough of them) are large.
  int64_t page_offset = 0;
};

std::string describe(const Case& c) {
  std::string s = fmt::format("{} Hq{} Hkv{} D{} P{} k{} l{} ctx[", attn_kind_name(c.kind), c.n_heads, c.n_kv_heads,
                              c.head_dim, c.page_size, c.topk_pages, c.local_pages);
  for (size_t i = 0; i < c.ctx.size(); ++i) s += fmt::format("{}{}", i ? "," : "", c.ctx[i]);
  return s + "]";
}

// Runs c on the GPU and on the CPU; returns the GPU output (as floats).
std::vector<float> run_case(Backend& be, const Case& c) {
  SCOPED_TRACE(describe(c));
  std::mt19937 rng(c.seed);
  const int S = static_cast<int>(c.ctx.size()), Hq = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim,
            P = c.page_size;
  std::vector<int> rows = c.rows.empty() ? std::vector<int>(S, 1) : c.rows;
  std::vector<int32_t> q_start(S + 1, 0), ctx(c.ctx.begin(), c.ctx.end());
  for (int s = 0; s < S; ++s) q_start[s + 1] = q_start[s] + rows[s];
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
  std::vector<int32_t> table(size_t(S) * max_pages, -1);
  for (int s = 0, next = 0; s < S; ++s)
    for (int i = 0; i < (ctx[s] + P - 1) / P; ++i) table[size_t(s) * max_pages + i] = perm[next++];

  const int64_t pool = int64_t(n_pages) * Hkv * P * D;
  auto k = rand_bf16(pool, rng), v = rand_bf16(pool, rng);
  auto sum = rand_bf16(size_t(n_pages) * Hkv * D, rng);
  auto q = rand_bf16(size_t(n_rows) * Hq * D, rng, -2.f, 2.f);
  const float scale = 1.f / std::sqrt(float(D));
  AttnPolicy pol;
  pol.kind = c.kind;
  pol.topk_pages = c.topk_pages;
  pol.local_pages = c.local_pages;

  // CPU reference.
  // int8 summaries: the same vectors encoded, each with its own scale.
  const bool i8 = c.summary == attn::SummaryKind::I8;
  std::vector<uint8_t> codes(sum.size());
  std::vector<float> scales(size_t(n_pages) * Hkv);
  for (size_t ph = 0; i8 && ph < scales.size(); ++ph) {
    float amax = 0.f;
    for (int d = 0; d < D; ++d) amax = std::max(amax, std::fabs(sum[ph * D + d]));
    scales[ph] = attn::i8_summary_scale(amax);
    for (int d = 0; d < D; ++d) codes[ph * D + d] = static_cast<uint8_t>(attn::i8_encode(sum[ph * D + d], scales[ph]));
  }
  Buffer ck(DType::F32, {n_pages, Hkv, P, D}), cv(DType::F32, {n_pages, Hkv, P, D});
  Buffer cs(i8 ? DType::U8 : DType::F32, {n_pages, Hkv, D}), css(DType::F32, {n_pages, Hkv});
  std::copy(k.begin(), k.end(), ck.ptr<float>());
  std::copy(v.begin(), v.end(), cv.ptr<float>());
  if (i8) {
    std::copy(codes.begin(), codes.end(), cs.ptr<uint8_t>());
    std::copy(scales.begin(), scales.end(), css.ptr<float>());
  } else {
    std::copy(sum.begin(), sum.end(), cs.ptr<float>());
  }
  Buffer cq(DType::F32, {n_rows, Hq, D}), cout(DType::F32, {n_rows, Hq, D});
  std::copy(q.begin(), q.end(), cq.ptr<float>());
  Buffer cqs(DType::I32, {S + 1}), cctx(DType::I32, {S}), ctab(DType::I32, {S, max_pages});
  std::copy(q_start.begin(), q_start.end(), cqs.ptr<int32_t>());
  std::copy(ctx.begin(), ctx.end(), cctx.ptr<int32_t>());
  std::copy(table.begin(), table.end(), ctab.ptr<int32_t>());
  Buffer csel(DType::I32, {S, Hkv, max_pages}), ccnt(DType::I32, {S, Hkv});
  PageSelection cpu_sel{csel, ccnt};
  CpuAttnWorkspace ws;
  std::vector<int32_t> seq_pol;
  for (const AttnPolicy& sp : c.seq_policies) {
    seq_pol.push_back(static_cast<int32_t>(sp.kind));
    seq_pol.push_back(sp.local_pages);
    seq_pol.push_back(sp.topk_pages);
  }
  Buffer cpol(DType::I32, {std::max(1, S * 3)});
  std::copy(seq_pol.begin(), seq_pol.end(), cpol.ptr<int32_t>());
  AttnBatch cb{S, max_pages, cqs, cctx, ctab, seq_pol.empty() ? Tensor() : cpol.view().rows(0, S * 3)};
  cpu_attention(cq, KvLayer{ck, cv, cs, i8 ? css.view() : Tensor()}, cb, pol, scale, cout, &cpu_sel, ws);

  // GPU: the same pages at ids shifted by page_offset.
  const int64_t off = c.page_offset, pool_pages = n_pages + off;
  Buffer gk(DType::BF16, {pool_pages, Hkv, P, D}, be), gv(DType::BF16, {pool_pages, Hkv, P, D}, be);
  Buffer gs(i8 ? DType::U8 : c.summary == attn::SummaryKind::BF16 ? DType::BF16 : DType::F32, {pool_pages, Hkv, D}, be);
  Buffer gss(DType::F32, {pool_pages, Hkv}, be);
  be.upload(gk.view().rows(off, n_pages), test::to_bf16(k).data());
  be.upload(gv.view().rows(off, n_pages), test::to_bf16(v).data());
  const std::vector<uint16_t> sum_bf16 = test::to_bf16(sum);
  if (i8) {
    be.upload(gs.view().rows(off, n_pages), codes.data());
    be.upload(gss.view().rows(off, n_pages), scales.data());
  } else if (c.summary == attn::SummaryKind::BF16) {
    be.upload(gs.view().rows(off, n_pages), sum_bf16.data());
  } else {
    be.upload(gs.view().rows(off, n_pages), sum.data());
  }
  std::vector<int32_t> gtable = table;
  for (int32_t& pg : gtable)
    if (pg >= 0) pg = static_cast<int32_t>(pg + off);
  Buffer gq = test::dev_bf16(be, q, {n_rows, Hq, D}), gout(DType::BF16, {n_rows, Hq, D}, be);
  test::poison(be, gout);
  Buffer gqs = test::dev_i32(be, q_start, {S + 1}), gctx = test::dev_i32(be, ctx, {S});
  Buffer gtab = test::dev_i32(be, gtable, {S, max_pages});
  Buffer gpol = test::dev_i32(be, seq_pol.empty() ? std::vector<int32_t>(3, 0) : seq_pol, {std::max(1, S * 3)});
  Buffer gsel(DType::I32, {S, Hkv, max_pages}, be), gcnt(DType::I32, {S, Hkv}, be);
  PageSelection gpu_sel{gsel, gcnt};
  AttnBatch gb{S, max_pages, gqs, gctx, gtab, seq_pol.empty() ? Tensor() : gpol.view().rows(0, S * 3)};
  be.attention(gq, KvLayer{gk, gv, gs, i8 ? gss.view() : Tensor()}, gb, pol, scale, gout, &gpu_sel);

  std::vector<float> ref(cout.ptr<float>(), cout.ptr<float>() + cout.view().numel());
  auto got = test::host_bf16(be, gout);
  const double err = test::rel_l2(got, ref), maxd = test::max_abs_diff(got, ref);
  EXPECT_LT(err, 1e-2) << "relative L2 error";
  EXPECT_LT(maxd, 0.02 * test::max_abs(ref) + 1e-3) << "max abs error";

  auto g_cnt = test::host_i32(be, gcnt), g_pages = test::host_i32(be, gsel);
  int mismatches = 0;
  for (int s = 0; s < S; ++s)
    for (int h = 0; h < Hkv; ++h) {
      const size_t pair = size_t(s) * Hkv + h;
      const int n = ccnt.ptr<int32_t>()[pair];
      if (g_cnt[pair] != n) {
        if (mismatches++ < 4) ADD_FAILURE() << "seq " << s << " head " << h << ": " << g_cnt[pair] << " pages, CPU " << n;
        continue;
      }
      for (int i = 0; i < max_pages; ++i)
        if (g_pages[pair * max_pages + i] - (i < n ? off : 0) != csel.ptr<int32_t>()[pair * max_pages + i]) {
          if (mismatches++ < 4)
            ADD_FAILURE() << "seq " << s << " head " << h << " entry " << i << ": page "
                          << g_pages[pair * max_pages + i] << ", CPU " << csel.ptr<int32_t>()[pair * max_pages + i];
          break;
        }
    }
  EXPECT_EQ(mismatches, 0) << "page selections differ from the CPU reference";
  return got;
}

// A case of one head shape and policy (contexts, seed and the rest to fill in).
struct Shape {
  int D, P, hq, hkv;
};
Case case_of(Shape sh, AttnKind kind, int topk_pages, int local_pages) {
  Case c;
  c.kind = kind;
  c.head_dim = sh.D;
  c.page_size = sh.P;
  c.n_heads = sh.hq;
  c.n_kv_heads = sh.hkv;
  c.topk_pages = topk_pages;
  c.local_pages = local_pages;
  return c;
}

// Per-sequence policies for mixed batches: dense, block top-k k 3 local 2,
// local 1, block top-k k 8 local 4.
struct MixedPolicies {
  AttnPolicy dense, topk3, local1, topk8;
};
MixedPolicies mixed_policies() {
  MixedPolicies m;
  m.topk3.kind = AttnKind::BlockTopK;
  m.topk3.topk_pages = 3;
  m.topk3.local_pages = 2;
  m.local1.kind = AttnKind::Local;
  m.local1.local_pages = 1;
  m.topk8.kind = AttnKind::BlockTopK;
  m.topk8.topk_pages = 8;
  m.topk8.local_pages = 4;
  return m;
}

struct CudaAttention : ::testing::Test {
  void SetUp() override {
    KF_REQUIRE_CUDA();
    be = make_cuda_backend(0);
  }
  std::unique_ptr<Backend> be;
};

TEST_F(CudaAttention, DenseDecodeShapes) {
  uint32_t seed = 10;
  for (int D : {64, 128})
    for (int P : {16, 32})
      for (auto [hq, hkv] : {std::pair{8, 8}, std::pair{16, 8}, std::pair{12, 4}, std::pair{32, 4}, std::pair{9, 3}}) {
        Case c;
        c.n_heads = hq;
        c.n_kv_heads = hkv;
        c.head_dim = D;
        c.page_size = P;
        c.ctx = {1, 15, 16, 17, 100, 1000, 4097};
        c.seed = seed++;
        run_case(*be, c);
      }
}

TEST_F(CudaAttention, DenseLongContexts) {
  Case c;  // the benchmark shape: Hq 16, Hkv 8, D 128, P 16
  c.ctx = {16384, 32768, 5};
  run_case(*be, c);
  c.page_size = 32;
  c.head_dim = 64;
  c.ctx = {32768, 20000};
  run_case(*be, c);
}

TEST_F(CudaAttention, PrefillAndDecodeMixed) {
  for (AttnKind kind : {AttnKind::Dense, AttnKind::BlockTopK, AttnKind::Local, AttnKind::TopK}) {
    Case c;
    c.kind = kind;
    c.topk_pages = 2;
    c.local_pages = 1;
    c.ctx = {300, 40, 50, 33, 700, 9};
    c.rows = {1, 7, 0, 33, 1, 9};  // decode, chunk continuing a prompt, empty, whole prompts
    run_case(*be, c);
    c.head_dim = 64;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.page_size = 32;
    c.seed = 7;
    run_case(*be, c);
    // As many rows as sequences, yet not one each: the fused sparse path must
    // still serve the two-row sequence densely.
    c.ctx = {900, 37, 1200};
    c.rows = {1, 2, 0};
    c.seed = 8;
    run_case(*be, c);
  }
}

TEST_F(CudaAttention, BlockTopKSelectionMatchesCpu) {
  uint32_t seed = 100;
  for (int D : {64, 128})
    for (int P : {16, 32})
      for (attn::SummaryKind sk : {attn::SummaryKind::BF16, attn::SummaryKind::F32, attn::SummaryKind::I8}) {
        Case c;
        c.kind = AttnKind::BlockTopK;
        c.head_dim = D;
        c.page_size = P;
        c.n_heads = D == 64 ? 8 : 16;
        c.n_kv_heads = D == 64 ? 2 : 8;
        c.summary = sk;
        c.ctx = {100, 1000, 1100, 4000, 16384, 1, 16 * P};
        c.seed = seed++;
        run_case(*be, c);
        c.topk_pages = 8;
        c.local_pages = 1;
        run_case(*be, c);
      }
}

TEST_F(CudaAttention, BlockTopKLong) {
  Case c;
  c.kind = AttnKind::BlockTopK;
  c.ctx = {32768, 16384, 32000};
  run_case(*be, c);
  c.summary = attn::SummaryKind::I8;
  run_case(*be, c);
}

TEST_F(CudaAttention, LocalAndOracleTopK) {
  for (int P : {16, 32}) {
    Case c;
    c.page_size = P;
    c.kind = AttnKind::Local;
    c.ctx = {1, 64, 300, 3000};
    run_case(*be, c);
    c.kind = AttnKind::TopK;
    c.topk_pages = 8;
    c.local_pages = 2;
    c.ctx = {100, 300, 2000, 4100};
    run_case(*be, c);
  }
}

// Query groups of 4 and 8 (Qwen3-8B, Qwen3-32B shapes) take the tensor-core
// warp state in every kernel: split-K dense, the fused sparse kernel, the
// token-masked oracle, prefill chunks beside decode rows, mixed policies.
TEST_F(CudaAttention, TensorCoreGroupsAllPolicies) {
  const MixedPolicies m = mixed_policies();
  const AttnPolicy &dense = m.dense, &topk3 = m.topk3;
  uint32_t seed = 300;
  for (auto [hq, hkv] : {std::pair{32, 8}, std::pair{64, 8}, std::pair{16, 2}})
    for (AttnKind kind : {AttnKind::Dense, AttnKind::BlockTopK, AttnKind::Local, AttnKind::TopK}) {
      Case c;
      c.kind = kind;
      c.n_heads = hq;
      c.n_kv_heads = hkv;
      c.topk_pages = 8;
      c.local_pages = 2;
      c.ctx = {1, 17, 300, 4100, 9000};
      c.seed = seed++;
      run_case(*be, c);
      c.ctx = {300, 40, 50, 700};
      c.rows = {1, 7, 0, 33};
      c.seed = seed++;
      run_case(*be, c);
      if (kind != AttnKind::Dense) continue;
      c.head_dim = 64;
      c.page_size = 32;
      c.ctx = {5000, 700, 16384, 17};
      c.rows = {};
      c.seq_policies = {dense, topk3, dense, topk3};
      c.seed = seed++;
      run_case(*be, c);
    }
}

// Requests with different policies share one batch: each sequence follows its
// own (dense, blocktopk with its k, local), in pure decode batches (the fused
// sparse kernel beside the split-K one) and next to prefill chunks.
TEST_F(CudaAttention, MixedPoliciesPerSequence) {
  const auto [dense, topk3, local1, topk8] = mixed_policies();
  for (int D : {64, 128}) {
    Case c;
    c.head_dim = D;
    c.n_heads = D == 64 ? 8 : 16;
    c.n_kv_heads = D == 64 ? 2 : 8;
    c.ctx = {5000, 700, 16384, 300, 2000, 17};
    c.seq_policies = {dense, topk3, local1, topk8, dense, topk3};
    run_case(*be, c);  // pure decode
    c.rows = {1, 7, 1, 300, 0, 1};
    c.seed = 3;
    run_case(*be, c);  // with prefill chunks
  }
}

// The fused sparse kernel copies the pages it reads whatever the scores say
// (page 0, the local window) to shared memory while it ranks the others
// (KINFER_ATTN_STAGE=1, the default). Only where the bytes come from
// changes, not the order of the sums: every output must equal, bit for bit,
// the kernel reading them from the pool (KINFER_ATTN_STAGE=0). Windows
// larger than the staging space (P 32, D 128: 3 page slots of 16 KB), local
// policies, the topk oracle's masks, partial last pages, short contexts
// that read every page, query groups of 1-8.
TEST_F(CudaAttention, StagedKnownPagesChangeNoBit) {
  std::unique_ptr<Backend> pool_reads = test::cuda_backend_with("KINFER_ATTN_STAGE", "0");
  uint32_t seed = 500;
  for (Shape sh : {Shape{128, 16, 16, 8}, Shape{128, 32, 16, 8}, Shape{128, 16, 8, 8}, Shape{128, 16, 64, 8},
                   Shape{64, 16, 8, 2}, Shape{64, 32, 32, 8}})
    for (AttnKind kind : {AttnKind::BlockTopK, AttnKind::Local, AttnKind::TopK})
      for (int local : {1, 4, 12}) {
        Case c = case_of(sh, kind, 8, local);
        c.ctx = {1, 5 * sh.P, 40 * sh.P + 3, 100 * sh.P - 1, 2000};
        c.summary = (seed & 1) ? attn::SummaryKind::I8 : attn::SummaryKind::BF16;
        c.seed = seed++;
        const std::vector<float> staged = run_case(*be, c);
        EXPECT_EQ(staged, run_case(*pool_reads, c)) << describe(c) << ": staged vs pool reads";
      }
}

// KINFER_ATTN_BULK=1: the dense decode kernel streams its tiles through a
// ring of shared memory per warp by bulk copies (by default only where a
// warp has enough tiles); =0: it loads them into registers. The same tiles
// in the same order: outputs bit-equal, and the CPU's within bf16 error
// (run_case). Dense decode with splits, lists of selecting
// policies served by the split-K kernel (beside prefill chunks, mixed
// policies), the topk oracle's masks, P 16/32 (two tiles a page), D 64/128,
// query groups 1-8, partial last pages.
TEST_F(CudaAttention, BulkCopiedDenseTilesChangeNoBit) {
  std::unique_ptr<Backend> bulk = test::cuda_backend_with("KINFER_ATTN_BULK", "1");
  std::unique_ptr<Backend> regs = test::cuda_backend_with("KINFER_ATTN_BULK", "0");
  EXPECT_NE(regs->name().find("with KINFER_ATTN_BULK=0"), std::string::npos) << regs->name();
  EXPECT_EQ(be->name().find("KINFER_ATTN_BULK"), std::string::npos) << be->name();
  const MixedPolicies m = mixed_policies();
  const AttnPolicy &dense = m.dense, &topk3 = m.topk3;
  uint32_t seed = 700;
  for (Shape sh : {Shape{128, 16, 16, 8}, Shape{128, 32, 32, 8}, Shape{128, 16, 64, 8}, Shape{64, 16, 8, 8},
                   Shape{64, 32, 12, 4}})
    for (AttnKind kind : {AttnKind::Dense, AttnKind::BlockTopK, AttnKind::TopK}) {
      Case c = case_of(sh, kind, 4, 2);
      c.ctx = {1, 17, 16 * sh.P + 5, 4000, 300};
      c.rows = kind == AttnKind::Dense ? std::vector<int>{} : std::vector<int>{1, 17, 1, 1, 9};
      c.seed = seed++;
      EXPECT_EQ(run_case(*regs, c), run_case(*bulk, c)) << describe(c) << ": bulk copies vs register loads";
      if (kind != AttnKind::Dense) continue;
      c.seq_policies = {dense, topk3, dense, topk3, dense};
      c.seed = seed++;
      EXPECT_EQ(run_case(*regs, c), run_case(*bulk, c)) << describe(c) << ": mixed policies";
    }
}

// Contexts of at most 256 pages can take the sparse warp kernel: one warp
// per (sequence, KV head) selects and attends alone. Forced on
// (KINFER_SPARSE_WARP=1) and off (=0), every case must list exactly the CPU's
// pages and stay within bf16 error of its output (run_case). By default the
// warp kernel serves only batches of many pairs with short chains
// (warp_sparse): the default's output equals the block kernel's bit for bit
// on these small batches, the warp kernel's on 1,100 (and 300) short
// sequences, where its grid needs more than one wave of free-register blocks. Head
// dims 64/128, pages of 16/32 slots, query groups 1-8 (SmolLM2's 9/3), k 2-64,
// bf16/f32/int8 summaries, partial pages, contexts of 1 slot to 256 pages,
// a two-row sequence in a pure decode batch, per-sequence policies.
TEST_F(CudaAttention, SparseWarpKernelMatchesCpu) {
  std::unique_ptr<Backend> warp = test::cuda_backend_with("KINFER_SPARSE_WARP", "1");
  std::unique_ptr<Backend> block = test::cuda_backend_with("KINFER_SPARSE_WARP", "0");
  const attn::SummaryKind kinds[] = {attn::SummaryKind::BF16, attn::SummaryKind::I8, attn::SummaryKind::F32};
  uint32_t seed = 900;
  for (Shape sh : {Shape{64, 16, 9, 3}, Shape{64, 32, 8, 2}, Shape{128, 16, 16, 8}, Shape{128, 16, 64, 8},
                   Shape{128, 32, 8, 8}})
    for (AttnKind kind : {AttnKind::BlockTopK, AttnKind::Local})
      for (auto [k, local] : {std::pair{2, 1}, std::pair{8, 4}, std::pair{64, 4}}) {
        if (kind == AttnKind::Local && k != 2) continue;  // k does not matter to local
        Case c = case_of(sh, kind, k, local);
        c.ctx = {1, 15, 16, 17, 5 * sh.P, 40 * sh.P + 3, 100 * sh.P - 1, 256 * sh.P};
        c.summary = kinds[seed % 3];
        c.seed = seed++;
        run_case(*warp, c);
        EXPECT_EQ(run_case(*be, c), run_case(*block, c)) << describe(c) << ": the default's kernel";
      }
  // Many short sequences: the default takes the warp kernel, in its variant
  // for grids past one wave (registers capped for more blocks an SM).
  for (Shape sh : {Shape{64, 16, 9, 3}, Shape{128, 16, 16, 8}}) {
    Case c = case_of(sh, AttnKind::BlockTopK, 2, 1);
    for (int i = 0; i < (sh.D == 64 ? 1100 : 300); ++i) c.ctx.push_back(1 + (i * 37) % 300);
    c.seed = seed++;
    EXPECT_EQ(run_case(*be, c), run_case(*warp, c)) << describe(c) << ": the default's kernel";
  }
  const auto [dense, topk3, local1, topk8] = mixed_policies();
  for (int D : {64, 128}) {
    Case c = case_of(Shape{D, 16, D == 64 ? 9 : 16, D == 64 ? 3 : 8}, AttnKind::BlockTopK, 2, 1);
    c.ctx = {900, 37, 1200};
    c.rows = {1, 2, 0};  // as many rows as sequences, not one each: the two-row one reads densely
    c.seed = seed++;
    run_case(*warp, c);
    c.rows = {};
    c.ctx = {3000, 700, 4096, 300, 2000, 17};
    c.seq_policies = {dense, topk3, local1, topk8, dense, topk3};
    c.seed = seed++;
    run_case(*warp, c);
  }
}

// Long contexts past the shared-memory candidate limit of block top-k (2,560+
// pages per sequence) in a pool whose element offsets pass 2^31: every offset
// must be computed in 64 bits.
TEST_F(CudaAttention, LongContextsInAPoolPast2To31Elements) {
  const int64_t page_elems = 8 * 16 * 128;  // Hkv 8, P 16, D 128
  for (AttnKind kind : {AttnKind::Dense, AttnKind::BlockTopK, AttnKind::Local, AttnKind::TopK}) {
    Case c;
    c.kind = kind;
    c.ctx = {41000, 40960, 1234, 41007};
    c.page_offset = (int64_t{1} << 31) / page_elems + 17;
    if (kind == AttnKind::TopK) c.ctx = {41000, 300};  // the oracle ranks every token: keep it short
    run_case(*be, c);
  }
}

}  // namespace
}  // namespace kf

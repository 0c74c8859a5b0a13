// The CUDA token kernels vs the CPU backend: penalties over histories read
// back from the token pool (bitwise equal: the same float operations in the
// same per-token order), the step's input tokens taken from the previous
// step's samples and recorded in the pool, and row copies.
#include <algorithm>
#include <numeric>
#include <random>

#include "kernels/cuda_test_util.h"

namespace kf {
namespace {

struct CudaTokens : ::testing::Test {
  void SetUp() override {
    KF_REQUIRE_CUDA();
    gpu = make_cuda_backend(0);
    cpu = make_cpu_backend(1);
  }
  std::unique_ptr<Backend> gpu, cpu;
  std::mt19937 rng{77};
};

TEST_F(CudaTokens, PenaltiesMatchCpuBitwise) {
  for (int vocab : {97, 49152, 151936}) {
    const int P = 16, n_pages = 300, S = 6, max_pages = 40;
    std::vector<int32_t> pool(size_t(n_pages) * P);
    // Few distinct tokens so repeats (and the frequency counts) are common.
    for (int32_t& t : pool) t = static_cast<int32_t>(rng() % std::min(vocab, 600));
    std::vector<int32_t> table(size_t(S) * max_pages, -1), ctx(S), q_start(S + 1);
    std::vector<int32_t> perm(n_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int s = 0, next = 0; s < S; ++s) {
      ctx[s] = 1 + static_cast<int>(rng() % (max_pages * P - 1));
      for (int i = 0; i < (ctx[s] + P - 1) / P; ++i) table[size_t(s) * max_pages + i] = perm[next++ % n_pages];
      q_start[s + 1] = s + 1;
    }
    // Logits rows name their sequences (two rows share one, as Best-of-N siblings' parents do not, but tests may).
    const int rows = 8;
    std::vector<int32_t> seq = {0, 1, 2, 3, 4, 5, 2, 0}, plen(rows);
    std::vector<float> rep(rows), pres(rows), freq(rows);
    for (int r = 0; r < rows; ++r) {
      plen[r] = static_cast<int32_t>(rng() % (ctx[seq[r]] + 1));
      rep[r] = r % 4 == 0 ? 1.f : 0.8f + 0.1f * (r % 5);
      pres[r] = r % 3 == 0 ? 0.f : 0.5f;
      freq[r] = r % 2 == 0 ? 0.25f : 0.f;
    }
    rep[5] = 1.f, pres[5] = 0.f, freq[5] = 0.f;  // a row with no penalty stays untouched
    std::vector<float> logits(size_t(rows) * vocab);
    for (float& l : logits) l = std::uniform_real_distribution<float>(-8.f, 8.f)(rng);

    std::vector<float> out[2];
    for (int b = 0; b < 2; ++b) {
      Backend& be = b == 0 ? *gpu : *cpu;
      Buffer lg = test::dev_f32(be, logits, {rows, vocab});
      Buffer bpool = test::dev_i32(be, pool, {n_pages, P}), btab = test::dev_i32(be, table, {S, max_pages});
      Buffer bctx = test::dev_i32(be, ctx, {S}), bqs = test::dev_i32(be, q_start, {S + 1});
      Buffer bseq = test::dev_i32(be, seq, {rows}), bplen = test::dev_i32(be, plen, {rows});
      Buffer brep = test::dev_f32(be, rep, {rows}), bpres = test::dev_f32(be, pres, {rows}),
             bfreq = test::dev_f32(be, freq, {rows});
      AttnBatch batch{S, max_pages, bqs, bctx, btab, {}};
      be.apply_penalties(lg, PenaltyArgs{bseq, bplen, brep, bpres, bfreq}, batch, bpool);
      out[b] = test::host_f32(be, lg);
    }
    EXPECT_EQ(out[0], out[1]) << "vocab " << vocab;
    EXPECT_EQ(std::vector<float>(out[0].begin() + 5 * vocab, out[0].begin() + 6 * vocab),
              std::vector<float>(logits.begin() + 5 * vocab, logits.begin() + 6 * vocab));
    EXPECT_NE(out[0], logits);
  }
}

TEST_F(CudaTokens, ResolveTokensAndCopyRows) {
  const int P = 16, n_pages = 50, n = 40;
  std::vector<int32_t> prev(30), ids(n), slots(n), pool(size_t(n_pages) * P, -9), free_slots(n_pages * P);
  for (int32_t& t : prev) t = static_cast<int32_t>(rng() % 1000);
  std::iota(free_slots.begin(), free_slots.end(), 0);
  std::shuffle(free_slots.begin(), free_slots.end(), rng);  // distinct slots, as a step's rows have
  for (int i = 0; i < n; ++i) {
    ids[i] = i % 3 == 0 ? -static_cast<int32_t>(rng() % prev.size()) - 1 : static_cast<int32_t>(rng() % 1000);
    slots[i] = i == 7 ? -1 : i == 9 ? n_pages * P + 5 : free_slots[i];
  }
  std::vector<int32_t> got_ids[2], got_pool[2];
  for (int b = 0; b < 2; ++b) {
    Backend& be = b == 0 ? *gpu : *cpu;
    Buffer bids = test::dev_i32(be, ids, {n}), bprev = test::dev_i32(be, prev, {int64_t(prev.size())});
    Buffer bslots = test::dev_i32(be, slots, {n}), bpool = test::dev_i32(be, pool, {n_pages, P});
    be.resolve_tokens(bids, bprev, bslots, bpool);
    Buffer src = test::dev_i32(be, {3, 8, 8, 20}, {4}), dst = test::dev_i32(be, {40, 41, 8, 2}, {4});
    be.copy_rows(bpool, src, dst);
    got_ids[b] = test::host_i32(be, bids);
    got_pool[b] = test::host_i32(be, bpool);
  }
  EXPECT_EQ(got_ids[0], got_ids[1]);
  EXPECT_EQ(got_pool[0], got_pool[1]);
  for (int i = 0; i < n; ++i) EXPECT_EQ(got_ids[0][i], ids[i] < 0 ? prev[-ids[i] - 1] : ids[i]);
}

}  // namespace
}  // namespace kf

// CUDA Backend::sample against the CPU backend (kf::Sampler) on bf16-exact
// random logits: same token for the same draw u, for greedy and every mix of
// temperature / top-k / top-p / min-p. The GPU works in fp32 with fixed-point
// masses, the CPU in fp64, so a row whose draw (or top-p cut, or min-p cut)
// sits within a tiny tolerance of a boundary may differ: such rows are
// detected by an fp64 brute force, skipped and counted (they must be rare).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <tuple>

#include "kernels/cuda_test_util.h"

namespace kf {
namespace {

struct Mix {
  float temp;
  int top_k;
  float top_p, min_p;
};

std::vector<Mix> all_mixes() {
  std::vector<Mix> v;
  for (float t : {0.f, 0.6f, 1.f, 1.5f})
    for (int k : {0, 1, 20, 1000})
      for (float p : {1.f, 0.95f, 0.5f})
        for (float mp : {0.f, 0.05f}) v.push_back({t, k, p, mp});
  return v;
}

// Logits of one row, rounded to bf16: N(0, spread) with a few boosted tokens
// (peaked rows) and repeated values (bf16 ties are common anyway).
std::vector<float> row_logits(int vocab, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 0.5f + 3.f * (rng() % 4) / 3.f);
  std::vector<float> l(vocab);
  for (float& x : l) x = nd(rng);
  for (int i = 0; i < 5; ++i) l[rng() % vocab] += 8.f * (rng() % 3);
  for (float& x : l) x = bf16_to_f32(f32_to_bf16(x));
  return l;
}

// Rows that reach the top-k path's edges, rounded to bf16.
enum class Kind { Normal, Coarse, Flat, Plateau, Ramp, FewFinite };
std::vector<float> kind_row(Kind kind, int vocab, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 2.f);
  std::vector<float> l(vocab);
  switch (kind) {
    case Kind::Normal:
      l = row_logits(vocab, rng);
      break;
    case Kind::Coarse:  // multiples of 0.5: many ties everywhere
      for (float& x : l) x = std::round(nd(rng) * 2.f) / 2.f;
      break;
    case Kind::Flat:  // more ties than the shared-memory ranking holds
      for (float& x : l) x = 1.25f;
      break;
    case Kind::Plateau:  // 100 equal top logits over a normal row
      for (float& x : l) x = nd(rng);
      for (int i = 0; i < 100; ++i) l[rng() % vocab] = 12.f;
      break;
    case Kind::Ramp:  // ascending with noise: every later sub-chunk beats the ones before
      for (int i = 0; i < vocab; ++i) l[i] = 8.f * i / vocab + 0.01f * nd(rng);
      break;
    case Kind::FewFinite:  // 1..40 finite logits, the rest -inf
      for (float& x : l) x = -INFINITY;
      for (int i = 0, m = 1 + static_cast<int>(rng() % 40); i < m; ++i) l[rng() % vocab] = nd(rng);
  }
  for (float& x : l) x = bf16_to_f32(f32_to_bf16(x));
  return l;
}

// fp64 brute force of Sampler's kept set and draw: true when u, the top-p cut
// or the min-p cut lies within tol (relative to the kept mass) of a boundary.
bool near_boundary(const float* l, int vocab, const Mix& m, double u, double tol) {
  if (m.temp == 0.f || m.top_k == 1) return false;
  const double mx = *std::max_element(l, l + vocab);
  std::vector<double> p(vocab);
  for (int i = 0; i < vocab; ++i) p[i] = std::exp((l[i] - mx) / m.temp);
  std::vector<int> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  int n = m.top_k > 0 && m.top_k < vocab ? m.top_k : vocab;
  if (m.top_p < 1.f) {
    double total = 0, cum = 0;
    for (int j = 0; j < n; ++j) total += p[order[j]];
    const double target = m.top_p * total;
    int keep = n;
    for (int j = 0; j < n; ++j) {
      if (std::fabs(cum - target) < tol * total) return true;
      cum += p[order[j]];
      if (cum >= target) {
        keep = j + 1;
        break;
      }
    }
    if (std::fabs(cum - target) < tol * total) return true;
    n = keep;
  }
  std::vector<int> kept;
  for (int j = 0; j < n; ++j) {
    if (m.min_p > 0.f && std::fabs(p[order[j]] - m.min_p) < tol * m.min_p) return true;
    if (p[order[j]] >= m.min_p) kept.push_back(order[j]);
  }
  std::sort(kept.begin(), kept.end());
  double total = 0, cum = 0;
  for (int id : kept) total += p[id];
  for (int id : kept) {
    if (std::fabs(cum - u * total) < tol * total) return true;
    cum += p[id];
  }
  return false;
}

// The GPU's tokens g against the CPU's c, row by row: a row that differs
// where its draw or a cut lies within 1e-5 of an fp rounding boundary
// (near_boundary) is skipped and counted in `skipped`; any other difference
// fails, labelled by where(r). Returns the rows that agree.
template <typename Where>
int agree_with_cpu(const std::vector<float>& logits, int vocab, const std::vector<Mix>& mix,
                   const std::vector<float>& u, const std::vector<int32_t>& g, const std::vector<int32_t>& c,
                   int& skipped, Where where) {
  int agreed = 0;
  for (size_t r = 0; r < g.size(); ++r) {
    const Mix& m = mix[r];
    if (g[r] != c[r] && near_boundary(&logits[r * vocab], vocab, m, u[r], 1e-5)) {
      ++skipped;
      continue;
    }
    ++agreed;
    EXPECT_EQ(g[r], c[r]) << where(static_cast<int>(r)) << " row " << r << " T " << m.temp << " top_k " << m.top_k
                          << " top_p " << m.top_p << " min_p " << m.min_p << " u " << u[r];
  }
  return agreed;
}

// Identity logits rows and no forced tokens for `rows` sampled rows.
struct Rows {
  Buffer row, forced;
  Rows(Backend& b, int rows) {
    std::vector<int32_t> id(rows), none(rows, -1);
    for (int r = 0; r < rows; ++r) id[r] = r;
    row = test::dev_i32(b, id, {rows});
    forced = test::dev_i32(b, none, {rows});
  }
};

struct CudaSample : ::testing::Test {
  void SetUp() override {
    KF_REQUIRE_CUDA();
    gpu = make_cuda_backend(0);
    cpu = make_cpu_backend(1);
  }

  // Samples rows x vocab logits with per-row mixes and draws on both backends.
  void run(const std::vector<float>& logits, int rows, int vocab, const std::vector<Mix>& mix,
           const std::vector<float>& u, std::vector<int32_t>& got_gpu, std::vector<int32_t>& got_cpu) {
    got_gpu = tokens_on(*gpu, logits, rows, vocab, mix, u);
    got_cpu = tokens_on(*cpu, logits, rows, vocab, mix, u);
  }
  // The tokens backend b samples (bf16 logits on a GPU unless f32_on_gpu, f32 on the CPU).
  std::vector<int32_t> tokens_on(Backend& b, const std::vector<float>& logits, int rows, int vocab,
                                 const std::vector<Mix>& mix, const std::vector<float>& u, bool f32_on_gpu = false) {
    std::vector<float> temp(rows), top_p(rows), min_p(rows);
    std::vector<int32_t> top_k(rows);
    for (int r = 0; r < rows; ++r)
      temp[r] = mix[r].temp, top_k[r] = mix[r].top_k, top_p[r] = mix[r].top_p, min_p[r] = mix[r].min_p;
    const bool on_gpu = &b != cpu.get() && !f32_on_gpu;
    Buffer lg(on_gpu ? DType::BF16 : DType::F32, {rows, vocab}, b);
    if (on_gpu) {
      std::vector<uint16_t> h = test::to_bf16(logits);
      b.upload(lg, h.data());
    } else {
      b.upload(lg, logits.data());
    }
    Buffer bt(DType::F32, {rows}, b), bk(DType::I32, {rows}, b), bp(DType::F32, {rows}, b), bm(DType::F32, {rows}, b),
        bu(DType::F32, {rows}, b), tok(DType::I32, {rows}, b);
    b.upload(bt, temp.data());
    b.upload(bk, top_k.data());
    b.upload(bp, top_p.data());
    b.upload(bm, min_p.data());
    b.upload(bu, u.data());
    std::vector<int32_t> out(rows, -7);
    b.upload(tok, out.data());
    const Rows rw(b, rows);
    SampleArgs a{rw.row.view(), bt.view(), bk.view(), bp.view(), bm.view(), bu.view(), rw.forced.view()};
    b.sample(lg, a, tok);
    b.download(out.data(), tok);
    return out;
  }

  std::unique_ptr<Backend> gpu, cpu;
  std::mt19937 rng{2024};
};

TEST_F(CudaSample, MatchesCpuSamplerForEveryMix) {
  const std::vector<Mix> mixes = all_mixes();
  int checked = 0, skipped = 0, greedy = 0;
  for (int vocab : {1000, 49152, 151936}) {
    size_t next = 0;
    for (int rows : {1, 7, 64, 33, 64}) {  // 169 rows per vocab: every mix at least once
      std::vector<float> logits;
      std::vector<Mix> mix(rows);
      std::vector<float> u(rows);
      std::uniform_real_distribution<float> uni(0.f, 1.f);
      for (int r = 0; r < rows; ++r) {
        auto l = row_logits(vocab, rng);
        logits.insert(logits.end(), l.begin(), l.end());
        mix[r] = mixes[next++ % mixes.size()];
        u[r] = std::min(uni(rng), 0.99999994f);
      }
      std::vector<int32_t> g, c;
      run(logits, rows, vocab, mix, u, g, c);
      for (const Mix& m : mix) greedy += m.temp == 0.f;
      checked +=
          agree_with_cpu(logits, vocab, mix, u, g, c, skipped, [&](int) { return fmt::format("vocab {}", vocab); });
    }
  }
  std::printf("[ sample   ] %d rows agree (%d greedy), %d skipped at an fp rounding boundary\n", checked, greedy,
              skipped);
  EXPECT_LE(skipped, 3);
}

TEST_F(CudaSample, ManyDrawsOnOneRow) {
  // 64 copies of one row with u spread over [0, 1): the whole CDF walk.
  const int vocab = 151936, rows = 64;
  auto l = row_logits(vocab, rng);
  for (Mix m : {Mix{1.f, 0, 0.95f, 0.f}, Mix{0.6f, 20, 1.f, 0.f}, Mix{1.5f, 1000, 0.5f, 0.05f}}) {
    std::vector<float> logits;
    std::vector<float> u(rows);
    for (int r = 0; r < rows; ++r) {
      logits.insert(logits.end(), l.begin(), l.end());
      u[r] = (r + 0.37f) / rows;
    }
    std::vector<int32_t> g, c;
    run(logits, rows, vocab, std::vector<Mix>(rows, m), u, g, c);
    int skipped = 0;
    agree_with_cpu(logits, vocab, std::vector<Mix>(rows, m), u, g, c, skipped, [](int) { return "one row"; });
    EXPECT_LE(skipped, 1);
  }
}

TEST_F(CudaSample, DeterministicAndBatchIndependent) {
  const int vocab = 49152, rows = 16;
  std::vector<float> logits;
  std::vector<Mix> mix(rows);
  std::vector<float> u(rows);
  const auto mixes = all_mixes();
  for (int r = 0; r < rows; ++r) {
    auto l = row_logits(vocab, rng);
    logits.insert(logits.end(), l.begin(), l.end());
    mix[r] = mixes[(r * 7 + 3) % mixes.size()];
    u[r] = (r + 0.5f) / rows;
  }
  std::vector<int32_t> first, again, c;
  run(logits, rows, vocab, mix, u, first, c);
  for (int rep = 0; rep < 3; ++rep) {
    run(logits, rows, vocab, mix, u, again, c);
    EXPECT_EQ(first, again);
  }
  // Row 5 alone gives the token it got inside the batch.
  std::vector<float> one(logits.begin() + 5 * vocab, logits.begin() + 6 * vocab);
  run(one, 1, vocab, {mix[5]}, {u[5]}, again, c);
  EXPECT_EQ(again[0], first[5]);
  // F32 logits on the GPU (same values) take the same path to the same tokens.
  Buffer lg(DType::F32, {rows, vocab}, *gpu);
  gpu->upload(lg, logits.data());
  std::vector<float> temp(rows), tp(rows), mp(rows);
  std::vector<int32_t> tk(rows);
  for (int r = 0; r < rows; ++r) temp[r] = mix[r].temp, tk[r] = mix[r].top_k, tp[r] = mix[r].top_p, mp[r] = mix[r].min_p;
  Buffer bt = test::dev_f32(*gpu, temp, {rows}), bp = test::dev_f32(*gpu, tp, {rows}),
         bm = test::dev_f32(*gpu, mp, {rows}), bu = test::dev_f32(*gpu, u, {rows});
  Buffer bk = test::dev_i32(*gpu, tk, {rows}), tok(DType::I32, {rows}, *gpu);
  const Rows rw(*gpu, rows);
  gpu->sample(lg, SampleArgs{rw.row.view(), bt.view(), bk.view(), bp.view(), bm.view(), bu.view(), rw.forced.view()},
              tok);
  EXPECT_EQ(test::host_i32(*gpu, tok), first);
  // Sampled rows read the logits row they are given (Best-of-N siblings share
  // their parent's), and a forced row emits its token without a draw.
  std::vector<int32_t> lrow(rows), forced(rows, -1);
  for (int r = 0; r < rows; ++r) lrow[r] = (r * 5 + 2) % rows;
  forced[4] = 77;
  Buffer brow = test::dev_i32(*gpu, lrow, {rows}), bforced = test::dev_i32(*gpu, forced, {rows});
  std::vector<float> u2(rows);
  for (int r = 0; r < rows; ++r) u2[r] = u[lrow[r]];
  Buffer bu2 = test::dev_f32(*gpu, u2, {rows});
  std::vector<float> t2(rows), tp2(rows), mp2(rows);
  std::vector<int32_t> tk2(rows);
  for (int r = 0; r < rows; ++r) {
    const Mix& m = mix[lrow[r]];
    t2[r] = m.temp, tk2[r] = m.top_k, tp2[r] = m.top_p, mp2[r] = m.min_p;
  }
  Buffer bt2 = test::dev_f32(*gpu, t2, {rows}), bp2 = test::dev_f32(*gpu, tp2, {rows}),
         bm2 = test::dev_f32(*gpu, mp2, {rows}), bk2 = test::dev_i32(*gpu, tk2, {rows});
  gpu->sample(lg, SampleArgs{brow.view(), bt2.view(), bk2.view(), bp2.view(), bm2.view(), bu2.view(), bforced.view()},
              tok);
  const std::vector<int32_t> got = test::host_i32(*gpu, tok);
  for (int r = 0; r < rows; ++r) EXPECT_EQ(got[r], r == 4 ? 77 : first[lrow[r]]) << "row " << r;
}

TEST_F(CudaSample, TopKPathEdgeCases) {
  // topk_kernel's edges: top_k 1..64; ties at the threshold (coarse values; a
  // flat row, where every chunk and the merge have more ties than fit the
  // shared-memory ranking); a plateau of equal top logits; fewer finite
  // logits than k (the rest -inf); vocabularies around the 4096-logit chunk.
  std::vector<Mix> mixes;
  for (float t : {0.f, 0.6f, 1.f})
    for (int k : {1, 2, 7, 20, 33, 64})
      for (float p : {1.f, 0.95f, 0.3f})
        for (float mp : {0.f, 0.05f}) mixes.push_back({t, k, p, mp});
  const int rows = static_cast<int>(mixes.size());
  int checked = 0, skipped = 0, vi = 0;
  for (int vocab : {37, 1000, 4096, 4097, 8191, 151936}) {
    std::vector<float> logits;
    std::vector<Mix> mix(rows);
    std::vector<float> u(rows);
    std::uniform_real_distribution<float> uni(0.f, 1.f);
    for (int r = 0; r < rows; ++r) {
      const Kind kinds[] = {Kind::Coarse, Kind::Flat, Kind::Plateau, Kind::FewFinite};
      const std::vector<float> l = kind_row(kinds[(r + vi) % 4], vocab, rng);
      logits.insert(logits.end(), l.begin(), l.end());
      mix[r] = mixes[(r * 7) % rows];
      u[r] = std::min(uni(rng), 0.99999994f);
    }
    std::vector<int32_t> g, c;
    run(logits, rows, vocab, mix, u, g, c);
    checked += agree_with_cpu(logits, vocab, mix, u, g, c, skipped,
                              [&](int r) { return fmt::format("vocab {} kind {}", vocab, (r + vi) % 4); });
    ++vi;
  }
  std::printf("[ sample   ] top-k path: %d rows agree, %d skipped at an fp rounding boundary\n", checked, skipped);
  EXPECT_LE(skipped, 6);
}

// Many rows: topk_long_kernel reads a row in one or a few long chunks, each
// as sub-chunks of 4,096 logits (KINFER_SAMPLE_SUB_CHUNKS forces how many a
// block; 256 rows x 49,152 take topk_kernel by the rule). Row kinds reach each
// way a sub-chunk joins the block's list: few keys above its k-th (normal
// rows), none (flat, ties), all of them (an ascending ramp: more than the
// shared-memory pool, so the sub-chunk's own k best are selected), and fewer
// items than k (-inf rows). Against the CPU sampler, and every forced number
// of sub-chunks a block (KINFER_SAMPLE_SUB_CHUNKS: 1, 5, all 12 in one chunk)
// must give the default's tokens exactly, and so must f32 logits.
TEST_F(CudaSample, SubChunkedRowsMatchCpuAndEveryChunking) {
  const int vocab = 49152, rows = 256;
  std::vector<Mix> mixes;
  for (float t : {0.f, 0.6f, 1.f})
    for (int k : {1, 2, 20, 64})
      for (float p : {1.f, 0.95f})
        for (float mp : {0.f, 0.05f}) mixes.push_back({t, k, p, mp});
  std::vector<float> logits;
  std::vector<Mix> mix(rows);
  std::vector<float> u(rows);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  const Kind kinds[] = {Kind::Normal, Kind::Normal, Kind::Coarse, Kind::Flat, Kind::Ramp, Kind::FewFinite};
  for (int r = 0; r < rows; ++r) {
    const std::vector<float> l = kind_row(kinds[r % 6], vocab, rng);
    logits.insert(logits.end(), l.begin(), l.end());
    mix[r] = mixes[(r * 5 + r / 6) % mixes.size()];
    u[r] = std::min(uni(rng), 0.99999994f);
  }
  std::vector<int32_t> g, c;
  run(logits, rows, vocab, mix, u, g, c);
  int skipped = 0;
  const int checked =
      agree_with_cpu(logits, vocab, mix, u, g, c, skipped, [](int r) { return fmt::format("kind {}", r % 6); });
  std::printf("[ sample   ] sub-chunked: %d rows agree, %d skipped at an fp rounding boundary\n", checked, skipped);
  EXPECT_LE(skipped, 4);
  for (const char* sub : {"1", "5", "12"}) {
    std::unique_ptr<Backend> forced = test::cuda_backend_with("KINFER_SAMPLE_SUB_CHUNKS", sub);
    EXPECT_EQ(tokens_on(*forced, logits, rows, vocab, mix, u), g) << "KINFER_SAMPLE_SUB_CHUNKS=" << sub;
  }
  EXPECT_EQ(tokens_on(*gpu, logits, rows, vocab, mix, u, true), g) << "f32 logits";
}

// Launches whose dynamic shared memory and static TopSmem pass 48 KB only
// together (they need the kernels' opt-in): topk_kernel's stage-2 lists at a
// 360,000-logit vocabulary (88 chunks), and topk_long_kernel's ring and 19
// chunks' lists at 151,936 with 2 sub-chunks a block.
TEST_F(CudaSample, LaunchesNearTheSharedMemoryOptIn) {
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  for (const auto& [vocab, rows, sub] : {std::tuple{360000, 4, ""}, std::tuple{151936, 8, "2"}}) {
    std::vector<float> logits;
    std::vector<Mix> mix(rows);
    std::vector<float> u(rows);
    for (int r = 0; r < rows; ++r) {
      auto l = row_logits(vocab, rng);
      logits.insert(logits.end(), l.begin(), l.end());
      mix[r] = Mix{r % 2 ? 0.6f : 0.f, 20, 0.95f, 0.f};
      u[r] = uni(rng);
    }
    std::unique_ptr<Backend> forced = *sub ? test::cuda_backend_with("KINFER_SAMPLE_SUB_CHUNKS", sub) : nullptr;
    const std::vector<int32_t> g = tokens_on(forced ? *forced : *gpu, logits, rows, vocab, mix, u);
    const std::vector<int32_t> c = tokens_on(*cpu, logits, rows, vocab, mix, u);
    int skipped = 0;
    agree_with_cpu(logits, vocab, mix, u, g, c, skipped,
                   [&](int) { return fmt::format("vocab {} sub-chunks '{}'", vocab, sub); });
  }
}

TEST_F(CudaSample, Timing) {
  // Not a limit, a record: microseconds per call at decode-step sizes.
  for (int vocab : {49152, 151936}) {
    const int rows = 64;
    Buffer lg(DType::BF16, {rows, vocab}, *gpu);
    gpu->fill_uniform(lg, 5, -8.f, 8.f);
    for (Mix m : {Mix{1.f, 0, 1.f, 0.f}, Mix{1.f, 0, 0.95f, 0.f}, Mix{0.6f, 20, 0.95f, 0.f}, Mix{0.f, 0, 1.f, 0.f},
                  Mix{1.f, 64, 1.f, 0.05f}, Mix{1.f, 1000, 0.5f, 0.05f}}) {
      Buffer bt = test::dev_f32(*gpu, std::vector<float>(rows, m.temp), {rows});
      Buffer bp = test::dev_f32(*gpu, std::vector<float>(rows, m.top_p), {rows});
      Buffer bm = test::dev_f32(*gpu, std::vector<float>(rows, m.min_p), {rows});
      Buffer bu = test::dev_f32(*gpu, std::vector<float>(rows, 0.5f), {rows});
      Buffer bk = test::dev_i32(*gpu, std::vector<int32_t>(rows, m.top_k), {rows});
      Buffer tok(DType::I32, {rows}, *gpu);
      const Rows rw(*gpu, rows);
      const SampleArgs a{rw.row.view(), bt.view(), bk.view(), bp.view(), bm.view(), bu.view(), rw.forced.view()};
      gpu->sample(lg, a, tok);
      gpu->synchronize();
      const int iters = 20;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) gpu->sample(lg, a, tok);
      gpu->synchronize();
      const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / iters;
      std::printf("[ sample   ] rows %d vocab %d T %.1f top_k %d top_p %.2f min_p %.2f: %.1f us\n", rows, vocab,
                  m.temp, m.top_k, m.top_p, m.min_p, us);
    }
  }
}

}  // namespace
}  // namespace kf

// Sampler vs brute-force definitions of top-k / top-p / min-p / penalties,
// empirical frequencies of Philox-driven draws, and the repetition detector.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "backend/backend.h"
#include "backend/sampler.h"
#include "engine/repetition.h"
#include "util/error.h"
#include "util/philox.h"

using namespace kf;

namespace {
std::vector<float> random_logits(int vocab, uint32_t seed, float spread = 3.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, spread);
  std::vector<float> l(vocab);
  for (auto& x : l) x = nd(rng);
  return l;
}
// Softmax at temperature t, in double, by id.
std::vector<double> softmax(const std::vector<float>& l, double t) {
  double mx = *std::max_element(l.begin(), l.end());
  std::vector<double> p(l.size());
  double z = 0;
  for (size_t i = 0; i < l.size(); ++i) z += (p[i] = std::exp((l[i] - mx) / t));
  for (auto& x : p) x /= z;
  return p;
}
std::vector<int> by_prob(const std::vector<double>& p) {
  std::vector<int> ids(p.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return p[a] > p[b]; });
  return ids;
}
}  // namespace

TEST(Sampler, GreedyIsArgmaxWithLowestIdOnTies) {
  Sampler s;
  std::vector<float> l = {1, 5, 3, 5, -2};
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(s.sample(l, p, {}, {}, 0.99), 1);
}

TEST(Sampler, TopKKeepsTheKLargestWithRenormalisedMass) {
  Sampler s;
  for (int k : {1, 5, 40}) {
    auto l = random_logits(500, k);
    SamplingParams p;
    p.top_k = k;
    p.temperature = 0.7f;
    std::vector<int> ids;
    std::vector<double> probs;
    auto copy = l;
    s.distribution(copy, p, {}, {}, ids, probs);
    auto ref = softmax(l, 0.7);
    auto order = by_prob(ref);
    ASSERT_EQ(static_cast<int>(ids.size()), k);
    double mass = 0;
    for (int j = 0; j < k; ++j) mass += ref[order[j]];
    // distribution() lists the kept set in ascending id order (the draw order).
    std::vector<int> want(order.begin(), order.begin() + k);
    std::sort(want.begin(), want.end());
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(ids[j], want[j]);
      EXPECT_NEAR(probs[j], ref[want[j]] / mass, 1e-6);
    }
  }
}

// Many exact ties around the k-th logit, masked (-inf) logits, and k close to
// the number of finite logits: the kept set is still the k most probable with
// ties to the lowest id (the sampler only looks at the logits near the k-th).
TEST(Sampler, TopKWithTiesAndMaskedLogits) {
  Sampler s;
  std::mt19937 rng(3);
  for (int k : {1, 3, 7, 20}) {
    std::vector<float> l(400);
    for (auto& x : l) x = static_cast<float>(rng() % 3);  // values 0, 1, 2
    for (int i = 0; i < 400; i += 3) l[i] = -INFINITY;
    SamplingParams p;
    p.top_k = k;
    p.temperature = 0.5f;
    std::vector<int> ids;
    std::vector<double> probs;
    auto copy = l;
    s.distribution(copy, p, {}, {}, ids, probs);
    const auto ref = softmax(l, 0.5);
    const auto order = by_prob(ref);  // stable: ties keep ascending ids
    std::vector<int> want(order.begin(), order.begin() + k);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(ids, want) << "k=" << k;
  }
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  Sampler s;
  for (float top_p : {0.1f, 0.5f, 0.9f, 0.99f}) {
    for (uint32_t seed = 0; seed < 5; ++seed) {
      auto l = random_logits(3000, seed * 10 + 1, seed % 2 ? 1.f : 4.f);  // flat and peaked
      SamplingParams p;
      p.top_p = top_p;
      std::vector<int> ids;
      std::vector<double> probs;
      auto copy = l;
      s.distribution(copy, p, {}, {}, ids, probs);
      auto ref = softmax(l, 1.0);
      auto order = by_prob(ref);
      double cum = 0;
      size_t want = 0;
      while (cum < top_p) cum += ref[order[want++]];
      ASSERT_EQ(ids.size(), want) << top_p << " " << seed;
      std::vector<int> nucleus(order.begin(), order.begin() + want);
      std::sort(nucleus.begin(), nucleus.end());  // distribution() order: ascending id
      double kept = 0;
      for (size_t j = 0; j < want; ++j) {
        EXPECT_EQ(ids[j], nucleus[j]);
        kept += ref[order[j]];
      }
      EXPECT_GE(kept, top_p - 1e-9);
      EXPECT_LT(kept - ref[order[want - 1]], top_p);
    }
  }
}

TEST(Sampler, MinPAndPenalties) {
  Sampler s;
  std::vector<float> l = {0.f, std::log(0.5f), std::log(0.09f), std::log(0.2f)};
  SamplingParams p;
  p.min_p = 0.1f;  // keeps p >= 0.1 * p_max: ids 0, 1, 3
  std::vector<int> ids;
  std::vector<double> probs;
  auto c = l;
  s.distribution(c, p, {}, {}, ids, probs);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<int>{0, 1, 3}));

  std::vector<float> l2 = {2.f, -2.f, 1.f};
  SamplingParams r;
  r.repetition_penalty = 2.f;
  r.presence_penalty = 0.5f;
  std::vector<int> ctx = {0, 1, 0}, gen = {1};
  auto c2 = l2;
  s.distribution(c2, r, ctx, gen, ids, probs);
  EXPECT_FLOAT_EQ(c2[0], 1.f);         // 2 / 2 once, though it appears twice
  EXPECT_FLOAT_EQ(c2[1], -4.f - 0.5f);  // -2 * 2, then presence
  EXPECT_FLOAT_EQ(c2[2], 1.f);
}

TEST(Sampler, DrawFrequenciesMatchTheDistribution) {
  Sampler s;
  auto l = random_logits(50, 3, 1.5f);
  SamplingParams p;
  p.top_k = 20;
  p.top_p = 0.9f;
  p.temperature = 0.8f;
  std::vector<int> ids;
  std::vector<double> probs;
  auto c = l;
  s.distribution(c, p, {}, {}, ids, probs);
  std::map<int, double> want;
  for (size_t j = 0; j < ids.size(); ++j) want[ids[j]] = probs[j];
  const int n = 40000;
  std::map<int, int> got;
  for (int i = 0; i < n; ++i) {
    auto cc = l;
    ++got[s.sample(cc, p, {}, {}, philox_uniform(9, 0, 0, i))];
  }
  for (auto& [id, cnt] : got) ASSERT_TRUE(want.count(id)) << "drew token " << id << " outside the kept set";
  for (auto& [id, pr] : want) EXPECT_NEAR(got[id] / static_cast<double>(n), pr, 4 * std::sqrt(pr / n) + 1e-3) << id;
}

TEST(Sampler, DrawIsTheInverseCdfOverKeptIdsAscending) {
  // The token for u is the first kept id (ascending) whose cumulative
  // renormalised probability exceeds u, for filters that reorder candidates.
  Sampler s;
  auto l = random_logits(400, 21, 2.f);
  for (int variant = 0; variant < 3; ++variant) {
    SamplingParams p;
    p.temperature = 0.9f;
    if (variant == 0) p.top_k = 30;
    if (variant == 1) p.top_p = 0.7f;
    if (variant == 2) p.min_p = 0.05f, p.top_k = 100, p.top_p = 0.95f;
    std::vector<int> ids;
    std::vector<double> probs;
    auto c = l;
    s.distribution(c, p, {}, {}, ids, probs);
    ASSERT_TRUE(std::is_sorted(ids.begin(), ids.end()));
    ASSERT_GT(ids.size(), 2u);
    for (int i = 0; i < 500; ++i) {
      double u = philox_uniform(4, variant, 0, i), cum = 0;
      size_t j = 0;
      while (j + 1 < ids.size() && (cum += probs[j]) <= u) ++j;
      if (std::fabs(cum - u) < 1e-9) continue;  // on a boundary: rounding decides
      auto cc = l;
      EXPECT_EQ(s.sample(cc, p, {}, {}, u), ids[j]) << variant << " u=" << u;
    }
  }
}

TEST(Sampler, SameDrawSameTokenWhateverTheBatch) {
  // A sample's token depends only on its logits and its own keyed draw.
  Sampler a, b;
  auto l = random_logits(1000, 77);
  SamplingParams p;
  p.top_p = 0.95f;
  for (int step = 0; step < 200; ++step) {
    auto c1 = l;
    int t1 = a.sample(c1, p, {}, {}, philox_uniform(1, 2, 3, step));
    for (int other = 0; other < 3; ++other) {  // b sees unrelated work in between
      auto junk = random_logits(1000, other);
      b.sample(junk, p, {}, {}, philox_uniform(5, other, 0, step));
    }
    auto c2 = l;
    EXPECT_EQ(t1, b.sample(c2, p, {}, {}, philox_uniform(1, 2, 3, step)));
  }
}

TEST(Sampler, CpuBackendSampleMatchesSampler) {
  // Backend::sample on the CPU is kf::Sampler row by row (no penalties), each
  // sampled row reading its logits row (here in reverse), forced rows emitting
  // their token.
  auto be = make_cpu_backend(1);
  const int rows = 24, vocab = 3000;
  Buffer lg(DType::F32, {rows, vocab}), tok(DType::I32, {rows});
  Buffer bt(DType::F32, {rows}), bk(DType::I32, {rows});
  Buffer bp(DType::F32, {rows}), bm(DType::F32, {rows}), bu(DType::F32, {rows});
  Buffer brow(DType::I32, {rows}), bforced(DType::I32, {rows});
  std::vector<SamplingParams> ps(rows);
  for (int r = 0; r < rows; ++r) {
    auto l = random_logits(vocab, 100 + r, r % 2 ? 1.f : 4.f);
    std::copy(l.begin(), l.end(), lg.view().ptr<float>() + r * vocab);
    SamplingParams& p = ps[r];
    p.temperature = r % 6 == 0 ? 0.f : 0.5f + 0.25f * (r % 4);
    p.top_k = (r % 3) * 25;
    p.top_p = r % 4 == 1 ? 0.9f : 1.f;
    p.min_p = r % 5 == 2 ? 0.05f : 0.f;
    bt.view().ptr<float>()[r] = p.temperature;
    bk.view().ptr<int32_t>()[r] = p.top_k;
    bp.view().ptr<float>()[r] = p.top_p;
    bm.view().ptr<float>()[r] = p.min_p;
    bu.view().ptr<float>()[r] = static_cast<float>(philox_uniform(3, r, 0, 0));
    brow.view().ptr<int32_t>()[r] = rows - 1 - r;
    bforced.view().ptr<int32_t>()[r] = r == 7 ? 1234 : -1;
  }
  const SampleArgs args{brow.view(), bt.view(), bk.view(), bp.view(), bm.view(), bu.view(), bforced.view()};
  be->sample(lg, args, tok);
  Sampler s;
  for (int r = 0; r < rows; ++r) {
    const int lr = rows - 1 - r;
    std::vector<float> l(lg.view().ptr<float>() + lr * vocab, lg.view().ptr<float>() + (lr + 1) * vocab);
    const int want = r == 7 ? 1234 : s.sample(l, ps[r], {}, {}, bu.view().ptr<float>()[r]);
    EXPECT_EQ(tok.view().ptr<int32_t>()[r], want) << "row " << r;
  }
  // Bad parameters are refused like SamplingParams::validate() does.
  bp.view().ptr<float>()[3] = 0.f;
  EXPECT_THROW(be->sample(lg, args, tok), Error);
}

TEST(Sampler, CpuBackendPenaltiesMatchSampler) {
  // Backend::apply_penalties reads each row's history from the token pool
  // through its page table: the same logits as kf::Sampler's penalties over
  // (prompt + generated, generated), then the same token.
  auto be = make_cpu_backend(1);
  const int vocab = 50, P = 4, n_pages = 12, rows = 3;
  Buffer pool(DType::I32, {n_pages, P});
  std::mt19937 rng(5);
  for (int i = 0; i < n_pages * P; ++i) pool.view().ptr<int32_t>()[i] = static_cast<int32_t>(rng() % vocab);
  // Sequences of 9, 14 and 5 tokens on scattered pages; prompts of 4, 10, 5.
  const std::vector<std::vector<int>> pages = {{7, 2, 9}, {0, 11, 3, 5}, {8, 1}};
  const std::vector<int> ctx = {9, 14, 5}, prompt = {4, 10, 5};
  Buffer table(DType::I32, {rows, 4}), ctx_len(DType::I32, {rows}), q_start(DType::I32, {rows + 1});
  for (int s = 0; s < rows; ++s) {
    for (int i = 0; i < 4; ++i) table.view().ptr<int32_t>()[s * 4 + i] = i < static_cast<int>(pages[s].size()) ? pages[s][i] : -1;
    ctx_len.view().ptr<int32_t>()[s] = ctx[s];
    q_start.view().ptr<int32_t>()[s] = s;
  }
  q_start.view().ptr<int32_t>()[rows] = rows;
  AttnBatch batch;
  batch.n_seqs = rows;
  batch.max_pages = 4;
  batch.q_start = q_start.view();
  batch.ctx_len = ctx_len.view();
  batch.page_table = table.view();
  // Row r penalises sequence 2 - r, with repetition, presence and frequency mixed.
  Buffer seq(DType::I32, {rows}), plen(DType::I32, {rows}), rep(DType::F32, {rows}), pres(DType::F32, {rows}),
      freq(DType::F32, {rows}), lg(DType::F32, {rows, vocab});
  std::vector<SamplingParams> ps(rows);
  for (int r = 0; r < rows; ++r) {
    seq.view().ptr<int32_t>()[r] = 2 - r;
    plen.view().ptr<int32_t>()[r] = prompt[2 - r];
    ps[r].repetition_penalty = r == 1 ? 1.f : 1.3f;
    ps[r].presence_penalty = r == 2 ? 0.f : 0.7f;
    ps[r].frequency_penalty = r == 0 ? 0.f : 0.45f;
    rep.view().ptr<float>()[r] = ps[r].repetition_penalty;
    pres.view().ptr<float>()[r] = ps[r].presence_penalty;
    freq.view().ptr<float>()[r] = ps[r].frequency_penalty;
    auto l = random_logits(vocab, 40 + r, 3.f);
    std::copy(l.begin(), l.end(), lg.view().ptr<float>() + r * vocab);
  }
  std::vector<float> before(lg.view().ptr<float>(), lg.view().ptr<float>() + rows * vocab);
  be->apply_penalties(lg, PenaltyArgs{seq.view(), plen.view(), rep.view(), pres.view(), freq.view()}, batch, pool);
  Sampler s;
  for (int r = 0; r < rows; ++r) {
    const int q = 2 - r;
    std::vector<int> hist;
    for (int t = 0; t < ctx[q]; ++t) hist.push_back(pool.view().ptr<int32_t>()[pages[q][t / P] * P + t % P]);
    std::vector<float> want(before.begin() + r * vocab, before.begin() + (r + 1) * vocab);
    s.apply_penalties(want, ps[r], hist, std::span<const int>(hist).subspan(prompt[q]));
    std::vector<float> got(lg.view().ptr<float>() + r * vocab, lg.view().ptr<float>() + (r + 1) * vocab);
    EXPECT_EQ(got, want) << "row " << r;
    EXPECT_NE(got, std::vector<float>(before.begin() + r * vocab, before.begin() + (r + 1) * vocab)) << "row " << r;
  }
}

TEST(Sampler, BadParamsThrow) {
  SamplingParams p;
  p.top_p = 0;
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.temperature = -1;
  EXPECT_THROW(p.validate(), Error);
}

TEST(Repetition, DetectsTheKineticsLoop) {
  RepetitionParams rp;  // 64-token block seen 15 times in the last 1024
  std::mt19937 rng(1);
  std::vector<int> toks;
  for (int i = 0; i < 300; ++i) toks.push_back(rng() % 1000);
  std::vector<int> block(64);
  for (auto& t : block) t = 1000 + rng() % 1000;
  for (int r = 0; r < 14; ++r) toks.insert(toks.end(), block.begin(), block.end());
  EXPECT_FALSE(is_repetition_loop(toks, rp));
  toks.insert(toks.end(), block.begin(), block.end());
  EXPECT_TRUE(is_repetition_loop(toks, rp));
  // Occurrences outside the window do not count.
  std::vector<int> far(block.begin(), block.end());
  for (int r = 0; r < 20; ++r) far.insert(far.end(), block.begin(), block.end());
  for (int i = 0; i < 2000; ++i) far.push_back(rng() % 1000);
  far.insert(far.end(), block.begin(), block.end());
  EXPECT_FALSE(is_repetition_loop(far, rp));
  rp.enabled = false;
  EXPECT_FALSE(is_repetition_loop(toks, rp));
  RepetitionParams small{true, 2, 3, 10};
  std::vector<int> t2 = {9, 1, 2, 1, 2, 1, 2};
  EXPECT_TRUE(is_repetition_loop(t2, small));
}

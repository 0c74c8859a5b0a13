// CPU paged attention vs a brute-force computation from dense Q, K, V, with
// each policy's token set built straight from its DESIGN.md definition.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "attn/policy.h"
#include "attn/summary.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/vector_kernels.h"

using namespace kf;

namespace {

struct Seq {
  int ctx = 0, rows = 0;
  std::vector<float> k, v;   // [ctx, Hkv, D]
  std::vector<int> pages;    // logical -> physical
};

struct Case {
  int Hkv, G, D, P, n_pool;
  bool i8 = false;  // page summaries as int8 codes + scales (attn/summary.h)
  std::vector<Seq> seqs;
  std::vector<float> q;  // [rows total, Hq, D]
  Buffer k, v, sum, sum_scale;
  KvLayer kv;
  std::vector<int32_t> q_start, ctx_len, table;
  int max_pages = 0;
  AttnBatch batch;
};

float randn(std::mt19937& rng) { return std::normal_distribution<float>(0.f, 1.f)(rng); }

// Builds a pool with shuffled (non-contiguous) page tables and writes every
// sequence's K/V through cpu_kv_write in random-sized in-order chunks.
void build(Case& c, std::mt19937& rng) {
  int total = 0;
  for (auto& s : c.seqs) total += attn::pages_for(s.ctx, c.P);
  c.n_pool = total + 3;
  c.k = Buffer(DType::F32, {c.n_pool, c.Hkv, c.P, c.D});
  c.v = Buffer(DType::F32, {c.n_pool, c.Hkv, c.P, c.D});
  c.sum = Buffer(c.i8 ? DType::U8 : DType::F32, {c.n_pool, c.Hkv, c.D});
  c.sum_scale = Buffer(DType::F32, {c.n_pool, c.Hkv});
  std::fill(c.k.ptr<float>(), c.k.ptr<float>() + c.k.view().numel(), NAN);  // unwritten slots poison
  std::fill(c.v.ptr<float>(), c.v.ptr<float>() + c.v.view().numel(), NAN);
  c.kv = KvLayer{c.k, c.v, c.sum, c.i8 ? c.sum_scale.view() : Tensor()};
  std::vector<int> perm(c.n_pool);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  int next = 0;
  c.max_pages = 0;
  for (auto& s : c.seqs) {
    int np = attn::pages_for(s.ctx, c.P);
    s.pages.assign(perm.begin() + next, perm.begin() + next + np);
    next += np;
    c.max_pages = std::max(c.max_pages, np + 1);
    s.k.resize(static_cast<size_t>(s.ctx) * c.Hkv * c.D);
    s.v.resize(s.k.size());
    for (auto& x : s.k) x = randn(rng);
    for (auto& x : s.v) x = randn(rng);
    for (int t0 = 0; t0 < s.ctx;) {
      int n = std::min(s.ctx - t0, 1 + static_cast<int>(rng() % 7));
      std::vector<int32_t> slots(n);
      for (int i = 0; i < n; ++i) slots[i] = s.pages[(t0 + i) / c.P] * c.P + (t0 + i) % c.P;
      Tensor kt(s.k.data() + static_cast<size_t>(t0) * c.Hkv * c.D, DType::F32, {n, c.Hkv, c.D});
      Tensor vt(s.v.data() + static_cast<size_t>(t0) * c.Hkv * c.D, DType::F32, {n, c.Hkv, c.D});
      cpu_kv_write(c.kv, kt, vt, Tensor(slots.data(), DType::I32, {n}));
      t0 += n;
    }
  }
  int n_seqs = static_cast<int>(c.seqs.size());
  c.q_start.assign(1, 0);
  c.ctx_len.clear();
  c.table.assign(static_cast<size_t>(n_seqs) * c.max_pages, -1);
  for (int i = 0; i < n_seqs; ++i) {
    c.q_start.push_back(c.q_start.back() + c.seqs[i].rows);
    c.ctx_len.push_back(c.seqs[i].ctx);
    for (size_t j = 0; j < c.seqs[i].pages.size(); ++j) c.table[i * c.max_pages + j] = c.seqs[i].pages[j];
  }
  c.q.resize(static_cast<size_t>(c.q_start.back()) * c.Hkv * c.G * c.D);
  for (auto& x : c.q) x = randn(rng);
  c.batch.n_seqs = n_seqs;
  c.batch.max_pages = c.max_pages;
  c.batch.q_start = Tensor(c.q_start.data(), DType::I32, {n_seqs + 1});
  c.batch.ctx_len = Tensor(c.ctx_len.data(), DType::I32, {n_seqs});
  c.batch.page_table = Tensor(c.table.data(), DType::I32, {n_seqs, c.max_pages});
}

// The summary of page i of s for KV head h, by definition: the mean of its
// keys (float, summed in slot order), for int8 pools encoded and decoded.
std::vector<double> reference_summary(const Case& c, const Seq& s, int i, int h, std::vector<int>* codes = nullptr,
                                      float* scale_out = nullptr) {
  std::vector<float> mean(c.D);
  float amax = 0.f;
  for (int d = 0; d < c.D; ++d) {
    float sum = 0.f;
    for (int t = 0; t < c.P; ++t) sum += s.k[(static_cast<size_t>(i * c.P + t) * c.Hkv + h) * c.D + d];
    mean[d] = sum / static_cast<float>(c.P);
    amax = std::max(amax, std::fabs(mean[d]));
  }
  const float scale = amax / 127.f;
  std::vector<double> out(c.D);
  if (codes) codes->resize(c.D);
  if (scale_out) *scale_out = scale;
  for (int d = 0; d < c.D; ++d) {
    const double code = std::nearbyint(static_cast<double>(mean[d] / scale));
    if (codes) (*codes)[d] = static_cast<int>(code);
    out[d] = c.i8 ? code * scale : static_cast<double>(mean[d]);
  }
  return out;
}

// Token positions a decode query of sequence s reads for KV head h, by definition.
std::vector<int> reference_tokens(const Case& c, const Seq& s, const float* qrow, int h, const AttnPolicy& pol) {
  int T = s.ctx, P = c.P, D = c.D, G = c.G;
  int n = (T + P - 1) / P;
  std::vector<int> all(T);
  std::iota(all.begin(), all.end(), 0);
  if (pol.kind == AttnKind::Dense) return all;
  std::set<int> pages = {0};
  for (int i = std::max(1, n - pol.local_pages); i < n; ++i) pages.insert(i);
  std::vector<int> cand;
  for (int i = 1; i < n - pol.local_pages; ++i) cand.push_back(i);  // all full: local >= 1 holds the partial page
  std::vector<double> qbar(D, 0.0);
  for (int g = 0; g < G; ++g)
    for (int d = 0; d < D; ++d) qbar[d] += qrow[(h * G + g) * D + d] / G;
  auto key = [&](int t, int d) { return static_cast<double>(s.k[(static_cast<size_t>(t) * c.Hkv + h) * D + d]); };
  std::vector<int> toks;
  if (pol.kind == AttnKind::Local || pol.kind == AttnKind::BlockTopK) {
    if (pol.kind == AttnKind::BlockTopK) {
      if (static_cast<int>(cand.size()) <= pol.topk_pages) return all;
      std::vector<std::pair<double, int>> sc;
      // int8 summaries: q̄ (float, summed in g order) in 16 bits, an exact
      // integer dot product with the codes, times both scales in float.
      std::vector<float> qf(D);
      float qmax = 0.f;
      for (int d = 0; d < D; ++d) {
        float a = 0.f;
        for (int g = 0; g < G; ++g) a += qrow[(h * G + g) * D + d];
        qf[d] = a / static_cast<float>(G);
        qmax = std::max(qmax, std::fabs(qf[d]));
      }
      const float qscale = qmax / 32767.f;
      for (int i : cand) {
        std::vector<int> codes;
        float scale = 0.f;
        const std::vector<double> summary = reference_summary(c, s, i, h, &codes, &scale);
        double score = 0;
        if (c.i8) {
          int64_t dot = 0;
          for (int d = 0; d < D; ++d) dot += static_cast<int64_t>(std::nearbyint(qf[d] / qscale)) * codes[d];
          score = static_cast<float>(dot) * qscale * scale;
        } else {
          for (int d = 0; d < D; ++d) score += qbar[d] * summary[d];
        }
        sc.push_back({-score, i});
      }
      std::sort(sc.begin(), sc.end());
      for (int j = 0; j < pol.topk_pages; ++j) pages.insert(sc[j].second);
    }
    for (int t = 0; t < T; ++t)
      if (pages.count(t / P)) toks.push_back(t);
    return toks;
  }
  // TopK oracle over candidate tokens.
  std::vector<std::pair<double, int>> sc;
  for (int i : cand)
    for (int t = i * P; t < (i + 1) * P; ++t) {
      double score = 0;
      for (int d = 0; d < D; ++d) score += qbar[d] * key(t, d);
      sc.push_back({-score, t});
    }
  std::set<int> chosen;
  if (static_cast<int64_t>(sc.size()) <= static_cast<int64_t>(pol.topk_pages) * P) return all;
  std::sort(sc.begin(), sc.end());
  for (int j = 0; j < pol.topk_pages * P; ++j) chosen.insert(sc[j].second);
  for (int t = 0; t < T; ++t)
    if (pages.count(t / P) || chosen.count(t)) toks.push_back(t);
  return toks;
}

// Checks every output row against double-precision softmax over the reference token set.
void check_case(Case& c, const AttnPolicy& pol, const char* label) {
  int n_rows = c.q_start.back(), Hq = c.Hkv * c.G, D = c.D;
  std::vector<float> out(c.q.size(), NAN);
  std::vector<int32_t> sel_pages(c.seqs.size() * c.Hkv * c.max_pages), sel_counts(c.seqs.size() * c.Hkv);
  PageSelection sel{Tensor(sel_pages.data(), DType::I32, {static_cast<int64_t>(c.seqs.size()), c.Hkv, c.max_pages}),
                    Tensor(sel_counts.data(), DType::I32, {static_cast<int64_t>(c.seqs.size()), c.Hkv})};
  CpuAttnWorkspace ws;
  float scale = 1.f / std::sqrt(static_cast<float>(D));
  cpu_attention(Tensor(c.q.data(), DType::F32, {n_rows, Hq, D}), c.kv, c.batch, pol, scale,
                Tensor(out.data(), DType::F32, {n_rows, Hq, D}), &sel, ws);
  for (size_t si = 0; si < c.seqs.size(); ++si) {
    const Seq& s = c.seqs[si];
    for (int r = c.q_start[si]; r < c.q_start[si + 1]; ++r) {
      int pos = s.ctx - s.rows + (r - c.q_start[si]);
      const float* qrow = c.q.data() + static_cast<size_t>(r) * Hq * D;
      for (int h = 0; h < c.Hkv; ++h) {
        std::vector<int> toks;
        if (s.rows == 1) {
          toks = reference_tokens(c, s, qrow, h, pol);
          std::vector<int> want_pages;
          for (int t : toks)
            if (want_pages.empty() || want_pages.back() != s.pages[t / c.P]) want_pages.push_back(s.pages[t / c.P]);
          int task = static_cast<int>(si) * c.Hkv + h;
          ASSERT_EQ(sel_counts[task], static_cast<int>(want_pages.size())) << label;
          for (size_t j = 0; j < want_pages.size(); ++j)
            ASSERT_EQ(sel_pages[task * c.max_pages + j], want_pages[j]) << label << " sel page " << j;
        } else {
          toks.resize(pos + 1);
          std::iota(toks.begin(), toks.end(), 0);
        }
        for (int g = 0; g < c.G; ++g) {
          int head = h * c.G + g;
          std::vector<double> w;
          double mx = -1e300;
          for (int t : toks) {
            double l = 0;
            for (int d = 0; d < D; ++d) l += static_cast<double>(qrow[head * D + d]) * s.k[(static_cast<size_t>(t) * c.Hkv + h) * D + d];
            w.push_back(l * scale);
            mx = std::max(mx, w.back());
          }
          double z = 0;
          for (double& x : w) z += (x = std::exp(x - mx));
          for (int d = 0; d < D; ++d) {
            double o = 0;
            for (size_t j = 0; j < toks.size(); ++j) o += w[j] * s.v[(static_cast<size_t>(toks[j]) * c.Hkv + h) * D + d];
            o /= z;
            float got = out[(static_cast<size_t>(r) * Hq + head) * D + d];
            ASSERT_NEAR(got, o, 2e-5 + 2e-5 * std::fabs(o)) << label << " seq " << si << " row " << r << " head " << head << " d " << d;
          }
        }
      }
    }
  }
}

Case random_case(std::mt19937& rng, bool decode_only, bool i8 = false) {
  static const int kPage[] = {1, 2, 3, 5, 16, 32};
  static const int kDim[] = {4, 8, 13, 16, 64};
  Case c;
  c.i8 = i8;
  c.Hkv = 1 + rng() % 3;
  c.G = 1 + rng() % 4;
  c.D = kDim[rng() % 5];
  c.P = kPage[rng() % 6];
  int n_seqs = 1 + rng() % 4;
  for (int i = 0; i < n_seqs; ++i) {
    Seq s;
    int max_ctx = std::min(12 * c.P, 200);
    s.ctx = 1 + rng() % max_ctx;
    s.rows = (decode_only || rng() % 2) ? 1 : 1 + rng() % s.ctx;
    c.seqs.push_back(std::move(s));
  }
  build(c, rng);
  return c;
}

}  // namespace

TEST(AttnCpu, EveryPolicyMatchesBruteForce) {
  std::mt19937 rng(1234);
  const AttnKind kinds[] = {AttnKind::Dense, AttnKind::Local, AttnKind::BlockTopK, AttnKind::TopK};
  for (int iter = 0; iter < 160; ++iter) {
    Case c = random_case(rng, iter % 3 == 0);
    AttnPolicy pol;
    pol.kind = kinds[iter % 4];
    pol.local_pages = 1 + rng() % 3;
    pol.topk_pages = rng() % 5;
    std::string label = std::string(attn_kind_name(pol.kind)) + " iter " + std::to_string(iter) +
                        " P=" + std::to_string(c.P) + " G=" + std::to_string(c.G) + " D=" + std::to_string(c.D);
    check_case(c, pol, label.c_str());
    if (HasFatalFailure()) return;
  }
}

TEST(AttnCpu, Int8SummariesMatchBruteForce) {
  std::mt19937 rng(4321);
  for (int iter = 0; iter < 60; ++iter) {
    Case c = random_case(rng, iter % 3 == 0, true);
    AttnPolicy pol;
    pol.kind = AttnKind::BlockTopK;
    pol.local_pages = 1 + rng() % 3;
    pol.topk_pages = rng() % 5;
    const std::string label =
        "int8 iter " + std::to_string(iter) + " P=" + std::to_string(c.P) + " D=" + std::to_string(c.D);
    check_case(c, pol, label.c_str());
    if (HasFatalFailure()) return;
    // Codes and scales as defined: the largest |mean| gets code +-127, the
    // others round to nearest, so every value is within scale / 2 of its mean.
    for (const Seq& s : c.seqs)
      for (int i = 0; i < s.ctx / c.P; ++i)
        for (int h = 0; h < c.Hkv; ++h) {
          const int64_t ph = static_cast<int64_t>(s.pages[i]) * c.Hkv + h;
          const float scale = c.sum_scale.ptr<float>()[ph];
          const std::vector<double> want = reference_summary(c, s, i, h);
          int max_code = 0;
          for (int d = 0; d < c.D; ++d) {
            const int code = static_cast<int8_t>(c.sum.ptr<uint8_t>()[ph * c.D + d]);
            ASSERT_EQ(code * double(scale), want[d]) << label << " page " << i << " head " << h << " d " << d;
            max_code = std::max(max_code, std::abs(code));
          }
          EXPECT_EQ(max_code, 127) << label;
        }
  }
}

// The int8 codec: round to nearest, ties to even, clamped to +-127; the
// scale maps the largest |value| to 127.
TEST(AttnCpu, Int8CodecAndScale) {
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    const float scale = std::ldexp(std::uniform_real_distribution<float>(0.5f, 1.f)(rng), int(rng() % 40) - 20);
    const float x = i % 4 == 0 ? scale * (float(int(rng() % 600)) / 2.f - 150.f)  // on and halfway between codes
                               : scale * std::uniform_real_distribution<float>(-140.f, 140.f)(rng);
    const double q = double(x / scale);
    double want = std::floor(q + 0.5);
    if (want - q == 0.5 && std::fmod(want, 2.0) != 0) want -= 1;  // a tie: the even neighbour
    want = std::clamp(want, -127.0, 127.0);
    ASSERT_EQ(attn::i8_encode(x, scale), int(want)) << x << " / " << scale;
  }
  EXPECT_EQ(attn::i8_encode(2.5f, 1.f), 2);
  EXPECT_EQ(attn::i8_encode(-3.5f, 1.f), -4);
  EXPECT_EQ(attn::i8_encode(1e9f, 1.f), 127);
  EXPECT_EQ(attn::i8_encode(-1e9f, 1.f), -127);
  EXPECT_EQ(attn::i8_encode(NAN, 1.f), 0);
  for (float amax : {448.f, 1.f, 1e-3f, 3e4f, 1e-30f, 127.f})
    EXPECT_EQ(attn::i8_encode(amax, attn::i8_summary_scale(amax)), 127) << amax;
  EXPECT_EQ(attn::i8_summary_scale(0.f), 1.f);
  EXPECT_EQ(attn::i8_summary_scale(NAN), 1.f);
  EXPECT_EQ(attn::i8_summary_scale(INFINITY), 1.f);
  // q̄ in 16 bits: the same rule at 32767.
  for (float qmax : {1.f, 3e-4f, 2e3f}) EXPECT_EQ(attn::i16_encode(-qmax, attn::i16_query_scale(qmax)), -32767) << qmax;
  EXPECT_EQ(attn::i16_encode(6.5f, 1.f), 6);
  EXPECT_EQ(attn::i16_encode(1e9f, 1.f), 32767);
  EXPECT_EQ(attn::i16_encode(NAN, 1.f), 0);
  const int16_t q[3] = {32767, -32767, 5};
  const uint8_t codes[3] = {127, 0x81, 0xff};  // 127, -127, -1
  EXPECT_EQ(attn::dot_i8(q, codes, 3), 32767 * 127 * 2 - 5);
}

TEST(AttnCpu, SummariesAreThePageMeans) {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 20; ++iter) {
    Case c = random_case(rng, false);
    for (const Seq& s : c.seqs)
      for (int i = 0; i < s.ctx / c.P; ++i)  // full pages only
        for (int h = 0; h < c.Hkv; ++h)
          for (int d = 0; d < c.D; ++d) {
            double mean = 0;
            for (int t = 0; t < c.P; ++t) mean += s.k[(static_cast<size_t>(i * c.P + t) * c.Hkv + h) * c.D + d];
            mean /= c.P;
            float got = c.sum.ptr<float>()[(static_cast<size_t>(s.pages[i]) * c.Hkv + h) * c.D + d];
            ASSERT_NEAR(got, mean, 1e-5);
          }
  }
}

namespace {
std::vector<float> run(Case& c, const AttnPolicy& pol) {
  int n_rows = c.q_start.back(), Hq = c.Hkv * c.G;
  std::vector<float> out(c.q.size());
  CpuAttnWorkspace ws;
  cpu_attention(Tensor(c.q.data(), DType::F32, {n_rows, Hq, c.D}), c.kv, c.batch, pol, 0.3f,
                Tensor(out.data(), DType::F32, {n_rows, Hq, c.D}), nullptr, ws);
  return out;
}
}  // namespace

TEST(AttnCpu, BlockTopKWithEnoughPagesIsBitIdenticalToDense) {
  std::mt19937 rng(99);
  for (int iter = 0; iter < 30; ++iter) {
    Case c = random_case(rng, true);
    AttnPolicy dense, btk;
    btk.kind = AttnKind::BlockTopK;
    btk.local_pages = 1 + rng() % 2;
    btk.topk_pages = c.max_pages;  // >= candidates
    std::vector<float> a = run(c, dense), b = run(c, btk);
    ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << iter;
  }
}

TEST(AttnCpu, DecodeRowIsBitIdenticalToTheSameRowInAPrefillChunk) {
  std::mt19937 rng(5);
  for (int iter = 0; iter < 20; ++iter) {
    Case c = random_case(rng, false);
    c.seqs.resize(1);
    c.seqs[0].rows = c.seqs[0].ctx;  // one prefill chunk over the whole cache
    std::mt19937 r2(iter);
    build(c, r2);
    std::vector<float> full = run(c, AttnPolicy{});
    // Now the last position as a decode row, in a batch with another sequence before it.
    int Hq = c.Hkv * c.G, T = c.seqs[0].ctx;
    std::vector<float> q_last(c.q.end() - Hq * c.D, c.q.end());
    c.q = q_last;
    c.q_start = {0, 1};
    c.batch.q_start = Tensor(c.q_start.data(), DType::I32, {2});
    std::vector<float> dec = run(c, AttnPolicy{});
    ASSERT_EQ(0, std::memcmp(dec.data(), full.data() + static_cast<size_t>(T - 1) * Hq * c.D, dec.size() * sizeof(float)))
        << iter;
  }
}

TEST(AttnCpu, TiesGoToTheLowerPageIndex) {
  // Every candidate page holds identical keys, so all scores tie.
  Case c;
  c.Hkv = 1, c.G = 2, c.D = 4, c.P = 2;
  Seq s;
  s.ctx = 2 * 10 + 1, s.rows = 1;  // pages 0..10, page 10 partial
  c.seqs.push_back(s);
  std::mt19937 rng(3);
  build(c, rng);
  for (auto& x : c.seqs[0].k) x = 0.5f;
  for (int t0 = 0; t0 < c.seqs[0].ctx; ++t0) {
    int32_t slot = c.seqs[0].pages[t0 / c.P] * c.P + t0 % c.P;
    Tensor kt(c.seqs[0].k.data() + t0 * c.D, DType::F32, {1, 1, c.D});
    Tensor vt(c.seqs[0].v.data() + t0 * c.D, DType::F32, {1, 1, c.D});
    cpu_kv_write(c.kv, kt, vt, Tensor(&slot, DType::I32, {1}));
  }
  AttnPolicy pol;
  pol.kind = AttnKind::BlockTopK;
  pol.local_pages = 2;
  pol.topk_pages = 3;
  std::vector<int32_t> pages(c.max_pages), counts(1);
  PageSelection sel{Tensor(pages.data(), DType::I32, {1, 1, c.max_pages}), Tensor(counts.data(), DType::I32, {1, 1})};
  std::vector<float> out(c.q.size());
  CpuAttnWorkspace ws;
  cpu_attention(Tensor(c.q.data(), DType::F32, {1, 2, 4}), c.kv, c.batch, pol, 1.f,
                Tensor(out.data(), DType::F32, {1, 2, 4}), &sel, ws);
  ASSERT_EQ(counts[0], 6);
  const int want[] = {0, 1, 2, 3, 9, 10};
  for (int j = 0; j < 6; ++j) EXPECT_EQ(pages[j], c.seqs[0].pages[want[j]]) << j;
  // Same for the pure function, with explicit scores.
  float scores[11] = {0, 1, 5, 5, 1, 5, 2, 2, 9, 9, 9};
  int order[11], got[11];
  int n = attn::select_blocktopk(21, 2, 2, 3, scores, order, got);
  ASSERT_EQ(n, 6);
  std::vector<int> v(got, got + n);
  // Candidates are pages 1..8; best three: page 8 (9), then ties at 5 -> pages 2 and 3.
  EXPECT_EQ(v, (std::vector<int>{0, 2, 3, 8, 9, 10}));
}

TEST(AttnCpu, CopyPagesCopiesKVAndSummary) {
  std::mt19937 rng(11);
  Case c = random_case(rng, true);
  int src = c.seqs[0].pages[0], dst = c.n_pool - 1;
  int32_t s = src, d = dst;
  cpu_kv_copy_pages(c.kv, Tensor(&s, DType::I32, {1}), Tensor(&d, DType::I32, {1}));
  int64_t pe = static_cast<int64_t>(c.Hkv) * c.P * c.D;
  EXPECT_EQ(0, std::memcmp(c.k.ptr<float>() + src * pe, c.k.ptr<float>() + dst * pe, pe * 4));
  EXPECT_EQ(0, std::memcmp(c.v.ptr<float>() + src * pe, c.v.ptr<float>() + dst * pe, pe * 4));
  EXPECT_EQ(0, std::memcmp(c.sum.ptr<float>() + src * c.Hkv * c.D, c.sum.ptr<float>() + dst * c.Hkv * c.D, c.Hkv * c.D * 4));
}

TEST(AttnCpu, BadInputsThrow) {
  std::mt19937 rng(12);
  Case c = random_case(rng, true);
  AttnPolicy bad;
  bad.kind = AttnKind::Local;
  bad.local_pages = 0;
  EXPECT_THROW(run(c, bad), Error);
  c.table[0] = c.n_pool + 5;
  EXPECT_THROW(run(c, AttnPolicy{}), Error);
  int32_t slot = c.n_pool * c.P;
  std::vector<float> kk(c.Hkv * c.D);
  Tensor kt(kk.data(), DType::F32, {1, c.Hkv, c.D});
  EXPECT_THROW(cpu_kv_write(c.kv, kt, kt, Tensor(&slot, DType::I32, {1})), Error);
}

// The attention inner loops at the AVX2 level against the portable level, for
// head sizes with and without a tail of 8 and chunks of every length.
TEST(AttnCpu, Avx2KernelsMatchPortable) {
  const cpu::VectorKernels* avx2 = cpu::avx2_vector_kernels();
  if (!avx2) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  const cpu::VectorKernels& port = cpu::portable_vector_kernels();
  std::mt19937 rng(5);
  for (int d : {8, 13, 64, 72, 128}) {
    for (int heads : {1, 3, 5}) {
      for (int n : {1, 3, 7, 32}) {
        std::vector<float> q(heads * d), k(n * d), v(n * d), w(heads * 32);
        for (float& x : q) x = randn(rng);
        for (float& x : k) x = randn(rng);
        for (float& x : v) x = randn(rng);
        for (float& x : w) x = std::fabs(randn(rng));
        std::vector<float> la(heads * 32), lp(heads * 32);
        avx2->logits(q.data(), heads, k.data(), n, d, 0.125f, la.data(), 32);
        port.logits(q.data(), heads, k.data(), n, d, 0.125f, lp.data(), 32);
        for (int g = 0; g < heads; ++g)
          for (int j = 0; j < n; ++j)
            ASSERT_NEAR(la[g * 32 + j], lp[g * 32 + j], 1e-5 * std::sqrt(double(d))) << "d=" << d << " n=" << n;
        std::vector<float> rescale(heads);
        for (int g = 0; g < heads; ++g) rescale[g] = g % 2 ? 0.25f : 1.f;
        std::vector<float> aa(heads * d), ap(heads * d);
        for (int i = 0; i < heads * d; ++i) aa[i] = ap[i] = randn(rng);
        avx2->accumulate(aa.data(), heads, rescale.data(), w.data(), 32, v.data(), n, d);
        port.accumulate(ap.data(), heads, rescale.data(), w.data(), 32, v.data(), n, d);
        for (int i = 0; i < heads * d; ++i) ASSERT_NEAR(aa[i], ap[i], 1e-5 * n) << "d=" << d << " n=" << n << " i=" << i;
      }
    }
  }
}

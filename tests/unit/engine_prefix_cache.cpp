// The prefix cache through the engine on the CPU (batch-invariant ops): with
// --prefix-cache, requests whose prompts share full pages with earlier ones
// (the same prompt, a common head with other tails, prompts shorter than a
// page, Best-of-N) give the same tokens and logprobs, bit for bit, as without
// it, with overlap and graphs, in a pool small enough to evict, and under
// block top-k (which scores the shared pages' key summaries); the stats
// count the prompt rows the cache served, and an idle engine uses no page
// while the cache keeps some.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine_test_util.h"

using namespace kf;

namespace {

struct Fixture {
  std::unique_ptr<Backend> be = make_cpu_backend(CpuOptions{2, false});
  Model model = Model::random(test::tiny_llama_config(), *be, 7);
};
Fixture& fx() {
  static Fixture f;
  return f;
}

std::vector<int> tokens(int len, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int> p(len);
  for (int& t : p) t = rng() % 97;
  return p;
}
std::vector<int> concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Request request(const std::vector<int>& prompt, int n, int max_tokens, int64_t key) {
  Request r;
  r.prompt = prompt;
  r.n = n;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 1.f;
  r.sampling.top_p = 0.9f;
  r.sampling.seed = 99;
  r.rng_key = key;  // keyed by the request, not by submission order
  r.logprobs = 2;
  return r;
}

EngineConfig config(AttnKind kind, int kv_pages, bool prefix_cache) {
  EngineConfig c;
  c.page_size = 4;
  c.kv_pages = kv_pages;
  c.policy.kind = kind;
  c.policy.local_pages = 1;
  c.policy.topk_pages = 1;
  c.max_step_tokens = 32;
  c.repetition.enabled = false;
  c.prefix_cache = prefix_cache;
  return c;
}

using Outputs = std::vector<std::vector<SampleResult>>;
struct Waves {
  Outputs out;
  std::vector<int> cached_tokens;  // per request: FinishedRequest::cached_prompt_tokens
  std::vector<EngineStats> after_wave;  // the engine's stats once each wave has finished
  int used_idle = -1, cached_idle = -1;
  int64_t evictions = 0;
};

// Each wave's requests are submitted together once the wave before has
// finished, so a wave shares what the earlier ones computed.
Waves run_waves(const EngineConfig& cfg, const std::vector<std::vector<Request>>& waves) {
  Engine e(fx().model, *fx().be, cfg);
  Waves run;
  for (const std::vector<Request>& wave : waves) {
    std::vector<int64_t> ids;
    for (const Request& r : wave) ids.push_back(e.submit(r));
    e.run();
    std::map<int64_t, FinishedRequest> done;
    for (FinishedRequest& f : e.take_finished()) done[f.id] = std::move(f);
    for (int64_t id : ids) {
      run.out.push_back(done.at(id).samples);
      run.cached_tokens.push_back(done.at(id).cached_prompt_tokens);
    }
    run.after_wave.push_back(e.stats());
  }
  run.used_idle = e.kv_pages_used();
  run.cached_idle = e.kv_pages_cached();
  run.evictions = e.kv().evictions();
  EXPECT_EQ(e.kv().check_consistency(), "");
  return run;
}

void expect_same(const Outputs& a, const Outputs& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size());
    for (size_t j = 0; j < a[i].size(); ++j) {
      const SampleResult &x = a[i][j], &y = b[i][j];
      EXPECT_EQ(x.tokens, y.tokens) << "request " << i << " sample " << j;
      EXPECT_EQ(x.stop, y.stop) << "request " << i << " sample " << j;
      ASSERT_EQ(x.logprobs.size(), y.logprobs.size()) << "request " << i << " sample " << j;
      for (size_t t = 0; t < x.logprobs.size(); ++t) {  // the same bits
        EXPECT_EQ(x.logprobs[t].token, y.logprobs[t].token);
        EXPECT_EQ(x.logprobs[t].logprob, y.logprobs[t].logprob) << "request " << i << " sample " << j << " token " << t;
        EXPECT_EQ(x.logprobs[t].top, y.logprobs[t].top);
      }
    }
  }
}

// The waves without and with the cache (dense, a large pool), overlap and
// graphs as given; the outputs must be the same bits.
struct Both {
  Waves without, with;
};
Both run_both(const std::vector<std::vector<Request>>& waves, EngineConfig::Mode overlap) {
  EngineConfig off = config(AttnKind::Dense, 400, false), on = config(AttnKind::Dense, 400, true);
  off.overlap = on.overlap = off.graphs = on.graphs = overlap;
  Both b{run_waves(off, waves), run_waves(on, waves)};
  expect_same(b.without.out, b.with.out);
  return b;
}
const EngineConfig::Mode kOverlaps[] = {EngineConfig::Mode::Off, EngineConfig::Mode::Always};
const char* overlap_name(EngineConfig::Mode m) { return m == EngineConfig::Mode::Off ? "overlap off" : "overlap on"; }

// A 10-token head shared by the prompts below (pages of 4 tokens).
const std::vector<int> kHead = tokens(10, 1);
std::vector<int> with_tail(int tail_len, int first, uint32_t seed) {
  std::vector<int> tail = tokens(tail_len, seed);
  tail[0] = first;  // tails that differ from their first token
  return concat(kHead, tail);
}

}  // namespace

TEST(EnginePrefixCache, SharedPromptsGiveTheSameTokensAndLogprobsAndCountCachedRows) {
  const std::vector<int> p15 = with_tail(5, 11, 2);  // 3 full pages, the third with its tail
  const std::vector<int> p17 = with_tail(7, 12, 3);  // another tail: the first 2 pages are p15's
  const std::vector<int> p3(kHead.begin(), kHead.begin() + 3), p8(kHead.begin(), kHead.begin() + 8);
  const std::vector<std::vector<Request>> waves = {
      {request(p15, 1, 12, 1)},
      {request(p15, 1, 12, 2), request(p17, 1, 10, 3), request(p3, 1, 9, 4), request(p8, 2, 11, 5),
       request(p15, 3, 8, 6)}};
  // Rows the second wave takes from the cache: p15 again 3 pages (12 rows,
  // three left), p17 2 (8), p3 none (shorter than a page), p8 6 (two rows
  // stay: it keeps part of its second page and copies it), p15 with n = 3 12
  // (once: its samples fork after the prompt).
  const int64_t want_cached = 12 + 8 + 0 + 6 + 12;
  for (EngineConfig::Mode overlap : kOverlaps) {
    SCOPED_TRACE(overlap_name(overlap));
    const auto [without, with] = run_both(waves, overlap);
    const EngineStats &w = with.after_wave.back(), &wo = without.after_wave.back();
    // Each request's share, as the server reports it (usage.prompt_tokens_details.cached_tokens).
    EXPECT_EQ(with.cached_tokens, (std::vector<int>{0, 12, 8, 0, 6, 12}));
    EXPECT_EQ(without.cached_tokens, std::vector<int>(6, 0));
    EXPECT_EQ(with.after_wave[0].prefix_cached_rows, 0);
    EXPECT_EQ(w.prefix_cached_rows, want_cached);
    EXPECT_EQ(w.since(with.after_wave[0]).prefix_cached_rows, want_cached);
    EXPECT_EQ(wo.prefix_cached_rows, 0);
    EXPECT_EQ(w.prefill_tokens, wo.prefill_tokens - want_cached);
    EXPECT_EQ(w.decode_tokens, wo.decode_tokens);
    EXPECT_EQ(w.preemptions, 0);
    // Idle: no page held by a sequence, the prompts' full pages cached.
    EXPECT_EQ(with.used_idle, 0);
    EXPECT_EQ(without.used_idle, 0);
    EXPECT_EQ(without.cached_idle, 0);
    // At least p15's 3 full pages and p17's third and fourth; the samples' full pages too (dense).
    EXPECT_GE(with.cached_idle, 5);
    EXPECT_GT(w.kv_pages_peak, 0);
    EXPECT_LE(w.kv_pages_peak, wo.kv_pages_peak);
  }
}

// Requests of one prompt submitted together: the first prefills it, the
// others wait for the step that writes its pages and then compute only its
// last two rows; a request of another prompt behind them is not held up.
TEST(EnginePrefixCache, IdenticalPromptsSubmittedTogetherShareAfterOneStep) {
  const std::vector<int> p = tokens(24, 11), q = tokens(13, 12);
  const std::vector<std::vector<Request>> waves = {
      {request(p, 1, 10, 1), request(p, 1, 12, 2), request(q, 1, 9, 3), request(p, 2, 8, 4), request(p, 1, 11, 5)}};
  for (EngineConfig::Mode overlap : kOverlaps) {
    SCOPED_TRACE(overlap_name(overlap));
    const auto [without, with] = run_both(waves, overlap);
    const EngineStats &w = with.after_wave.back(), &wo = without.after_wave.back();
    EXPECT_EQ(w.prefix_cached_rows, 3 * 22);
    EXPECT_EQ(w.prefill_tokens, wo.prefill_tokens - 3 * 22);
    EXPECT_EQ(wo.prefill_tokens, 4 * 24 + 13);
  }
}

// A chat's next turn: its prompt quotes the first turn's prompt and answer.
// Under dense attention a generated token's row is what a prefill computes
// (bit for bit on the CPU: run_both checks the tokens and logprobs), so the
// answer's full pages are indexed and the next turn shares them too, up to
// all but its last two rows; under a sparse policy its decode rows are not
// a prefill's, and only the first prompt's pages are shared.
TEST(EnginePrefixCache, ANextTurnSharesTheAnswersPages) {
  const std::vector<int> p = tokens(18, 21), user2 = tokens(5, 22);
  Request first = request(p, 1, 15, 1);
  first.ignore_eos = true;  // 15 tokens: rows for 18 + 14 inputs, 8 full pages of 4
  for (EngineConfig::Mode overlap : kOverlaps) {
    SCOPED_TRACE(overlap_name(overlap));
    EngineConfig cfg = config(AttnKind::Dense, 400, true);
    cfg.overlap = cfg.graphs = overlap;
    const Waves one = run_waves(cfg, {{first}});
    const std::vector<int>& answer = one.out[0][0].tokens;
    ASSERT_EQ(answer.size(), 15u);
    const std::vector<int> turn2 = concat(concat(p, answer), user2);  // 38 tokens
    const auto [without, with] = run_both({{first}, {request(turn2, 1, 6, 2)}}, overlap);
    // 32 rows of the first request are computed (its last token is not an input): 8 pages.
    EXPECT_EQ(with.cached_tokens, (std::vector<int>{0, 32}));
    EXPECT_EQ(with.after_wave.back().prefill_tokens, without.after_wave.back().prefill_tokens - 32);
  }
  // Block top-k: the answer's pages were decode rows under the sparse policy: the prompt's 4 pages only.
  EngineConfig sparse = config(AttnKind::BlockTopK, 400, true);
  const Waves one = run_waves(sparse, {{first}});
  const std::vector<int> turn2 = concat(concat(p, one.out[0][0].tokens), user2);
  const Waves two = run_waves(sparse, {{first}, {request(turn2, 1, 6, 2)}});
  EXPECT_EQ(two.cached_tokens, (std::vector<int>{0, 16}));
  EngineConfig sparse_off = config(AttnKind::BlockTopK, 400, false);
  expect_same(run_waves(sparse_off, {{first}, {request(turn2, 1, 6, 2)}}).out, two.out);
}

// A pool that holds little more than one request's pages: cached pages are
// evicted for new ones and sequences are preempted, and the tokens still
// equal those of a large pool without the cache.
TEST(EnginePrefixCache, SmallPoolEvictsAndPreemptsButChangesNoOutput) {
  const std::vector<int> a = with_tail(14, 20, 4), b = with_tail(9, 21, 5), c = tokens(26, 6);
  const std::vector<std::vector<Request>> waves = {
      {request(a, 1, 10, 1)},
      {request(b, 2, 10, 2), request(a, 1, 12, 3)},
      {request(c, 1, 10, 4)},
      {request(a, 2, 9, 5), request(c, 1, 8, 6), request(b, 1, 7, 7), request(a, 1, 10, 8)}};
  const Waves want = run_waves(config(AttnKind::Dense, 400, false), waves);
  for (EngineConfig::Mode overlap : kOverlaps) {
    EngineConfig tight = config(AttnKind::Dense, 16, true);
    tight.overlap = overlap;
    const Waves got = run_waves(tight, waves);
    expect_same(want.out, got.out);
    EXPECT_GT(got.evictions, 0);
    EXPECT_EQ(got.after_wave.back().prefix_cache_evictions, got.evictions) << "EngineStats counts the KV cache's";
    EXPECT_GT(got.after_wave.back().preemptions, 0);
    EXPECT_GT(got.after_wave.back().prefix_cached_rows, 0);
    EXPECT_LE(got.after_wave.back().kv_pages_peak, 16);
    EXPECT_EQ(got.used_idle, 0);
  }
}

// Block top-k scores candidate pages by their key summaries: a shared page's
// summary, written by the step that completed it for another request, is the
// one this request's own prefill would have written, so the pages chosen and
// the tokens are the same (f32 and int8 summaries). The prompts have one
// row past full pages (4k + 1 tokens): a request keeps all but their last
// two rows, so it copies the last full page and writes its last row (and
// summary) again, where a one-row chunk would have been a sparse decode row
// instead of a dense prefill row.
TEST(EnginePrefixCache, BlockTopKOnSharedPagesGivesTheSameTokens) {
  const std::vector<int> long_a = with_tail(23, 30, 8), long_b = with_tail(31, 31, 9);  // 33 and 41 tokens
  const std::vector<std::vector<Request>> waves = {
      {request(long_a, 1, 20, 1), request(long_b, 1, 16, 2)},
      {request(long_a, 2, 20, 3), request(long_b, 1, 24, 4), request(with_tail(18, 32, 10), 1, 20, 5)}};
  for (bool i8 : {false, true}) {
    SCOPED_TRACE(i8 ? "int8 summaries" : "f32 summaries");
    EngineConfig off = config(AttnKind::BlockTopK, 400, false), on = config(AttnKind::BlockTopK, 400, true);
    off.i8_summaries = on.i8_summaries = i8;
    const Waves without = run_waves(off, waves), with = run_waves(on, waves);
    expect_same(without.out, with.out);
    // The first wave: long_b waits for long_a's first chunk (33 rows do not
    // fit in one step of 32), then takes the head's 2 pages. The second:
    // 33 - 2 rows, 41 - 2, and the head's 2 pages.
    const EngineStats& s = with.after_wave.back();
    EXPECT_EQ(with.after_wave[0].prefix_cached_rows, 8);
    EXPECT_EQ(s.since(with.after_wave[0]).prefix_cached_rows, 31 + 39 + 8);
    EXPECT_LT(s.pages_read_per_step(), 4.0);  // the policy really selects (of up to 16 pages)
  }
  // The policy matters: dense decoding gives other tokens.
  EXPECT_NE(run_waves(config(AttnKind::Dense, 400, true), waves).out[2][0].tokens,
            run_waves(config(AttnKind::BlockTopK, 400, true), waves).out[2][0].tokens);
}

// Scheduler property test without a model: a shadow KV pool stores each
// slot's token, and a fake "model" derives the next token from the tokens it
// reads back through the page table. Any lost, stale or shared-but-written
// KV changes the outputs, so comparing tight-pool runs with an unconstrained
// run checks admission, chunking, preemption, recompute, fork and CoW, and
// with the prefix cache, pages shared across requests and their eviction.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "engine/scheduler.h"
#include "util/error.h"

using namespace kf;

namespace {

struct Req {
  std::vector<int> prompt;
  int n = 1, max_tokens = 1;
};

struct Result {
  std::map<std::pair<int, int>, std::vector<int>> tokens;  // (request, sample) -> generated
  std::map<int, std::string> errors;                       // request -> error
  int64_t preemptions = 0, prefix_cached_rows = 0;
  std::set<int> cancelled;  // requests cancelled before they ended (no tokens recorded)
};

// overlap: a step's tokens are computed when it is "launched" (right after
// it is scheduled, as a device would) but reach the scheduler only after the
// next step was scheduled, as with the engine's one step in flight: rows whose
// input is such a pending token write it from the device's copy.
// prefix: with the prefix cache (shared pages are read back like any other).
// cancel_seed: if not 0, before each step one unfinished request in 8 (at
// random) is cancelled, as a client hanging up: all its sequences finish.
Result simulate(const std::vector<Req>& reqs, int n_pages, int page_size, int budget, bool chunked_replay,
                bool overlap = false, bool prefix = false, uint32_t cancel_seed = 0) {
  KvCache kv(n_pages, page_size, prefix);
  SchedulerConfig cfg;
  cfg.max_step_tokens = budget;
  cfg.max_running = 64;
  cfg.chunked_replay = chunked_replay;
  cfg.prefix_cache = prefix;
  Scheduler sched(kv, cfg);
  std::vector<int> shadow(static_cast<size_t>(n_pages) * page_size, -1);
  int64_t next_id = 0;
  for (size_t r = 0; r < reqs.size(); ++r) {
    Sequence s;
    s.id = next_id;
    s.request = static_cast<int64_t>(r);
    s.arrival = next_id;
    s.prompt = reqs[r].prompt;
    s.fork_children = reqs[r].n - 1;
    s.max_new = reqs[r].max_tokens;
    next_id += reqs[r].n;
    sched.add(s);
  }
  Result out;
  std::map<int64_t, int> device_token;               // the newest sampled token of each sequence, on the "device"
  std::vector<std::pair<int64_t, int>> in_flight;    // (sequence, token) of the step not collected yet
  auto collect = [&](const std::vector<std::pair<int64_t, int>>& step) {
    for (const auto& [id, tok] : step) {
      Sequence& s = sched.seq(id);
      --s.pending;
      if (s.finished) continue;
      s.generated.push_back(tok);
      if (static_cast<int>(s.generated.size()) >= reqs[s.request].max_tokens) {
        out.tokens[{static_cast<int>(s.request), s.sample}] = s.generated;
        sched.finish(id, StopReason::Length);
      }
    }
  };
  std::mt19937 cancel_rng(cancel_seed);
  for (int step = 0; !sched.done() || !in_flight.empty(); ++step) {
    if (step >= 20000) {
      ADD_FAILURE() << "no progress after 20000 steps";
      return out;
    }
    if (cancel_seed != 0 && cancel_rng() % 8 == 0) {
      std::map<int64_t, std::vector<int64_t>> open;  // request -> its unfinished sequences
      for (const auto& [id, q] : sched.sequences())
        if (!q.finished) open[q.request].push_back(id);
      if (!open.empty()) {
        auto it = std::next(open.begin(), static_cast<long>(cancel_rng() % open.size()));
        out.cancelled.insert(static_cast<int>(it->first));
        for (int64_t id : it->second) sched.finish(id, StopReason::Cancelled);
      }
    }
    StepPlan plan = sched.schedule();
    for (int64_t id : plan.failed) out.errors[static_cast<int>(sched.seq(id).request)] = sched.seq(id).error;
    EXPECT_LE(plan.rows, budget);
    EXPECT_LE(sched.n_running(), cfg.max_running);
    for (const PageCopy& c : plan.copies)
      for (int o = 0; o < page_size; ++o) shadow[c.dst * page_size + o] = shadow[c.src * page_size + o];
    // No row lands in a page another sequence holds (the children forked
    // from the writer this step read it only from the next step on): shared
    // pages are copied first, whatever tokens they hold.
    std::map<int, std::vector<int64_t>> holders;
    for (const auto& [id, q] : sched.sequences())
      if (q.running)
        for (int page : kv.pages(id)) holders[page].push_back(id);
    size_t row = 0;
    for (const StepSeq& ss : plan.seqs)
      for (int i = 0; i < ss.n; ++i)
        for (int64_t h : holders[plan.slots[row++] / page_size])
          EXPECT_TRUE(h >= ss.id && h <= ss.id + ss.children) << "seq " << ss.id << " writes a page seq " << h << " holds";
    size_t slot = 0;
    for (const StepSeq& ss : plan.seqs) {
      const Sequence& s = sched.seq(ss.id);
      const int np = static_cast<int>(s.prompt.size());
      if (!chunked_replay && ss.n == 1) {
        EXPECT_TRUE(ss.start >= np - 1 || np == 1) << "1-row prompt chunk";
      }
      if (!chunked_replay && ss.start + ss.n > np) {
        EXPECT_EQ(ss.n, 1) << "generated tokens replayed in a chunk";
      }
      for (int i = 0; i < ss.n; ++i) {
        const int pos = ss.start + i;
        const int tok = pos < s.known() ? s.token_at(pos) : device_token.at(ss.id);
        shadow[plan.slots[slot++]] = tok;
      }
    }
    EXPECT_EQ(slot, plan.slots.size());
    // The "device": each sampled sequence (and the siblings forked from it)
    // hashes its whole context as read back through its page table.
    std::vector<std::pair<int64_t, int>> sampled;
    for (const StepSeq& ss : plan.seqs) {
      if (!ss.sample) continue;
      for (int c = 0; c <= ss.children; ++c) {
        const int64_t id = ss.id + c;
        const Sequence& s = sched.seq(id);
        const auto& pages = kv.pages(id);
        uint64_t h = 1469598103934665603ull + static_cast<uint64_t>(s.sample) * 7919;
        for (int t = 0; t < ss.start + ss.n; ++t) {
          const int tok = shadow[pages[t / page_size] * page_size + t % page_size];
          const int want = t < s.known() ? s.token_at(t) : device_token.at(id);
          EXPECT_EQ(tok, want) << "KV of seq " << id << " position " << t << " corrupted";
          h = (h ^ static_cast<uint64_t>(tok + 1)) * 1099511628211ull;
        }
        sampled.emplace_back(id, static_cast<int>(h % 1000));
      }
    }
    for (const auto& [id, tok] : sampled) device_token[id] = tok;
    const bool stuck = plan.seqs.empty() && in_flight.empty();
    if (overlap) {
      collect(in_flight);
      in_flight = std::move(sampled);
    } else {
      collect(sampled);
    }
    if (stuck) {
      std::string state;
      for (const auto& [id, q] : sched.sequences())
        if (!q.finished)
          state += fmt::format(" [seq {} running {} cached {} known {} pending {} fork {}]", id, q.running, q.n_cached,
                               q.known(), q.pending, q.fork_children);
      EXPECT_TRUE(sched.done()) << "empty plan with work left:" << state << " free " << kv.free_pages()
                                << " running " << sched.n_running();
      break;
    }
    if (::testing::Test::HasFailure()) return out;
  }
  EXPECT_EQ(kv.used_pages(), 0) << "pages leaked";
  EXPECT_EQ(kv.check_consistency(), "");
  out.preemptions = sched.preemptions();
  out.prefix_cached_rows = sched.prefix_cached_rows();
  return out;
}

}  // namespace

TEST(Scheduler, TightPoolsGiveTheUnconstrainedOutputs) {
  std::mt19937 rng(42);
  int64_t total_preemptions = 0;
  for (int iter = 0; iter < 60; ++iter) {
    const int page_size = 1 + rng() % 5;
    std::vector<Req> reqs(1 + rng() % 5);
    int max_ctx = 0;
    for (Req& r : reqs) {
      r.prompt.resize(1 + rng() % 20);
      for (int& t : r.prompt) t = rng() % 1000;
      r.n = 1 + rng() % 4;
      r.max_tokens = 1 + rng() % 25;
      max_ctx = std::max<int>(max_ctx, static_cast<int>(r.prompt.size()) + r.max_tokens);
    }
    const bool chunked = iter % 2, overlap = (iter / 2) % 2;
    Result want = simulate(reqs, 4000, page_size, 64, chunked);
    if (HasFailure()) return;
    ASSERT_EQ(want.preemptions, 0);
    // Just enough pages for the longest single sample, up to a few more.
    const int tight = (max_ctx + page_size - 1) / page_size + static_cast<int>(rng() % 4);
    const int budget = 3 + static_cast<int>(rng() % 12);
    Result got = simulate(reqs, tight, page_size, budget, chunked, overlap);
    if (HasFailure()) return;
    EXPECT_TRUE(got.errors.empty());
    EXPECT_EQ(want.tokens, got.tokens) << "iter " << iter << " pages " << tight << " budget " << budget
                                       << (overlap ? " (overlap)" : "");
    total_preemptions += got.preemptions;
  }
  EXPECT_GT(total_preemptions, 50);  // the tight runs really preempt
}

TEST(Scheduler, OversizedPromptFailsAndTheOthersFinish) {
  std::vector<Req> reqs = {{{1, 2, 3, 4, 5}, 2, 6}, {std::vector<int>(40, 9), 1, 3}, {{7, 8}, 1, 9}};
  Result got = simulate(reqs, 6, 4, 8, false);
  ASSERT_EQ(got.errors.size(), 1u);
  EXPECT_NE(got.errors[1].find("40 tokens needs 10 KV pages"), std::string::npos) << got.errors[1];
  Result want = simulate({reqs[0], reqs[2]}, 100, 4, 8, false);
  EXPECT_EQ(got.tokens.at({0, 0}), want.tokens.at({0, 0}));
  EXPECT_EQ(got.tokens.at({0, 1}), want.tokens.at({0, 1}));
  EXPECT_EQ(got.tokens.at({2, 0}), want.tokens.at({1, 0}));
}

TEST(Scheduler, BadConfigThrows) {
  KvCache kv(4, 4);
  SchedulerConfig c;
  c.max_step_tokens = 2;
  EXPECT_THROW(Scheduler(kv, c), Error);
  Scheduler s(kv, SchedulerConfig{});
  EXPECT_THROW(s.add(Sequence{}), Error);  // empty prompt
}

// With the prefix cache, prompts that share prefixes (several requests of
// one prompt, common heads with other tails) in tight pools, which preempt
// and evict, give the outputs of an unconstrained run without the cache:
// a shared page holds exactly what the sequence would have written.
TEST(Scheduler, PrefixCacheInTightPoolsGivesTheUnconstrainedOutputs) {
  std::mt19937 rng(7);
  int64_t cached_rows = 0, preemptions = 0;
  for (int iter = 0; iter < 60; ++iter) {
    const int page_size = 1 + rng() % 5;
    std::vector<std::vector<int>> heads(2);
    for (auto& h : heads) {
      h.resize(4 + rng() % 16);
      for (int& t : h) t = rng() % 1000;
    }
    std::vector<Req> reqs(2 + rng() % 8);
    int max_ctx = 0;
    for (Req& r : reqs) {
      r.prompt = heads[rng() % 2];
      r.prompt.resize(1 + rng() % r.prompt.size());
      for (int tail = rng() % 6; tail > 0; --tail) r.prompt.push_back(rng() % 1000);
      r.n = 1 + rng() % 3;
      r.max_tokens = 1 + rng() % 20;
      max_ctx = std::max<int>(max_ctx, static_cast<int>(r.prompt.size()) + r.max_tokens);
    }
    const bool chunked = iter % 2, overlap = (iter / 2) % 2;
    Result want = simulate(reqs, 4000, page_size, 64, chunked);
    if (HasFailure()) return;
    const int tight = (max_ctx + page_size - 1) / page_size + static_cast<int>(rng() % 6);
    const int budget = 3 + static_cast<int>(rng() % 12);
    Result got = simulate(reqs, tight, page_size, budget, chunked, overlap, true);
    if (HasFailure()) return;
    EXPECT_TRUE(got.errors.empty());
    EXPECT_EQ(want.tokens, got.tokens) << "iter " << iter << " pages " << tight << " budget " << budget
                                       << (overlap ? " (overlap)" : "");
    cached_rows += got.prefix_cached_rows;
    preemptions += got.preemptions;
  }
  EXPECT_GT(cached_rows, 200);  // the cache really serves prompt rows
  EXPECT_GT(preemptions, 20);
}

// Clients hang up at random (a request's sequences finish before they end,
// a prompt's first writer among them, with requests waiting for its pages):
// every other request still gets the unconstrained run's tokens, in tight
// pools with the prefix cache, and no page leaks.
TEST(Scheduler, PrefixCacheWithCancelsGivesTheOthersTheirOutputs) {
  std::mt19937 rng(11);
  int cancelled = 0, kept = 0;
  for (int iter = 0; iter < 40; ++iter) {
    const int page_size = 1 + rng() % 4;
    std::vector<int> head(6 + rng() % 12);
    for (int& t : head) t = rng() % 1000;
    std::vector<Req> reqs(4 + rng() % 8);
    int max_ctx = 0;
    for (Req& r : reqs) {
      r.prompt = head;
      r.prompt.resize(2 + rng() % (head.size() - 1));
      for (int tail = rng() % 4; tail > 0; --tail) r.prompt.push_back(rng() % 1000);
      r.n = 1 + rng() % 3;
      r.max_tokens = 1 + rng() % 16;
      max_ctx = std::max<int>(max_ctx, static_cast<int>(r.prompt.size()) + r.max_tokens);
    }
    const bool chunked = iter % 2, overlap = (iter / 2) % 2;
    const Result want = simulate(reqs, 4000, page_size, 64, chunked);
    if (HasFailure()) return;
    const int pages = (max_ctx + page_size - 1) / page_size + static_cast<int>(rng() % 8);
    const int budget = 3 + static_cast<int>(rng() % 12);
    const Result got = simulate(reqs, pages, page_size, budget, chunked, overlap, true, 100 + iter);
    if (HasFailure()) return;
    for (const auto& [key, tokens] : want.tokens) {
      if (got.cancelled.count(key.first)) continue;
      ++kept;
      EXPECT_EQ(got.tokens.count(key) ? got.tokens.at(key) : std::vector<int>{}, tokens)
          << "iter " << iter << " request " << key.first << " sample " << key.second;
    }
    cancelled += static_cast<int>(got.cancelled.size());
  }
  EXPECT_GT(cancelled, 30);
  EXPECT_GT(kept, 200);
}

namespace {

// One scheduler with the prefix cache; a step's sampled tokens (all 1) are
// collected at once, and a sequence ends at max_new.
struct Driver {
  KvCache kv;
  Scheduler sched;
  int64_t next_id = 0;
  Driver(int n_pages, int page_size, int budget = 64, bool chunked_replay = false)
      : kv(n_pages, page_size, true), sched(kv, config(budget, chunked_replay)) {}
  static SchedulerConfig config(int budget, bool chunked_replay) {
    SchedulerConfig c;
    c.max_step_tokens = budget;
    c.prefix_cache = true;
    c.chunked_replay = chunked_replay;
    return c;
  }
  int64_t add(const std::vector<int>& prompt, int max_new, bool echo = false) {
    Sequence s;
    s.id = s.request = s.arrival = next_id;
    s.prompt = prompt;
    s.max_new = max_new;
    s.echo = echo;
    sched.add(s);
    return next_id++;
  }
  StepPlan step() {
    StepPlan plan = sched.schedule();
    for (const StepSeq& ss : plan.seqs) {
      if (!ss.sample) continue;
      Sequence& s = sched.seq(ss.id);
      --s.pending;
      s.generated.push_back(1);
      if (static_cast<int>(s.generated.size()) >= s.max_new) sched.finish(ss.id, StopReason::Length);
    }
    return plan;
  }
  void run() {
    for (int i = 0; !sched.done(); ++i) {
      if (i == 10000) {
        ADD_FAILURE() << "no progress";
        return;
      }
      step();
    }
  }
};

// The plan's rows of sequence `id` ({-1, 0} when it has none).
StepSeq rows_of(const StepPlan& plan, int64_t id) {
  for (const StepSeq& ss : plan.seqs)
    if (ss.id == id) return ss;
  return StepSeq{id, -1, 0};
}

std::vector<int> iota(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = 10 + i;
  return v;
}

}  // namespace

// A fresh sequence starts with the full pages of its prompt that earlier
// steps indexed, up to all but its last two prompt rows (a one-row chunk would
// be a decode row): it keeps part of a page whose last rows it computes,
// through a copy.
TEST(Scheduler, PrefixCacheStartsFreshSequencesPastTheSharedPages) {
  Driver d(100, 4);
  const std::vector<int> p11 = iota(11), p12 = iota(12), p9 = iota(9), p5 = iota(5);
  d.add(p11, 3);
  StepPlan plan = d.step();
  ASSERT_EQ(plan.seqs.size(), 1u);
  EXPECT_EQ(plan.seqs[0].n, 11);
  EXPECT_EQ(d.kv.indexed_pages(), 2);  // the full pages of its prompt, once its step is scheduled
  const int64_t b = d.add(p11, 3);
  plan = d.step();
  EXPECT_EQ(rows_of(plan, b).start, 8);
  EXPECT_EQ(rows_of(plan, b).n, 3);
  EXPECT_TRUE(rows_of(plan, b).sample);
  EXPECT_TRUE(plan.copies.empty());
  EXPECT_EQ(d.kv.pages(b)[0], d.kv.pages(0)[0]);
  EXPECT_EQ(d.kv.pages(b)[1], d.kv.pages(0)[1]);
  EXPECT_EQ(d.sched.prefix_cached_rows(), 8);

  const int64_t c = d.add(p12, 2);  // its third page is new: indexed by its step
  plan = d.step();
  EXPECT_EQ(rows_of(plan, c).start, 8);
  EXPECT_EQ(d.kv.indexed_pages(), 3);
  const std::vector<int> c_pages = d.kv.pages(c);
  // All 3 pages indexed: it keeps 10 rows, the third page through a copy.
  const int64_t c2 = d.add(p12, 2);
  plan = d.step();
  EXPECT_EQ(d.kv.match_prefix(p12, 3).pages, 3);
  EXPECT_EQ(rows_of(plan, c2).start, 10);
  EXPECT_EQ(rows_of(plan, c2).n, 2);
  ASSERT_EQ(plan.copies.size(), 1u);
  EXPECT_EQ(plan.copies[0].src, c_pages[2]);
  EXPECT_EQ(d.kv.pages(c2)[2], plan.copies[0].dst);
  EXPECT_EQ(d.kv.pages(c2)[1], c_pages[1]);
  const int64_t e = d.add(p9, 2);  // 2 pages indexed, 7 rows kept
  plan = d.step();
  EXPECT_EQ(rows_of(plan, e).start, 7);
  EXPECT_EQ(rows_of(plan, e).n, 2);
  const int64_t f = d.add(p5, 2);  // 1 page indexed, 3 rows kept
  plan = d.step();
  EXPECT_EQ(rows_of(plan, f).start, 3);
  EXPECT_EQ(rows_of(plan, f).n, 2);
  const int64_t g = d.add(iota(2), 2);  // two rows: nothing kept
  plan = d.step();
  EXPECT_EQ(rows_of(plan, g).start, 0);
  EXPECT_EQ(d.sched.prefix_cached_rows(), 8 + 8 + 10 + 7 + 3);
  d.run();
  EXPECT_EQ(d.kv.used_pages(), 0);
  EXPECT_EQ(d.kv.cached_pages(), 3);  // the copies were not indexed: the entries existed
  EXPECT_EQ(d.kv.check_consistency(), "");
}

// Identical prompts arriving together: the first computes the prompt, the
// others wait for the step that writes its pages and then share them, while
// a request behind them with another prompt is admitted at once. A long
// prompt prefilled in chunks is waited for until its last shareable page.
TEST(Scheduler, PrefixCacheWaitsForPagesTheSameStepWrites) {
  {
    Driver d(100, 4);
    const std::vector<int> p = iota(10);
    std::vector<int> other(10, 7);
    const int64_t a = d.add(p, 2), b = d.add(p, 2), c = d.add(p, 2), o = d.add(other, 2);
    StepPlan plan = d.step();
    const std::vector<int> a_pages = d.kv.pages(a);
    EXPECT_EQ(rows_of(plan, a).start, 0);
    EXPECT_EQ(rows_of(plan, b).n, 0);
    EXPECT_EQ(rows_of(plan, c).n, 0);
    EXPECT_EQ(rows_of(plan, o).start, 0);
    EXPECT_EQ(rows_of(plan, o).n, 10);
    plan = d.step();
    EXPECT_EQ(rows_of(plan, b).start, 8);
    EXPECT_EQ(rows_of(plan, c).start, 8);
    EXPECT_EQ(d.kv.pages(b)[1], a_pages[1]);
    EXPECT_EQ(d.kv.pages(c)[1], a_pages[1]);
    EXPECT_EQ(d.sched.prefix_cached_rows(), 16);
    d.run();
    EXPECT_EQ(d.kv.check_consistency(), "");
  }
  {
    // 40 rows in chunks of 16: the second waits three steps, then keeps 38.
    Driver d(100, 4, 16);
    const std::vector<int> p = iota(40);
    const int64_t a = d.add(p, 2), b = d.add(p, 2);
    for (int i = 0; i < 3; ++i) {
      StepPlan plan = d.step();
      EXPECT_EQ(rows_of(plan, a).start, 16 * i);
      EXPECT_EQ(rows_of(plan, b).n, 0) << "step " << i;
    }
    StepPlan plan = d.step();
    EXPECT_EQ(rows_of(plan, b).start, 38);
    EXPECT_EQ(rows_of(plan, b).n, 2);
    EXPECT_EQ(d.sched.prefix_cached_rows(), 38);
    d.run();
    EXPECT_EQ(d.kv.check_consistency(), "");
  }
}

// Nothing is shared by echo sequences (their prompt rows' logits are
// wanted) or by a recompute; pages evicted from the cache are computed again.
TEST(Scheduler, PrefixCacheSkipsEchoAndEvictedPagesAndSharesWithRecomputes) {
  const std::vector<int> p = iota(10);
  {
    Driver d(100, 4);
    const int64_t a = d.add(p, 4);
    d.step();
    const int64_t echo = d.add(p, 2, true);
    StepPlan plan = d.step();
    EXPECT_EQ(rows_of(plan, echo).start, 0);
    EXPECT_NE(d.kv.pages(a)[0], d.kv.pages(echo)[0]);
    EXPECT_EQ(d.sched.prefix_cached_rows(), 0);
  }
  {
    // Two sequences of one prompt outgrow a pool of 7 pages of 2: the younger
    // is preempted, and its recompute shares the prompt's three pages (the
    // elder holds them) up to the last two rows of its context.
    Driver d(7, 2);
    const std::vector<int> q = iota(6);
    const int64_t a = d.add(q, 6);
    d.step();
    const int64_t b = d.add(q, 6);
    StepPlan plan = d.step();
    EXPECT_EQ(rows_of(plan, b).start, 4);
    bool recomputed = false;
    int recompute_shared = 0;
    for (int i = 0; !d.sched.done() && i < 1000; ++i) {
      plan = d.step();
      const StepSeq sb = rows_of(plan, b);
      if (sb.n > 0 && d.sched.seq(b).preemptions > 0 && !recomputed) {
        recomputed = true;
        // It has generated tokens, which it replays row by row (decode rows, as they were): its whole
        // prompt comes from the index, and its first row is the first replayed token's.
        EXPECT_GT(d.sched.seq(b).generated.size(), 1u);
        EXPECT_EQ(sb.start, 6);
        EXPECT_EQ(sb.n, 1);
        recompute_shared = sb.start;
      }
    }
    EXPECT_TRUE(recomputed);
    EXPECT_GT(d.sched.preemptions(), 0);
    EXPECT_EQ(d.sched.prefix_cached_rows(), 4 + recompute_shared);
    EXPECT_EQ(d.sched.seq(b).prefix_cached, 4) << "usage counts the first admission's";
    EXPECT_EQ(d.kv.used_pages(), 0);
    EXPECT_EQ(d.kv.check_consistency(), "");
    (void)a;
  }
  {
    // A pool of 5 pages of 4: another prompt evicts the cached pages of p.
    Driver d(5, 4);
    d.add(p, 2);
    d.run();
    EXPECT_EQ(d.kv.cached_pages(), 2);
    EXPECT_EQ(d.kv.match_prefix(p, 2).pages, 2);
    std::vector<int> other(17);
    for (int i = 0; i < 17; ++i) other[i] = 500 + i;
    d.add(other, 2);  // 5 pages: every cached page goes
    d.run();
    EXPECT_EQ(d.kv.evictions(), 2);
    const int64_t again = d.add(p, 2);
    StepPlan plan = d.step();
    EXPECT_EQ(rows_of(plan, again).start, 0);
    EXPECT_EQ(d.sched.prefix_cached_rows(), 0);
    d.run();
    EXPECT_EQ(d.kv.check_consistency(), "");
  }
}

// A recompute's shared rows: with its tokens replayed row by row, its whole
// prompt, unless that would leave a one-row prefill chunk (a 7-token prompt
// in pages of 2: 5 rows, its last two computed); with chunked replay (dense
// rows, whose generated tokens' pages are indexed too), up to all but the
// last two rows of its context. Two sequences of one prompt in pools
// too small for both preempt the younger; its recompute must start there.
TEST(Scheduler, PrefixCacheRecomputeSharesUpToItsLimit) {
  for (bool chunked : {false, true})
    for (int prompt_len : {6, 7})
      for (int pages = 7; pages <= 9; ++pages) {
        SCOPED_TRACE(::testing::Message() << (chunked ? "chunked" : "row replay") << ", prompt " << prompt_len
                                          << ", " << pages << " pages");
        Driver d(pages, 2, 64, chunked);
        const std::vector<int> q = iota(prompt_len);
        d.add(q, 7);
        d.step();
        const int64_t b = d.add(q, 7);
        int recomputes = 0;
        for (int i = 0; !d.sched.done() && i < 1000; ++i) {
          const int before = d.sched.seq(b).preemptions, running = d.sched.seq(b).running;
          const int generated = static_cast<int>(d.sched.seq(b).generated.size());
          const StepPlan plan = d.step();
          const StepSeq sb = rows_of(plan, b);
          if (sb.n == 0 || running || before == 0) continue;  // not a re-admission
          ++recomputes;
          const int total = prompt_len + generated;
          if (chunked) {  // the prompt's pages and the generated tokens' (dense rows are a prefill's)
            EXPECT_GE(sb.start, std::min(6, total - 2)) << "generated " << generated;
            EXPECT_LE(sb.start, total - 2);
            EXPECT_TRUE(sb.start % 2 == 0 || sb.start == total - 2) << sb.start;
          } else {  // replayed row by row: the prompt's pages only
            EXPECT_EQ(sb.start, generated > 0 ? (prompt_len == 7 ? 5 : 6) : prompt_len - 2) << "generated " << generated;
          }
          EXPECT_GE(sb.n, 1);
        }
        if (pages == 7) {
          EXPECT_GT(recomputes, 0);
        }
        EXPECT_EQ(d.kv.used_pages(), 0);
        EXPECT_EQ(d.kv.check_consistency(), "");
      }
}

// Admission counts cached pages as free, and the pages a sequence shares
// as pages it needs no more of.
TEST(Scheduler, PrefixCacheAdmissionCountsCachedAndSharedPages) {
  Driver d(4, 4);
  const std::vector<int> p = iota(13);  // 4 pages with the token it generates
  d.add(p, 1);
  d.run();
  EXPECT_EQ(d.kv.cached_pages(), 3);
  EXPECT_EQ(d.kv.free_pages(), 4);
  // 4 pages needed; it keeps pages 0 and 1 and 3 rows of page 2 (copied):
  // admitted into the pool's 1 free page (the copy) and page 2 itself, cached
  // again once copied and then evicted for page 3.
  const int64_t b = d.add(p, 1);
  StepPlan plan = d.step();
  EXPECT_EQ(rows_of(plan, b).start, 11);
  EXPECT_EQ(plan.copies.size(), 1u);
  EXPECT_EQ(d.kv.evictions(), 1);
  EXPECT_EQ(d.kv.check_consistency(), "");
  d.run();
  EXPECT_EQ(d.kv.used_pages(), 0);
  EXPECT_TRUE(d.kv.match_prefix(p, 3).in_flight);  // b's copy took the evicted page's place,
  d.step();                                        // and is shared from the next step on
  EXPECT_EQ(d.kv.match_prefix(p, 3).pages, 3);
  EXPECT_EQ(d.kv.check_consistency(), "");
}

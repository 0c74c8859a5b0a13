// Scheduler property test without a model: a shadow KV pool stores each
// slot's token, and a fake "model" derives the next token from the tokens it
// reads back through the page table. Any lost, stale or shared-but-written
// KV changes the outputs, so comparing tight-pool runs with an unconstrained
// run checks admission, chunking, preemption, recompute, fork and CoW.
#include <gtest/gtest.h>

#include <map>
#include <random>

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
  int64_t preemptions = 0;
};

Result simulate(const std::vector<Req>& reqs, int n_pages, int page_size, int budget, bool chunked_replay) {
  KvCache kv(n_pages, page_size);
  SchedulerConfig cfg;
  cfg.max_step_tokens = budget;
  cfg.chunked_replay = chunked_replay;
  Scheduler sched(kv, cfg);
  std::vector<int> shadow(static_cast<size_t>(n_pages) * page_size, -1);
  int64_t next_id = 0;
  std::map<int, int64_t> first_id;
  for (size_t r = 0; r < reqs.size(); ++r) {
    Sequence s;
    s.id = next_id;
    s.request = static_cast<int64_t>(r);
    s.arrival = next_id;
    s.prompt = reqs[r].prompt;
    s.fork_children = reqs[r].n - 1;
    first_id[static_cast<int>(r)] = next_id;
    next_id += reqs[r].n;
    sched.add(s);
  }
  Result out;
  for (int step = 0; !sched.done(); ++step) {
    if (step >= 20000) {
      ADD_FAILURE() << "no progress after 20000 steps";
      return out;
    }
    StepPlan plan = sched.schedule();
    for (int64_t id : plan.failed) out.errors[static_cast<int>(sched.seq(id).request)] = sched.seq(id).error;
    if (plan.seqs.empty()) {
      EXPECT_TRUE(sched.done()) << "empty plan with work left";
      break;
    }
    EXPECT_LE(plan.rows, budget);
    for (const PageCopy& c : plan.copies)
      for (int o = 0; o < page_size; ++o) shadow[c.dst * page_size + o] = shadow[c.src * page_size + o];
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
      for (int i = 0; i < ss.n; ++i) shadow[plan.slots[slot++]] = s.token_at(ss.start + i);
    }
    EXPECT_EQ(slot, plan.slots.size());
    for (const StepSeq& ss : plan.seqs) {
      if (!ss.sample) continue;
      std::vector<int64_t> group = {ss.id};
      Sequence& parent = sched.seq(ss.id);
      for (int c = 1; c <= parent.fork_children; ++c) {
        Sequence child;
        child.id = ss.id + c;
        child.request = parent.request;
        child.sample = parent.sample + c;
        child.arrival = parent.arrival + c;
        sched.fork(ss.id, child);
        group.push_back(child.id);
      }
      parent.fork_children = 0;
      for (int64_t id : group) {
        Sequence& s = sched.seq(id);
        // Fake model: hash of the whole context as read back from the pool.
        const auto& pages = kv.pages(id);
        uint64_t h = 1469598103934665603ull + static_cast<uint64_t>(s.sample) * 7919;
        for (int t = 0; t < ss.start + ss.n; ++t) {
          int tok = shadow[pages[t / page_size] * page_size + t % page_size];
          EXPECT_EQ(tok, s.token_at(t)) << "KV of seq " << id << " position " << t << " corrupted";
          h = (h ^ static_cast<uint64_t>(tok + 1)) * 1099511628211ull;
        }
        s.generated.push_back(static_cast<int>(h % 1000));
        const Req& r = reqs[s.request];
        if (static_cast<int>(s.generated.size()) >= r.max_tokens) {
          out.tokens[{static_cast<int>(s.request), s.sample}] = s.generated;
          sched.finish(id, StopReason::Length);
        }
      }
    }
    if (::testing::Test::HasFailure()) return out;
  }
  EXPECT_EQ(kv.pool().used(), 0) << "pages leaked";
  EXPECT_EQ(kv.check_consistency(), "");
  out.preemptions = sched.preemptions();
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
    const bool chunked = iter % 2;
    Result want = simulate(reqs, 4000, page_size, 64, chunked);
    if (HasFailure()) return;
    ASSERT_EQ(want.preemptions, 0);
    // Just enough pages for the longest single sample, up to a few more.
    const int tight = (max_ctx + page_size - 1) / page_size + static_cast<int>(rng() % 4);
    const int budget = 3 + static_cast<int>(rng() % 12);
    Result got = simulate(reqs, tight, page_size, budget, chunked);
    if (HasFailure()) return;
    EXPECT_TRUE(got.errors.empty());
    EXPECT_EQ(want.tokens, got.tokens) << "iter " << iter << " pages " << tight << " budget " << budget;
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

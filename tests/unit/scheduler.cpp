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

// overlap: a step's tokens are computed when it is "launched" (right after
// it is scheduled, as a device would) but reach the scheduler only after the
// next step was scheduled, as with the engine's one step in flight: rows whose
// input is such a pending token write it from the device's copy.
Result simulate(const std::vector<Req>& reqs, int n_pages, int page_size, int budget, bool chunked_replay,
                bool overlap = false) {
  KvCache kv(n_pages, page_size);
  SchedulerConfig cfg;
  cfg.max_step_tokens = budget;
  cfg.max_running = 64;
  cfg.chunked_replay = chunked_replay;
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
  for (int step = 0; !sched.done() || !in_flight.empty(); ++step) {
    if (step >= 20000) {
      ADD_FAILURE() << "no progress after 20000 steps";
      return out;
    }
    StepPlan plan = sched.schedule();
    for (int64_t id : plan.failed) out.errors[static_cast<int>(sched.seq(id).request)] = sched.seq(id).error;
    EXPECT_LE(plan.rows, budget);
    EXPECT_LE(sched.n_running(), cfg.max_running);
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
      EXPECT_TRUE(sched.done()) << "empty plan with work left:" << state << " free " << kv.pool().free_count()
                                << " running " << sched.n_running();
      break;
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

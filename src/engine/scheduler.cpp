#include "engine/scheduler.h"

#include <algorithm>

#include "util/error.h"

namespace kf {

Scheduler::Scheduler(KvCache& kv, SchedulerConfig cfg) : kv_(kv), cfg_(cfg) {
  // >= 3 so the oldest sequence can always split a prompt without leaving a 1-row chunk.
  KF_CHECK(cfg_.max_step_tokens >= 3, "scheduler: max_step_tokens must be >= 3 (got {})", cfg_.max_step_tokens);
  KF_CHECK(cfg_.max_running >= 1, "scheduler: max_running must be >= 1 (got {})", cfg_.max_running);
  KF_CHECK(!cfg_.prefix_cache || kv_.prefix_index(),
           "scheduler: the prefix cache needs a KV cache with its prefix index");
}

void Scheduler::add(Sequence s) {
  for (int c = 0; c <= s.fork_children; ++c)
    KF_CHECK(!seqs_.count(s.id + c), "scheduler: sequence {} already exists", s.id + c);
  KF_CHECK(!s.prompt.empty(), "request {}: the prompt is empty", s.request);
  KF_CHECK(s.fork_children + 1 <= cfg_.max_running,
           "request {}: {} samples exceed the {} sequences that may run at once (raise --max-seqs)", s.request,
           s.fork_children + 1, cfg_.max_running);
  s.n_cached = 0;
  s.running = false;
  waiting_.insert(key(s));
  seqs_.emplace(s.id, std::move(s));
}

Sequence& Scheduler::seq(int64_t id) {
  auto it = seqs_.find(id);
  KF_CHECK(it != seqs_.end(), "scheduler: no sequence {}", id);
  return it->second;
}
const Sequence& Scheduler::seq(int64_t id) const {
  auto it = seqs_.find(id);
  KF_CHECK(it != seqs_.end(), "scheduler: no sequence {}", id);
  return it->second;
}

int Scheduler::next_rows(const Sequence& s, int budget) const {
  const int total = s.total();
  const bool chunked = replays_in_chunks(s);
  const int chunk_end = chunked ? total : static_cast<int>(s.prompt.size());
  int n = 0;
  if (s.n_cached >= chunk_end) {
    n = budget >= 1 && s.n_cached < total ? 1 : 0;  // decode row (or replay of one token)
  } else {
    const int rest = chunk_end - s.n_cached;
    if (rest <= budget) {
      n = rest;
    } else if (chunked) {
      n = budget;
    } else {
      // A prefill chunk must not be a single row: one row is a decode row and
      // would follow the sparse policy, unlike the dense prefill it stands for.
      n = budget;
      if (rest - n == 1) --n;
      if (n < 2) n = 0;
    }
  }
  // A row that samples a token the sequence may not have is not worth running.
  if (n > 0 && s.n_cached + n == total && !s.wants_more()) return 0;
  return n;
}

KvCache::PrefixMatch Scheduler::shareable(const Sequence& s) const {
  // Not an echo sequence: it wants its prompt rows' logits. A recompute
  // (after preemption) shares too: an indexed page holds what the
  // recompute's own rows would (prefill rows, or dense decode rows, which
  // are a prefill's), and its own pages, released last, are evicted last.
  if (!cfg_.prefix_cache || s.echo) return {};
  const int rows = share_limit(s);
  return kv_.match_prefix(indexed_tokens(s), rows > 0 ? (rows + kv_.page_size() - 1) / kv_.page_size() : 0);
}

// A sequence's rows match a prefill of its tokens when its attention is
// dense (engine.cpp: chunked replay), so its generated tokens' pages are
// indexed too (a chat's next turn that quotes an answer shares it); under a
// sparse policy its decode rows differ from a prefill's, and only its
// prompt's pages are.
TokenRun Scheduler::indexed_tokens(const Sequence& s) const {
  if (replays_in_chunks(s)) return TokenRun(s.prompt, s.generated);
  return TokenRun(s.prompt);
}

void Scheduler::index_pages(const Sequence& s) {
  if (!cfg_.prefix_cache) return;
  // Full pages whose rows are computed (or being computed by a step in
  // flight) and whose input tokens the host knows (a pending token's row
  // waits for the next call).
  const TokenRun tokens = indexed_tokens(s);
  const int rows = std::min(s.n_cached, static_cast<int>(tokens.size()));
  kv_.index_prefix(s.id, tokens, rows / kv_.page_size());
}

// The rows a sequence may take from the index: some must stay to compute, a
// last one whose logits give the next token, and never a one-row prefill
// chunk (a one-row chunk is a decode row: the sparse policy and the decode
// kernel where a run without the cache computes a prefill row). In chunks
// (prompt and replayed tokens alike) that leaves all but the last two rows;
// a fresh sequence, all but its prompt's last two; a recompute that replays
// its tokens row by row, its whole prompt (its replayed rows are decode rows
// in either run), but not all but one prompt row.
int Scheduler::share_limit(const Sequence& s) const {
  const int np = static_cast<int>(s.prompt.size());
  if (replays_in_chunks(s)) return s.total() - 2;
  return s.total() > np ? np : np - 2;
}

int Scheduler::shared_rows(const Sequence& s, const KvCache::PrefixMatch& m) const {
  const int rows = std::min(m.pages * kv_.page_size(), share_limit(s));
  if (!replays_in_chunks(s) && rows == static_cast<int>(s.prompt.size()) - 1) return std::max(0, rows - 1);
  return std::max(0, rows);
}

void Scheduler::preempt(int64_t id) {
  Sequence& s = seq(id);
  running_.erase(key(s));
  reserved_children_ -= s.fork_children;
  index_pages(s);  // its recompute may find them again
  kv_.free(id);
  s.running = false;
  s.n_cached = 0;
  ++s.preemptions;
  ++preemptions_;
  waiting_.insert(key(s));
}

void Scheduler::fork_children(Sequence& parent) {
  for (int c = 1; c <= parent.fork_children; ++c) {
    Sequence child;
    child.id = parent.id + c;
    child.request = parent.request;
    child.sample = parent.sample + c;
    child.arrival = parent.arrival + c;
    child.prompt = parent.prompt;
    child.generated = parent.generated;
    child.pending = parent.pending;
    child.max_new = parent.max_new;
    child.row_replay = parent.row_replay;
    child.n_cached = parent.n_cached;
    child.running = true;
    kv_.fork(parent.id, child.id);
    running_.insert(key(child));
    seqs_.emplace(child.id, std::move(child));
  }
  reserved_children_ -= parent.fork_children;
  parent.fork_children = 0;
}

const StepPlan& Scheduler::schedule() {
  StepPlan& plan = plan_;
  plan.seqs.clear();
  plan.slots.clear();
  plan.copies.clear();
  plan.failed.clear();
  plan.rows = 0;
  kv_.begin_step();
  int budget = cfg_.max_step_tokens;
  int echo_budget = cfg_.max_echo_rows;
  // Rows a sequence may take: its echo prompt rows within the echo budget.
  auto rows_for = [&](const Sequence& s) {
    const bool echo_rows = s.echo && s.n_cached < static_cast<int>(s.prompt.size());
    const int n = next_rows(s, echo_rows ? std::min(budget, echo_budget) : budget);
    if (echo_rows) echo_budget -= n;
    return n;
  };
  const int capacity = kv_.pool().capacity();
  bool preempted = false;
  auto add_rows = [&](Sequence& s, int n) {
    kv_.append(s.id, n, plan.slots, plan.copies);
    const bool sample = s.n_cached + n == s.total();
    plan.seqs.push_back(StepSeq{s.id, s.n_cached, n, sample, sample ? s.fork_children : 0});
    // Index the full pages these rows complete, as being written by this
    // step: no sequence shares them before the next step (KvCache's
    // header). A later step may share them while this one is still in
    // flight: steps run in launch order on the device (one stream per rank,
    // engine/executor.h), so it reads a page after this step wrote its K/V
    // and key summary (written with a page's last row, backend.h kv_write).
    // For the same reason a page evicted once its sequence ends (even with
    // this step in flight) is rewritten only by a later step.
    s.n_cached += n;
    index_pages(s);
    budget -= n;
    plan.rows += n;
    if (sample) {
      ++s.pending;  // this step samples the sequence's next token
      if (s.fork_children > 0) fork_children(s);
    }
  };
  order_.assign(running_.begin(), running_.end());  // oldest first
  for (const Key& k : order_) {
    if (!running_.count(k)) continue;  // preempted for an older sequence
    if (static_cast<int>(plan.seqs.size()) >= cfg_.max_running || budget <= 0) break;
    Sequence& s = seq(k.second);
    const int n = rows_for(s);
    if (n == 0) continue;
    if (pages_for(s.n_cached + n) > capacity) {  // could not fit even alone
      finish(s.id, StopReason::KvFull);
      plan.failed.push_back(s.id);
      continue;
    }
    // Free pages by preempting the youngest running sequences (maybe this one).
    while (!kv_.can_append(s.id, n)) {
      const int64_t victim = running_.rbegin()->second;
      preempt(victim);
      preempted = true;
      if (victim == s.id) break;
    }
    if (!s.running) continue;
    add_rows(s, n);
  }
  // Admit waiting sequences in arrival order while their whole context fits.
  // One whose next shared prompt pages this step is writing waits a step for
  // them (those behind it may go first).
  for (auto it = waiting_.begin(); !preempted && it != waiting_.end() && budget > 0;) {
    Sequence& s = seq(it->second);
    const auto next = std::next(it);
    if (s.pending > 0) break;  // its last token is still in flight: next step
    if (n_running() + reserved_children_ + 1 + s.fork_children > cfg_.max_running) break;
    const int need = pages_for(s.total() + 1);  // + room for the token it will generate
    if (pages_for(s.total()) > capacity) {
      const std::string why = fmt::format(
          "prompt of {} tokens needs {} KV pages of {} tokens but the pool has {} (raise --kv-pages)",
          s.total(), pages_for(s.total()), kv_.page_size(), capacity);
      finish(s.id, StopReason::Error, why);
      plan.failed.push_back(s.id);
      it = next;
      continue;
    }
    const KvCache::PrefixMatch shared = shareable(s);
    if (shared.in_flight) {
      it = next;
      continue;
    }
    // Whole shared pages need no fresh page, but a cached one stops being
    // free. A partly kept one needs a page for its copy and, if cached, is
    // cached again once copied.
    const int start = shared_rows(s, shared);
    const int whole = start / kv_.page_size();
    const bool part = start % kv_.page_size() != 0;
    const int taken = shared.evictable - (part && shared.last_cached ? 1 : 0);
    if (std::min(need, capacity) - whole + taken > kv_.free_pages()) break;
    s.n_cached = start;  // its prefill starts past the shared rows
    const int n = rows_for(s);
    if (n == 0) {
      s.n_cached = 0;
      break;
    }
    waiting_.erase(it);
    it = next;
    running_.insert(key(s));
    reserved_children_ += s.fork_children;
    s.running = true;
    kv_.add(s.id);
    if (start > 0) kv_.share_prefix(s.id, indexed_tokens(s), start);
    prefix_cached_rows_ += start;
    if (s.preemptions == 0) s.prefix_cached = start;
    add_rows(s, n);
  }
  return plan;
}

void Scheduler::finish(int64_t id, StopReason why, const std::string& error) {
  Sequence& s = seq(id);
  if (s.finished) return;
  if (s.running) {
    index_pages(s);  // the pages its last collected tokens completed
    kv_.free(id);
    reserved_children_ -= s.fork_children;
  }
  running_.erase(key(s));
  waiting_.erase(key(s));
  s.running = false;
  s.finished = true;
  s.stop = why;
  s.error = error;
}

void Scheduler::release(int64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  KF_CHECK(it->second.finished, "scheduler: release of sequence {} that is not finished", id);
  seqs_.erase(it);
}

}  // namespace kf

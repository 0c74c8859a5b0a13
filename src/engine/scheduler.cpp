#include "engine/scheduler.h"

#include <algorithm>

#include "util/error.h"

namespace kf {

Scheduler::Scheduler(KvCache& kv, SchedulerConfig cfg) : kv_(kv), cfg_(cfg) {
  // >= 3 so the oldest sequence can always split a prompt without leaving a 1-row chunk.
  KF_CHECK(cfg_.max_step_tokens >= 3, "scheduler: max_step_tokens must be >= 3 (got {})", cfg_.max_step_tokens);
  KF_CHECK(cfg_.max_running >= 1, "scheduler: max_running must be >= 1 (got {})", cfg_.max_running);
}

void Scheduler::add(Sequence s) {
  KF_CHECK(!seqs_.count(s.id), "scheduler: sequence {} already exists", s.id);
  KF_CHECK(!s.prompt.empty(), "request {}: the prompt is empty", s.request);
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
  const int chunk_end = cfg_.chunked_replay ? total : static_cast<int>(s.prompt.size());
  if (s.n_cached >= chunk_end) return budget >= 1 ? 1 : 0;  // decode row (or replay of one token)
  const int rest = chunk_end - s.n_cached;
  if (rest <= budget) return rest;
  if (cfg_.chunked_replay) return budget;
  // A prefill chunk must not be a single row: one row is a decode row and
  // would follow the sparse policy, unlike the dense prefill it stands for.
  int n = budget;
  if (rest - n == 1) --n;
  return n >= 2 ? n : 0;
}

void Scheduler::preempt(int64_t id) {
  Sequence& s = seq(id);
  running_.erase(key(s));
  kv_.free(id);
  s.running = false;
  s.n_cached = 0;
  ++s.preemptions;
  ++preemptions_;
  waiting_.insert(key(s));
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  int budget = cfg_.max_step_tokens;
  const int capacity = kv_.pool().capacity();
  bool preempted = false;
  std::vector<Key> order(running_.begin(), running_.end());  // oldest first
  for (const Key& k : order) {
    if (!running_.count(k)) continue;  // preempted for an older sequence
    if (static_cast<int>(plan.seqs.size()) >= cfg_.max_running || budget <= 0) break;
    Sequence& s = seq(k.second);
    int n = next_rows(s, budget);
    if (n == 0) continue;
    if (pages_for(s.n_cached + n) > capacity) {  // could not fit even alone
      finish(s.id, StopReason::KvFull);
      plan.failed.push_back(s.id);
      continue;
    }
    // Free pages by preempting the youngest unscheduled sequences (maybe this one).
    while (kv_.pages_needed(s.id, n) > kv_.pool().free_count()) {
      int64_t victim = running_.rbegin()->second;
      preempt(victim);
      preempted = true;
      if (victim == s.id) break;
    }
    if (!s.running) continue;
    kv_.append(s.id, n, plan.slots, plan.copies);
    plan.seqs.push_back(StepSeq{s.id, s.n_cached, n, s.n_cached + n == s.total()});
    s.n_cached += n;
    budget -= n;
    plan.rows += n;
  }
  // Admit waiting sequences in arrival order while their whole context fits.
  while (!preempted && !waiting_.empty() && budget > 0 &&
         static_cast<int>(plan.seqs.size()) < cfg_.max_running) {
    Sequence& s = seq(waiting_.begin()->second);
    const int need = pages_for(s.total() + 1);  // + room for the token it will generate
    if (pages_for(s.total()) > capacity) {
      std::string why = fmt::format(
          "prompt of {} tokens needs {} KV pages of {} tokens but the pool has {} (raise --kv-pages)",
          s.total(), pages_for(s.total()), kv_.page_size(), capacity);
      finish(s.id, StopReason::Error, why);
      plan.failed.push_back(s.id);
      continue;
    }
    if (std::min(need, capacity) > kv_.pool().free_count()) break;
    int n = next_rows(s, budget);
    if (n == 0) break;
    waiting_.erase(waiting_.begin());
    running_.insert(key(s));
    s.running = true;
    kv_.add(s.id);
    kv_.append(s.id, n, plan.slots, plan.copies);
    plan.seqs.push_back(StepSeq{s.id, 0, n, n == s.total()});
    s.n_cached = n;
    budget -= n;
    plan.rows += n;
  }
  return plan;
}

void Scheduler::fork(int64_t parent, Sequence child) {
  KF_CHECK(!seqs_.count(child.id), "scheduler: sequence {} already exists", child.id);
  const Sequence& p = seq(parent);
  KF_CHECK(p.running, "scheduler: fork of sequence {} that is not running", parent);
  child.prompt = p.prompt;
  child.generated = p.generated;
  child.n_cached = p.n_cached;
  child.running = true;
  kv_.fork(parent, child.id);
  running_.insert(key(child));
  seqs_.emplace(child.id, std::move(child));
}

void Scheduler::finish(int64_t id, StopReason why, const std::string& error) {
  Sequence& s = seq(id);
  if (s.finished) return;
  if (s.running) kv_.free(id);
  running_.erase(key(s));
  waiting_.erase(key(s));
  s.running = false;
  s.finished = true;
  s.stop = why;
  s.error = error;
}

}  // namespace kf

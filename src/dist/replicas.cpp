#include "dist/replicas.h"

#include <algorithm>

#include "util/error.h"

namespace kf::dist {

// One replica: its engine (made and driven on its own thread) and what the
// set knows of it. Fields other than `engine` are guarded by the set's mutex.
struct ReplicaSet::Rep {
  Replica* replica = nullptr;
  std::unique_ptr<Engine> engine;
  std::thread thread;
  struct Taken {
    int64_t id = 0;          // the set's
    int samples = 0;
    std::vector<int> prompt;  // kept where routed by prefix under dense attention: its answers extend the record
  };
  std::map<int64_t, Taken> taken;  // engine id -> the request
  int64_t outstanding = 0;  // samples of taken, unfinished requests
  bool room = true;         // its scheduler has nothing waiting (as of its last step)
  bool ready = false;
  // queue_changes_ and its outstanding samples when it last looked at the queue.
  uint64_t queue_seen = 0;
  int64_t outstanding_seen = 0;
  PrefixAffinity prefixes;  // the pages it took and computed (routing with the prefix cache)
  ReplicaStats stats;
  explicit Rep(int page_size) : prefixes(page_size) {}
};

ReplicaSet::ReplicaSet(std::vector<Replica>& replicas, const EngineConfig& cfg) : cfg_(cfg) {
  KF_CHECK(!replicas.empty(), "replica set: no replicas");
  for (Replica& r : replicas) {
    auto rep = std::make_unique<Rep>(cfg.page_size);
    rep->replica = &r;
    rep->stats.backend = r.backend().name();
    reps_.push_back(std::move(rep));
  }
  for (int i = 0; i < size(); ++i) reps_[i]->thread = std::thread([this, i] { loop(i); });
  // Wait until every engine is built (or one failed).
  std::unique_lock<std::mutex> lock(mu_);
  finished_cv_.wait(lock, [&] {
    return error_ || std::all_of(reps_.begin(), reps_.end(), [](const auto& r) { return r->ready; });
  });
  if (error_) {
    stop_ = true;
    lock.unlock();
    work_cv_.notify_all();
    for (auto& r : reps_) r->thread.join();
    std::rethrow_exception(error_);
  }
  resolved_ = reps_[0]->engine->config();  // engines fill the defaults (max_model_len) alike
}

ReplicaSet::~ReplicaSet() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& r : reps_)
    if (r->thread.joinable()) r->thread.join();
}

int64_t ReplicaSet::submit(Request r) {
  std::vector<Request> one;
  one.push_back(std::move(r));
  return submit_all(std::move(one)).front();
}

std::vector<int64_t> ReplicaSet::submit_all(std::vector<Request> rs) {
  std::vector<int64_t> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_) std::rethrow_exception(error_);
    KF_CHECK(!stop_, "replica set: stopped");
    // Engines are alike (and live until stop or an error): the first checks for all.
    for (const Request& r : rs) reps_[0]->engine->check_request(r);
    for (Request& r : rs) {
      ids.push_back(next_id_++);
      std::vector<uint64_t> pages;
      if (routes_by_prefix() && !r.route_by_load) pages = reps_[0]->prefixes.page_hashes(r.prompt);
      queue_.push_back(Queued{ids.back(), std::move(r), std::move(pages)});
    }
    ++queue_changes_;
  }
  work_cv_.notify_all();
  return ids;
}

void ReplicaSet::finish_cancelled(int64_t id, Request& r) {
  FinishedRequest f;
  f.id = id;
  f.prompt_tokens = static_cast<int>(r.prompt.size());
  f.samples.resize(r.n);
  for (int s = 0; s < r.n; ++s) {
    f.samples[s].stop = StopReason::Cancelled;
    if (r.stream) r.stream->push(StreamEvent{s, {}, {}, true, StopReason::Cancelled, {}});
  }
  finished_.push_back(std::move(f));
}

void ReplicaSet::cancel(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto q = std::find_if(queue_.begin(), queue_.end(), [&](const Queued& e) { return e.id == id; });
  if (q != queue_.end()) {
    if (q->request.stream) q->request.stream->expect_samples(q->request.n);
    finish_cancelled(id, q->request);
    queue_.erase(q);
    ++queue_changes_;
    finished_cv_.notify_all();
    return;
  }
  auto it = placed_.find(id);
  if (it != placed_.end() && reps_[it->second.first]->engine) reps_[it->second.first]->engine->cancel(it->second.second);
}

std::vector<FinishedRequest> ReplicaSet::wait_finished(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  finished_cv_.wait_for(lock, timeout, [&] { return !finished_.empty() || error_; });
  if (error_) std::rethrow_exception(error_);
  std::vector<FinishedRequest> out;
  out.swap(finished_);
  return out;
}

int64_t ReplicaSet::generated_tokens() const {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (const auto& r : reps_) n += r->stats.engine.generated_tokens;
  return n;
}

std::vector<ReplicaStats> ReplicaSet::replica_stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ReplicaStats> out;
  for (const auto& r : reps_) out.push_back(r->stats);
  return out;
}

EngineStats ReplicaSet::stats() const { return merge_stats(replica_stats()); }

int ReplicaSet::prefix_pages(int replica, const std::vector<int>& prompt) const {
  KF_CHECK(replica >= 0 && replica < size(), "replica set: no replica {} (it has {})", replica, size());
  std::lock_guard<std::mutex> lock(mu_);
  const PrefixAffinity& record = reps_[replica]->prefixes;
  return record.match(record.page_hashes(prompt));
}

// Under mu_: whether replica i takes queued request q now, leaves it for a
// replica that took more of its prompt's pages, or takes nothing more now
// (see the header).
ReplicaSet::Route ReplicaSet::route(int i, const Queued& q) const {
  const Rep& rep = *reps_[i];
  int64_t lightest = INT64_MAX;  // outstanding samples of the lightest other replica with room
  for (int j = 0; j < size(); ++j)
    if (j != i && reps_[j]->room) lightest = std::min(lightest, reps_[j]->outstanding);
  const Route by_load = lightest < rep.outstanding ? Route::Stop : Route::Take;
  if (q.pages.empty()) return by_load;
  // One pass over the others: the longest match, and whether a replica with
  // it has room and is within the slack of this one (it may take the request).
  const int mine = rep.prefixes.match(q.pages);
  int best = mine;
  bool owner_may_take = false;
  for (int j = 0; j < size(); ++j) {
    if (j == i) continue;
    const Rep& other = *reps_[j];
    const int m = other.prefixes.match(q.pages);
    const bool may_take = other.room && other.outstanding <= rep.outstanding + affinity_slack();
    if (m > best) {
      best = m;
      owner_may_take = may_take;
    } else if (m == best) {
      owner_may_take |= may_take;
    }
  }
  // A match of under half the request's pages (a short common head, such as
  // a chat template's system prompt) saves too little to outweigh load.
  if (2 * best < static_cast<int>(q.pages.size())) return by_load;
  if (mine == best) return lightest == INT64_MAX || rep.outstanding <= lightest + affinity_slack() ? Route::Take : by_load;
  return owner_may_take ? Route::Leave : by_load;
}

// Under mu_: takes requests from the queue while this replica should (see
// the header), at most a step's worth of prompt tokens at a time, looking
// past requests it leaves for other replicas (the first 256 queued at most).
void ReplicaSet::take_work(int i, Rep& rep, bool room) {
  rep.room = room;
  int64_t prompt_tokens = 0;
  for (size_t pos = 0; rep.room && pos < queue_.size() && pos < 256;) {
    const Queued& q = queue_[pos];
    const Request& r = q.request;
    const Route how = route(i, q);
    if (how == Route::Leave) {
      ++pos;
      continue;
    }
    if (how == Route::Stop) break;
    if (rep.outstanding > 0 && rep.outstanding + r.n > cfg_.max_seqs) break;
    if (prompt_tokens > 0 && prompt_tokens + static_cast<int64_t>(r.prompt.size()) > cfg_.max_step_tokens) break;
    if (!q.pages.empty()) {
      rep.stats.prefix_routed += rep.prefixes.match(q.pages) > 0;
      rep.prefixes.note(q.pages);
    }
    Queued taken = std::move(queue_[pos]);
    queue_.erase(queue_.begin() + static_cast<ptrdiff_t>(pos));
    ++queue_changes_;
    const int n = taken.request.n;
    prompt_tokens += static_cast<int64_t>(taken.request.prompt.size());
    // Kept only where its answers will be noted: routed by prefix, dense.
    std::vector<int> prompt;
    const AttnPolicy& policy = taken.request.policy ? *taken.request.policy : cfg_.policy;
    if (!taken.pages.empty() && decode_rows_match_prefill(policy)) prompt = taken.request.prompt;
    const int64_t eid = rep.engine->submit(std::move(taken.request));
    rep.taken[eid] = {taken.id, n, std::move(prompt)};
    placed_[taken.id] = {i, eid};
    rep.outstanding += n;
    rep.stats.requests += 1;
    rep.stats.samples += n;
  }
  rep.queue_seen = queue_changes_;
  rep.outstanding_seen = rep.outstanding;
}

// Under mu_: a finished request's samples under dense attention left their
// answers' full pages in the replica's cache too (engine/scheduler.h), so the
// record takes each sample's prompt and answer (all but its last token, which
// no row read): a chat's next turn, which quotes it, comes back here. The
// prompt is kept (take_work) only for such requests.
void ReplicaSet::note_answers(Rep& rep, const std::vector<int>& prompt, const FinishedRequest& f) {
  if (prompt.empty()) return;
  std::vector<int> tokens;
  for (const SampleResult& s : f.samples) {
    if (s.tokens.size() < 2) continue;
    tokens.assign(prompt.begin(), prompt.end());
    tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end() - 1);
    rep.prefixes.note(rep.prefixes.page_hashes(tokens));
  }
}

// Under mu_: the replica's finished requests, with the set's ids.
void ReplicaSet::publish(int i, Rep& rep, std::vector<FinishedRequest> done) {
  for (FinishedRequest& f : done) {
    auto it = rep.taken.find(f.id);
    KF_CHECK(it != rep.taken.end(), "replica set: replica {} finished request {} it never took", i, f.id);
    f.id = it->second.id;
    rep.outstanding -= it->second.samples;
    note_answers(rep, it->second.prompt, f);
    placed_.erase(f.id);
    rep.taken.erase(it);
    finished_.push_back(std::move(f));
  }
  rep.stats.engine = rep.engine->stats();
  rep.stats.running = rep.engine->n_running();
  rep.stats.waiting = rep.engine->n_waiting();
  rep.stats.kv_pages_used = rep.engine->kv_pages_used();
  rep.stats.kv_pages_cached = rep.engine->kv_pages_cached();
}

void ReplicaSet::loop(int i) {
  Rep& rep = *reps_[i];
  try {
    rep.replica->backend().bind_thread();
    rep.engine = std::make_unique<Engine>(rep.replica->ranks(), cfg_);
    rep.engine->log_prefix_evictions(routes_by_prefix());
    {
      std::lock_guard<std::mutex> lock(mu_);
      rep.ready = true;
    }
    finished_cv_.notify_all();
    bool busy = false;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        // An idle replica sleeps until there is something to take (or stop):
        // a queue that changed, or its own requests finished, since it last
        // looked; at most 50 ms (the others' load changes too). A busy one
        // only looks between steps.
        if (!busy)
          work_cv_.wait_for(lock, std::chrono::milliseconds(50), [&] {
            return stop_ || (!queue_.empty() &&
                             (queue_changes_ != rep.queue_seen || rep.outstanding != rep.outstanding_seen));
          });
        if (stop_) break;
        const size_t before = queue_.size();
        take_work(i, rep, rep.engine->n_waiting() == 0);
        if (queue_.size() != before) work_cv_.notify_all();  // the others re-check who is lightest
      }
      busy = rep.engine->step();
      std::vector<FinishedRequest> done = rep.engine->take_finished();
      const std::vector<uint64_t> evicted = routes_by_prefix() ? rep.engine->take_evicted_prefixes() : std::vector<uint64_t>{};
      {
        std::lock_guard<std::mutex> lock(mu_);
        const bool any = !done.empty();
        rep.prefixes.forget(evicted);  // before the finished answers are noted: those pages are indexed now
        publish(i, rep, std::move(done));
        if (any) finished_cv_.notify_all();
      }
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_) error_ = std::current_exception();
    stop_ = true;
    finished_cv_.notify_all();
    work_cv_.notify_all();
  }
  std::unique_ptr<Engine> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    gone = std::move(rep.engine);
  }
  gone.reset();  // on its own (bound) thread, outside the lock
}

EngineStats merge_stats(const std::vector<ReplicaStats>& replicas) {
  EngineStats m;
  for (const ReplicaStats& r : replicas) {
    const EngineStats& s = r.engine;
    m.steps += s.steps;
    m.graph_steps += s.graph_steps;
    m.prefill_tokens += s.prefill_tokens;
    m.decode_tokens += s.decode_tokens;
    m.generated_tokens += s.generated_tokens;
    m.requests_finished += s.requests_finished;
    m.preemptions += s.preemptions;
    m.prefix_cached_rows += s.prefix_cached_rows;
    m.prefix_cache_evictions += s.prefix_cache_evictions;
    m.kv_pages += s.kv_pages;
    m.kv_pages_peak += s.kv_pages_peak;
    m.page_size = s.page_size;
    m.running_peak += s.running_peak;
    m.decode_page_reads += s.decode_page_reads;
    m.decode_head_rows += s.decode_head_rows;
    m.kv_bytes_read += s.kv_bytes_read;
    m.weight_bytes_read += s.weight_bytes_read;
    // Replicas run side by side: the set takes as long as its slowest.
    m.prefill_seconds = std::max(m.prefill_seconds, s.prefill_seconds);
    m.decode_seconds = std::max(m.decode_seconds, s.decode_seconds);
    m.wall_seconds = std::max(m.wall_seconds, s.wall_seconds);
    m.host_schedule_s = std::max(m.host_schedule_s, s.host_schedule_s);
    m.host_launch_s = std::max(m.host_launch_s, s.host_launch_s);
    m.host_wait_s = std::max(m.host_wait_s, s.host_wait_s);
    m.host_postprocess_s = std::max(m.host_postprocess_s, s.host_postprocess_s);
    m.device_s = std::max(m.device_s, s.device_s);
  }
  return m;
}

std::vector<Request> split_samples(const Request& r, int parts) {
  parts = std::max(1, std::min(parts, r.n));
  std::vector<Request> out;
  int first = 0;
  for (int p = 0; p < parts; ++p) {
    Request q = r;
    q.n = r.n / parts + (p < r.n % parts ? 1 : 0);
    q.first_sample = r.first_sample + first;
    q.route_by_load = parts > 1;  // the parts are meant to spread
    first += q.n;
    out.push_back(std::move(q));
  }
  return out;
}

}  // namespace kf::dist

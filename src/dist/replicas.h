// ReplicaSet: data parallelism in one process. One Engine per replica (a GPU,
// or a tensor-parallel group of GPUs: dist/placement.h), each stepping in its
// own thread bound to its device, behind one request queue:
//
//   ReplicaSet set(replicas, engine_config);   // threads start, engines built on them
//   int64_t id = set.submit(request);          // any thread; checked at once
//   set.cancel(id);                            // any thread
//   for (FinishedRequest& f : set.wait_finished(100ms)) ...   // ids from submit
//
// Routing: a request stays in the set's queue until a replica takes it. A
// replica takes the next request between its steps when its scheduler has
// nothing waiting (no prompt it could not admit, no preempted sequence), the
// request keeps its outstanding samples within --max-seqs, and no other
// replica with room has fewer outstanding samples. All n samples of a request
// run on one replica (the prompt is prefilled once). So work goes by load:
// a replica whose requests end sooner takes more, and work a replica cannot
// start yet stays free for the others.
//
// With the prefix cache (EngineConfig::prefix_cache) a request goes by its
// prompt's first pages too, as SGLang's cache-aware router does: each replica
// remembers the page prefixes of the prompts it took and of its dense
// samples' answers, and forgets the pages its cache evicts (PrefixAffinity);
// the replica that took the longest run of a request's pages, if that run is
// at least half of them, takes it even when another has fewer outstanding
// samples, up to `affinity_slack()` more; another replica leaves it in the
// queue for that one (and looks at the requests behind it) while the owner
// has room and is not that much busier. So N requests of one system prompt
// prefill it once per replica that serves them, not once per replica that
// happened to be lightest. Requests marked `route_by_load` (the parts of
// split_samples) go by load alone.
//
// Every sample draws from Philox keyed by (seed, request key, sample, token
// index), so its tokens do not depend on the replica that runs it: on the
// CPU (batch-invariant) the results equal one engine's bit for bit.
//
// The server uses it as generate and eval do: submit from the HTTP threads,
// tokens through Request::stream, cancel on disconnect, wait_finished (or
// take_finished) in a loop to release finished requests; the set runs the
// engine loops itself (one replica = one engine thread).
#pragma once
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "dist/placement.h"
#include "dist/prefix_affinity.h"
#include "engine/engine.h"

namespace kf::dist {

// What one replica did, for the run's JSON (balance across replicas).
struct ReplicaStats {
  std::string backend;  // rank 0's backend name
  int64_t requests = 0, samples = 0;
  EngineStats engine;
  // Its scheduler's state after its last step (a server's /metrics).
  int running = 0, waiting = 0, kv_pages_used = 0;
  int kv_pages_cached = 0;  // held only by its prefix cache (Engine::kv_pages_cached)
  int64_t prefix_routed = 0;  // requests it took for the prompt pages it had taken before (prefix cache)
};

class ReplicaSet {
 public:
  // `replicas` must outlive the set; every engine gets `cfg`.
  ReplicaSet(std::vector<Replica>& replicas, const EngineConfig& cfg);
  ~ReplicaSet();  // stops the replicas (requests still running are dropped)
  ReplicaSet(const ReplicaSet&) = delete;
  ReplicaSet& operator=(const ReplicaSet&) = delete;

  int size() const { return static_cast<int>(reps_.size()); }
  // Outstanding samples by which a replica holding a request's prefix may be
  // busier than the lightest other and still take it: max(1, max_seqs / 4).
  int affinity_slack() const { return std::max(1, cfg_.max_seqs / 4); }
  // Whether requests go by their prompt's pages too: the prefix cache, and
  // more than one replica to choose from.
  bool routes_by_prefix() const { return cfg_.prefix_cache && size() > 1; }
  // The engines' config: cfg with the defaults an Engine fills in (max_model_len).
  const EngineConfig& config() const { return resolved_; }

  // Thread-safe. Throws kf::Error on a malformed request (as Engine::submit).
  int64_t submit(Request r);
  // The same for several requests at once: all checked first, then queued
  // together, so a replica takes them in one go (a benchmark's step count
  // then does not depend on thread timing). Ids in order.
  std::vector<int64_t> submit_all(std::vector<Request> rs);
  // Thread-safe; unknown or finished ids are ignored. A request no replica
  // took yet finishes at once with every sample cancelled.
  void cancel(int64_t id);
  // Finished requests in finishing order (ids from submit), waiting up to
  // `timeout` for the first. Rethrows the error of a replica that failed.
  std::vector<FinishedRequest> wait_finished(std::chrono::milliseconds timeout);
  std::vector<FinishedRequest> take_finished() { return wait_finished(std::chrono::milliseconds(0)); }

  // Tokens generated so far by every replica (progress lines).
  int64_t generated_tokens() const;
  // Every replica's stats so far, and their sum (times: the slowest replica's).
  std::vector<ReplicaStats> replica_stats() const;
  EngineStats stats() const;
  // How many of a prompt's first full pages replica i's routing record holds
  // (with the prefix cache; tests compare it with what the cache holds).
  int prefix_pages(int replica, const std::vector<int>& prompt) const;

 private:
  struct Rep;
  struct Queued {
    int64_t id = 0;
    Request request;
    std::vector<uint64_t> pages;  // PrefixAffinity::page_hashes of its prompt (with the prefix cache)
  };
  enum class Route { Take, Leave, Stop };
  void loop(int i);
  void take_work(int i, Rep& rep, bool room);
  Route route(int i, const Queued& q) const;
  void publish(int i, Rep& rep, std::vector<FinishedRequest> done);
  static void note_answers(Rep& rep, const std::vector<int>& prompt, const FinishedRequest& f);
  void finish_cancelled(int64_t id, Request& r);

  EngineConfig cfg_;       // as given (read by the replica threads)
  EngineConfig resolved_;  // the first engine's, once built (config())
  std::vector<std::unique_ptr<Rep>> reps_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;      // replicas wait for requests, cancels, stop
  std::condition_variable finished_cv_;  // callers of wait_finished
  std::deque<Queued> queue_;
  uint64_t queue_changes_ = 0;  // submits, takes and cancels (an idle replica waits for the next)
  std::map<int64_t, std::pair<int, int64_t>> placed_;  // set id -> (replica, engine id) until finished
  std::vector<FinishedRequest> finished_;
  std::exception_ptr error_;
  int64_t next_id_ = 0;
  bool stop_ = false;
};

// Merged engine stats of replicas running side by side: counters add up,
// times are the slowest replica's (so tokens/s are the set's).
EngineStats merge_stats(const std::vector<ReplicaStats>& replicas);

// One request's n samples as `parts` requests (fewer when n is smaller) over
// consecutive sample ranges (Request::first_sample), for replicas to share
// (routed by load: Request::route_by_load). Their results, concatenated in
// order, are the request's.
std::vector<Request> split_samples(const Request& r, int parts);

}  // namespace kf::dist

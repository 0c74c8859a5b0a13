// Scheduler: decides, step by step, which tokens of which sequences the
// model computes. No tensors: it owns the sequences and the KV bookkeeping.
//
// Each step: running sequences (oldest first) get one decode row, or a
// prefill chunk while their prompt is not cached; then waiting sequences are
// admitted first-come-first-served while their whole context fits in the
// free pages, all within a token budget per step. When a running sequence
// needs a page and none is free, the youngest running sequence is preempted:
// its pages are freed and it waits to be recomputed. Recompute runs the
// prompt as prefill and replays generated tokens one decode row each (or in
// prefill chunks with `chunked_replay`, valid for dense attention), so every
// token sees exactly the attention it saw the first time and outputs do not
// change. A context that cannot fit even in an empty pool fails alone.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "engine/sequence.h"
#include "kv/kv_cache.h"

namespace kf {

struct SchedulerConfig {
  int max_step_tokens = 512;  // query rows per step (decode rows + prefill chunks)
  int max_running = 256;      // sequences in one step
  bool chunked_replay = false;
};

// Compute positions [start, start + n) of sequence `id`; if `sample`, the last
// row's logits pick the sequence's next token.
struct StepSeq {
  int64_t id = 0;
  int start = 0;
  int n = 0;
  bool sample = false;
};

struct StepPlan {
  std::vector<StepSeq> seqs;
  std::vector<int32_t> slots;    // KV slot per row, in row order
  std::vector<PageCopy> copies;  // copy-on-write copies to run before writing
  std::vector<int64_t> failed;   // sequences that can never fit (now finished with an error)
  int rows = 0;
};

class Scheduler {
 public:
  Scheduler(KvCache& kv, SchedulerConfig cfg);
  const SchedulerConfig& config() const { return cfg_; }

  void add(Sequence s);  // waiting; ids must be unique
  Sequence& seq(int64_t id);
  const Sequence& seq(int64_t id) const;
  const std::map<int64_t, Sequence>& sequences() const { return seqs_; }

  // The next step's work (empty seqs when nothing can run). Reserves KV slots
  // and advances n_cached of the scheduled sequences.
  StepPlan schedule();
  // Best-of-N: child shares all of parent's cached pages and tokens.
  void fork(int64_t parent, Sequence child);
  // Marks a sequence finished and frees its pages.
  void finish(int64_t id, StopReason why, const std::string& error = {});
  bool done() const { return waiting_.empty() && running_.empty(); }
  int n_running() const { return static_cast<int>(running_.size()); }
  int n_waiting() const { return static_cast<int>(waiting_.size()); }
  int64_t preemptions() const { return preemptions_; }

 private:
  using Key = std::pair<int64_t, int64_t>;  // (arrival, id)
  Key key(const Sequence& s) const { return {s.arrival, s.id}; }
  void preempt(int64_t id);
  // Rows to compute next for a sequence (prefill chunk or one row), within `budget`.
  int next_rows(const Sequence& s, int budget) const;
  int pages_for(int tokens) const { return (tokens + kv_.page_size() - 1) / kv_.page_size(); }

  KvCache& kv_;
  SchedulerConfig cfg_;
  std::map<int64_t, Sequence> seqs_;
  std::set<Key> waiting_, running_;
  int64_t preemptions_ = 0;
};

}  // namespace kf

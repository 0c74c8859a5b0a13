// Scheduler: decides, step by step, which tokens of which sequences the
// model computes. No tensors: it owns the sequences and the KV bookkeeping.
//
// Each step: running sequences (oldest first) get one decode row, or a
// prefill chunk while their prompt is not cached; then waiting sequences are
// admitted first-come-first-served while their whole context fits in the
// free pages and the running set (children of Best-of-N parents counted) stays
// within max_running, all within a token budget per step. When a running
// sequence needs a page and none is free, the youngest running sequence is
// preempted: its pages are freed and it waits to be recomputed. Recompute runs
// the prompt as prefill and replays generated tokens one decode row each (or
// in prefill chunks with `chunked_replay`, valid for dense attention, unless
// the sequence asks for row_replay: a sparse request in a dense run), so
// every token sees exactly the attention it saw the first time and outputs do
// not change. A context that cannot fit even in an empty pool fails alone.
//
// Best-of-N: the step that finishes a parent's prompt also forks its
// children (they share every page, the partial last one copy-on-write) and
// samples their first tokens from the parent's logits, so the prompt is
// prefilled once. Steps may be in flight when the next is scheduled: a
// sequence's `pending` tokens are known only once its step is collected.
//
// Prefix cache (`prefix_cache`): full pages are shared across requests
// through the KvCache's prefix index: prompt pages, and under dense
// attention generated tokens' pages too (a dense decode row is what a prefill
// computes, as chunked replay relies on; a chat's next turn quotes the
// answer). A sequence admitted from the queue (fresh or recomputed, not
// echo) starts with the longest run of indexed pages of its tokens, up to
// share_limit() (a page whose last rows it computes itself is copied on
// write), and prefills from there; every step indexes the full pages its
// rows complete once their tokens are known, and so do preemption and
// finishing. A waiting sequence whose next
// pages are being written by the step being scheduled (identical prompts
// arriving together, a long shared prefix in chunks) waits for them.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/sequence.h"
#include "kv/kv_cache.h"

namespace kf {

struct SchedulerConfig {
  int max_step_tokens = 512;  // query rows per step (decode rows + prefill chunks)
  int max_running = 256;      // running sequences (and so sequences and sampled rows in one step)
  bool chunked_replay = false;
  int max_echo_rows = 128;  // prompt rows of `echo` sequences per step (their logits are kept)
  bool prefix_cache = false;  // share full pages across sequences (the KvCache needs its prefix index)
};

// Compute positions [start, start + n) of sequence `id`; if `sample`, the last
// row's logits pick the next token of the sequence and of its `children`
// forked this step (ids id+1 .. id+children).
struct StepSeq {
  int64_t id = 0;
  int start = 0;
  int n = 0;
  bool sample = false;
  int children = 0;
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

  void add(Sequence s);  // waiting; ids (and the children's) must be unique
  Sequence& seq(int64_t id);
  const Sequence& seq(int64_t id) const;
  bool has(int64_t id) const { return seqs_.count(id) != 0; }
  const std::map<int64_t, Sequence>& sequences() const { return seqs_; }

  // The next step's work (empty seqs when nothing can run). Reserves KV slots,
  // advances n_cached of the scheduled sequences and forks Best-of-N children
  // (each with one pending token). The plan is the scheduler's own, valid
  // until the next call (its buffers are reused: no allocation per step once
  // they have grown).
  const StepPlan& schedule();
  // Marks a sequence finished and frees its pages (a parent's unforked
  // children are finished with it).
  void finish(int64_t id, StopReason why, const std::string& error = {});
  // Forgets a finished sequence (its memory is released).
  void release(int64_t id);
  bool done() const { return waiting_.empty() && running_.empty(); }
  int n_running() const { return static_cast<int>(running_.size()); }
  int n_waiting() const { return static_cast<int>(waiting_.size()); }
  int64_t preemptions() const { return preemptions_; }
  // Prompt rows not computed because their pages came from the prefix cache.
  int64_t prefix_cached_rows() const { return prefix_cached_rows_; }

 private:
  using Key = std::pair<int64_t, int64_t>;  // (arrival, id)
  Key key(const Sequence& s) const { return {s.arrival, s.id}; }
  void preempt(int64_t id);
  void fork_children(Sequence& parent);
  // Whether a recompute replays the sequence's generated tokens in prefill
  // chunks (dense rows: a decode row is a prefill's), not row by row.
  bool replays_in_chunks(const Sequence& s) const { return cfg_.chunked_replay && !s.row_replay; }
  // Rows to compute next for a sequence (prefill chunk or one row), within `budget`.
  int next_rows(const Sequence& s, int budget) const;
  int pages_for(int tokens) const { return (tokens + kv_.page_size() - 1) / kv_.page_size(); }
  // Indexed pages a waiting sequence may start with (fresh or recomputed; an
  // echo sequence none), and the prompt rows it keeps of them, at most
  // share_limit(s).
  KvCache::PrefixMatch shareable(const Sequence& s) const;
  int share_limit(const Sequence& s) const;
  // The tokens whose full pages the prefix index takes from a sequence, and
  // the indexing of those its computed rows complete.
  TokenRun indexed_tokens(const Sequence& s) const;
  void index_pages(const Sequence& s);
  int shared_rows(const Sequence& s, const KvCache::PrefixMatch& m) const;

  KvCache& kv_;
  SchedulerConfig cfg_;
  std::map<int64_t, Sequence> seqs_;
  std::set<Key> waiting_, running_;
  StepPlan plan_;             // schedule()'s result, reused
  std::vector<Key> order_;    // schedule()'s running sequences, oldest first
  int reserved_children_ = 0;  // children of running parents not forked yet
  int64_t preemptions_ = 0;
  int64_t prefix_cached_rows_ = 0;
};

}  // namespace kf

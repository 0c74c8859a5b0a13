// Engine: the C++ API for generation, and its one step loop.
//
//   submit(request) -> id      (any thread; taken at the next step boundary)
//   cancel(id)                 (any thread; its pages are freed at the next boundary)
//   step()                     (the engine's thread): schedule -> launch -> collect -> postprocess
//   take_finished()            finished requests, moved out (their memory is released)
//
// A request's tokens also flow through its RequestStream, if it has one (the
// server streams from it). Best-of-N: the prompt is prefilled once; the step
// that finishes it forks the other n-1 samples, which share its KV pages
// (copy-on-write) and sample their first tokens from its logits on the
// device. Each sample draws its randomness from Philox keyed by (seed,
// request key, sample index, step), and every CPU op is batch-invariant, so a
// sample's tokens do not depend on n, on other requests, or on preemption.
//
// Overlap: with one step in flight, step() launches step t and then collects
// step t-1 (the host's postprocessing of t-1 and scheduling of t+1 run while
// the device computes t). Rows whose input token is still in flight take it
// from the previous step's samples on the device, so the same tokens come out
// with overlap on or off.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "backend/sampler.h"
#include "engine/executor.h"
#include "engine/executor_group.h"
#include "engine/repetition.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace kf {

struct EngineConfig {
  int page_size = 16;
  int kv_pages = 0;  // pool capacity in pages per layer (must be set: see default_kv_pages)
  AttnPolicy policy;
  std::vector<int> dense_layers;  // layers kept dense under any policy (--dense-layers)
  bool i8_summaries = false;      // --summary-dtype int8: page summaries as int8 codes + scale (attn/summary.h)
  int max_step_tokens = 512;      // rows per step: decode rows plus prefill chunks of many requests
  int max_seqs = 256;             // running sequences at most (--max-seqs)
  int max_model_len = 0;          // prompt + generated tokens per sample at most (0 = the model's max_position)
  int max_echo_rows = 128;        // prompt rows per step whose logprobs are computed (echo requests)
  // Decode steps as graphs, padded to a few batch sizes. Auto = on CUDA only;
  // Always also pads on the CPU (whose graphs just rerun the ops: tests).
  enum class Mode { Auto, Always, Off };
  Mode graphs = Mode::Auto;
  // One step in flight while the host prepares the next. Auto = on CUDA only.
  Mode overlap = Mode::Auto;
  RepetitionParams repetition;
  // Share full KV pages across requests (--prefix-cache; scheduler.h).
  // Opt-in: a shared page's K/V come from another request's prefill chunks,
  // which on the GPU may differ from this request's own in the last bits (CPU
  // ops are batch-invariant: there the outputs are the same bits).
  bool prefix_cache = false;
  // Raw bytes of one token, for stop strings (needed only if a request has stop strings).
  std::function<std::string(int)> token_bytes;
};

// Pages that hold every sample of the given requests at once, capped so the
// pools of all layers stay under max_bytes.
// elem_bytes: bytes per K/V element (4 for the CPU's F32, 2 for BF16).
int default_kv_pages(const ModelConfig& cfg, int page_size, int64_t tokens_needed, int64_t max_bytes,
                     int elem_bytes = 4, bool i8_summaries = false);
// Device bytes one KV page takes over all layers (K, V, key summary, token).
int64_t kv_page_bytes(const ModelConfig& cfg, int page_size, int elem_bytes, bool i8_summaries = false);

// What happened to one sample since the last event of its request.
struct StreamEvent {
  int sample = 0;
  std::vector<int> tokens;  // new tokens (EOS excluded)
  std::vector<TokenLogprob> logprobs;  // theirs, when the request asked for logprobs
  bool done = false;
  StopReason stop = StopReason::None;
  std::string error;
};

// Thread-safe queue of a request's events: the engine pushes, a consumer waits.
class RequestStream {
 public:
  // Called (on the engine's thread, without the stream's lock) after each
  // push: an event loop that cannot block in wait() learns of new events.
  explicit RequestStream(std::function<void()> on_push = {}) : on_push_(std::move(on_push)) {}
  void push(StreamEvent e);
  // Every event so far, waiting up to `timeout` for one; empty on timeout.
  std::vector<StreamEvent> wait(std::chrono::milliseconds timeout);
  bool finished() const;  // every sample has ended (and its event was pushed)
  void expect_samples(int n);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<StreamEvent> events_;
  int samples_ = 1, ended_ = 0;
  std::function<void()> on_push_;
};

// Whether a decode row under this policy computes what a prefill row does
// (dense attention): a recompute may then replay generated tokens in chunks
// (Sequence::row_replay otherwise), and with the prefix cache their pages
// are indexed like prompt pages (engine/scheduler.h), which data-parallel
// routing also counts on (dist/replicas.cpp).
inline bool decode_rows_match_prefill(const AttnPolicy& p) { return p.kind == AttnKind::Dense; }

struct Request {
  std::vector<int> prompt;
  int n = 1;              // samples (Best-of-N)
  int max_tokens = 256;   // generated tokens per sample (0: prefill only, e.g. to score the prompt)
  SamplingParams sampling;
  std::vector<int> stop_tokens;         // in addition to the model's EOS ids
  bool ignore_eos = false;              // benchmarks: run to max_tokens
  std::vector<std::string> stop_strings;
  int64_t rng_key = -1;   // Philox request coordinate; -1 = the request id
  // These n samples are samples [first_sample, first_sample + n) of a larger
  // Best-of-N (their Philox streams): data parallelism splits one request's
  // samples over replicas and gets the tokens one engine would give.
  int first_sample = 0;
  // Data parallelism: route this request by load alone, not to the replica
  // that holds its prompt's pages (the parts of a request split over
  // replicas, which are meant to spread).
  bool route_by_load = false;
  std::optional<AttnPolicy> policy;     // this request's decode policy (default: the engine's)
  // Logprobs (engine/executor.h TokenLogprob): >= 0 gives every generated
  // token's log-probability and its `logprobs` most likely alternatives
  // (<= Backend::kMaxTopLogprobs); prompt_logprobs (echo) gives every prompt
  // token's after the first, with `max(logprobs, 0)` alternatives.
  int logprobs = -1;
  bool prompt_logprobs = false;
  // Budget forcing: a sample that has generated thinking_budget tokens
  // without think_end_token gets think_end_token as its next token (the
  // count starts at the first generated token). With the engine's overlap the
  // decision is made before the previous token is known: a sample whose own
  // think_end lands exactly as token thinking_budget - 1 gets a second one.
  int thinking_budget = -1;  // -1 = off
  int think_end_token = -1;
  std::shared_ptr<RequestStream> stream;  // optional: tokens as they are sampled
};

struct SampleResult {
  std::vector<int> tokens;  // generated tokens, without the EOS that ended it
  std::vector<TokenLogprob> logprobs;  // [tokens] when the request asked for logprobs
  int thinking_cut = -1;    // index in tokens of the think_end the budget forced (-1: none)
  StopReason stop = StopReason::None;
  std::string error;
  int preemptions = 0;
};

struct FinishedRequest {
  int64_t id = 0;
  std::vector<SampleResult> samples;
  int prompt_tokens = 0;
  std::vector<TokenLogprob> prompt_logprobs;  // prompt_logprobs: of prompt tokens 1..n-1
  AttnPolicy policy;            // the decode policy its samples used
  int64_t kv_bytes_read = 0;    // by its decode rows (as EngineStats::kv_bytes_read)
  int cached_prompt_tokens = 0;  // prompt tokens whose KV came from the prefix cache (at its admission)
};

struct EngineStats {
  int64_t steps = 0, graph_steps = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0;  // rows computed (prefill includes recompute)
  int64_t generated_tokens = 0;
  int64_t requests_finished = 0;
  double prefill_seconds = 0, decode_seconds = 0;  // step wall time split by rows
  double wall_seconds = 0;
  int64_t preemptions = 0;
  int64_t prefix_cached_rows = 0;  // prompt rows whose KV came from the prefix cache (not computed)
  int64_t prefix_cache_evictions = 0;  // cached pages taken back for allocations (LRU)
  int kv_pages = 0, kv_pages_peak = 0, page_size = 0;  // peak: pages held by sequences
  int running_peak = 0;
  // Decode reads: pages per (decode row, layer, KV head), summed.
  int64_t decode_page_reads = 0, decode_head_rows = 0;
  int64_t kv_bytes_read = 0;  // K+V (+ keys and summaries scored) bytes read by decode rows (all TP ranks)
  int64_t weight_bytes_read = 0;  // the weights once per step (every TP rank its shard)
  // Host time of the step loop, by phase, and device time of the steps.
  double host_schedule_s = 0, host_launch_s = 0, host_wait_s = 0, host_postprocess_s = 0;
  double device_s = 0;
  double pages_read_per_step() const { return decode_head_rows ? double(decode_page_reads) / decode_head_rows : 0; }
  double prefill_tok_s() const { return prefill_seconds > 0 ? prefill_tokens / prefill_seconds : 0; }
  double decode_tok_s() const { return decode_seconds > 0 ? decode_tokens / decode_seconds : 0; }
  // What accrued after `before`, an earlier snapshot of the same engine:
  // counters and times are differences; sizes and peaks stay this snapshot's.
  EngineStats since(const EngineStats& before) const;
};

class Engine {
 public:
  Engine(const Model& model, Backend& backend, EngineConfig cfg);
  // Tensor parallelism: ranks[r] is shard r of the model on rank r of a
  // group of backends (make_tp_group); one scheduler, every rank runs every
  // step (engine/executor_group.h). One rank is the constructor above.
  Engine(std::vector<ExecutorRank> ranks, EngineConfig cfg);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  int64_t submit(Request r);    // thread-safe; throws kf::Error on a malformed request
  void check_request(const Request& r) const;  // what submit checks (thread-safe)
  void cancel(int64_t request);  // thread-safe; unknown or finished ids are ignored
  bool step();                   // one step; false when nothing is left (idle)
  void run();                    // steps until idle
  // Blocks until a submission or cancel arrives or `timeout` passes (server loop).
  void wait_for_work(std::chrono::milliseconds timeout);

  // Finished requests in finishing order, moved out.
  std::vector<FinishedRequest> take_finished();
  // A finished request not taken yet (tests): throws if there is none.
  const std::vector<SampleResult>& result(int64_t request) const;

  bool idle() const;
  int n_running() const { return sched_.n_running(); }
  int n_waiting() const { return sched_.n_waiting(); }
  // Pages held by sequences (0 when idle), and pages held only by the prefix
  // cache (evictable); the rest of the pool is free.
  int kv_pages_used() const { return kv_.used_pages(); }
  int kv_pages_cached() const { return kv_.cached_pages(); }
  // The KV bookkeeping (tests check it).
  const KvCache& kv() const { return kv_; }
  // The prefix cache's evicted page hashes (KvCache::log_evictions), for a
  // router's record of what this engine holds (dist::ReplicaSet).
  void log_prefix_evictions(bool on) { kv_.log_evictions(on); }
  std::vector<uint64_t> take_evicted_prefixes() { return kv_.take_evicted_keys(); }
  // Requests and sequences the engine still holds (finished ones are released).
  size_t tracked_requests() const { return reqs_.size(); }
  size_t tracked_sequences() const { return sched_.sequences().size(); }
  const EngineStats& stats() const { return stats_; }
  const EngineConfig& config() const { return cfg_; }
  const StepExecutor& executor() const { return exec_.rank(0); }

 private:
  struct ReqState {
    int64_t id = 0;
    Request req;
    std::vector<SampleResult> samples;
    std::vector<std::string> text;  // bytes so far per sample (only with stop strings)
    std::vector<uint8_t> think_closed;  // per sample: think_end generated (thinking budget)
    std::vector<TokenLogprob> prompt_lp;
    int prompt_lp_asked = 0;  // prompt positions whose logprob entries were launched
    int64_t first_seq = 0;
    int remaining = 0;
    int64_t kv_bytes = 0;
    bool prefill_only = false;  // max_tokens 0: the sampled token is dropped
  };
  struct Launched {
    StepHandle handle = 0;
    std::vector<int64_t> sampled;  // sequence of each sampled row
    std::vector<int> sampled_lp;   // its logprob entry (-1: none)
    std::vector<uint8_t> forced;   // its token was forced by the thinking budget
    struct Echo {
      int64_t request = 0;
      int pos = 0;    // prompt position whose row scores token pos + 1
      int entry = 0;  // its logprob entry
    };
    std::vector<Echo> echo;
    int64_t prefill_rows = 0, decode_rows = 0;
    double launch_s = 0;
    void reset();  // empty, keeping the vectors' capacity
  };
  void intake();
  void add_request(int64_t id, Request r);
  Launched& launch(const StepPlan& plan);  // fills the launch buffer the step in flight does not hold
  void collect(const Launched& l);
  // Appends a sampled token (lp: its logprob, if asked) and applies stop rules.
  void accept(Sequence& s, int token, const TokenLogprob* lp, bool forced);
  void end_sample(ReqState& st, int sample, Sequence* s, StopReason why, const std::string& error = {});
  void fail_sequence(int64_t seq_id);

  const Model& model_;  // rank 0's (the whole model without tensor parallelism)
  Backend& be_;
  EngineConfig cfg_;
  KvCache kv_;
  Scheduler sched_;
  ExecutorGroup exec_;
  int64_t kv_heads_ = 0, weight_bytes_ = 0;  // over all ranks: what a step reads
  bool overlap_ = false;
  std::unordered_map<int64_t, ReqState> reqs_;
  std::vector<FinishedRequest> finished_;
  Launched launches_[2];        // reused by turns: the step in flight holds one
  int next_launch_ = 0;
  Launched* in_flight_ = nullptr;  // the step launched but not collected (overlap)
  int64_t next_seq_ = 0, next_arrival_ = 0;
  EngineStats stats_;
  std::chrono::steady_clock::time_point start_;
  bool started_ = false;

  // Submissions and cancels from other threads, drained at step boundaries.
  mutable std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::pair<int64_t, Request>> submitted_;
  std::vector<int64_t> cancelled_;
  int64_t next_request_ = 0;

  std::vector<int32_t> tokens_;  // staging of one sequence's input tokens
};

}  // namespace kf

// Engine: the C++ API for generation. submit() requests (each with n
// samples), run() until all are done; tokens stream out through callbacks.
//
// Best-of-N: the prompt is prefilled once as sample 0; when it completes, the
// other n-1 samples fork from it and share its KV pages (copy-on-write). Each
// sample draws its randomness from Philox keyed by (seed, request key, sample
// index, step), and every CPU op is batch-invariant, so a sample's tokens do
// not depend on n, on other requests, or on preemption.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace kf {

struct EngineConfig {
  int page_size = 16;
  int kv_pages = 0;  // pool capacity in pages per layer (must be set: see default_kv_pages)
  AttnPolicy policy;
  int max_step_tokens = 512;
  int max_running = 256;
  // Decode steps as graphs (Backend::replay): decode batches are padded to a
  // few bucket sizes so few graphs are recorded. Auto = on CUDA only; Always
  // also pads on the CPU (whose replay just runs the ops: tests of padding).
  enum class Graphs { Auto, Always, Off };
  Graphs graphs = Graphs::Auto;
  // Sampling through Backend::sample (only the tokens leave the device) for
  // steps without penalties or Best-of-N forks; the others use kf::Sampler on
  // the host. Auto = on non-CPU backends; Always also on the CPU (tests).
  // Both paths draw with the same float uniform, so they pick the same tokens.
  enum class DeviceSampling { Auto, Always, Off };
  DeviceSampling device_sampling = DeviceSampling::Auto;
  RepetitionParams repetition;
  // Raw bytes of one token, for stop strings (optional; needed only if a
  // request has stop strings).
  std::function<std::string(int)> token_bytes;
};

// Pages that hold every sample of the given requests at once, capped so the
// pools of all layers stay under max_bytes.
// elem_bytes: bytes per K/V element (4 for the CPU's F32, 2 for BF16).
int default_kv_pages(const ModelConfig& cfg, int page_size, int64_t tokens_needed, int64_t max_bytes,
                     int elem_bytes = 4);

struct Request {
  std::vector<int> prompt;
  int n = 1;              // samples (Best-of-N)
  int max_tokens = 256;   // generated tokens per sample
  SamplingParams sampling;
  std::vector<int> stop_tokens;         // in addition to the model's EOS ids
  bool ignore_eos = false;              // benchmarks: run to max_tokens
  std::vector<std::string> stop_strings;
  int64_t rng_key = -1;   // Philox request coordinate; -1 = the request id
  // Streaming: called for each generated token (not EOS) and when a sample ends.
  std::function<void(int64_t request, int sample, int token)> on_token;
  std::function<void(int64_t request, int sample, StopReason why)> on_done;
};

struct SampleResult {
  std::vector<int> tokens;  // generated tokens, without the EOS that ended it
  StopReason stop = StopReason::None;
  std::string error;
  int preemptions = 0;
};

struct EngineStats {
  int64_t steps = 0;
  int64_t prefill_tokens = 0, decode_tokens = 0;  // rows computed (prefill includes recompute)
  int64_t generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;  // step time split by rows
  double wall_seconds = 0;
  int64_t preemptions = 0;
  int kv_pages = 0, kv_pages_peak = 0, page_size = 0;
  // Decode reads: pages per (decode row, layer, KV head), summed.
  int64_t decode_page_reads = 0, decode_head_rows = 0;
  int64_t kv_bytes_read = 0;  // K+V (+ summaries scored) bytes read by decode rows
  double pages_read_per_step() const { return decode_head_rows ? double(decode_page_reads) / decode_head_rows : 0; }
  double prefill_tok_s() const { return prefill_seconds > 0 ? prefill_tokens / prefill_seconds : 0; }
  double decode_tok_s() const { return decode_seconds > 0 ? decode_tokens / decode_seconds : 0; }
};

class Engine {
 public:
  Engine(const Model& model, Backend& backend, EngineConfig cfg);
  ~Engine();

  int64_t submit(Request r);  // returns the request id
  void run();                 // steps until every submitted request is done
  bool step();                // one step; false when nothing is left

  const std::vector<SampleResult>& result(int64_t request) const;
  const EngineStats& stats() const { return stats_; }
  const EngineConfig& config() const { return cfg_; }

 private:
  struct ReqState {
    Request req;
    std::vector<SampleResult> samples;
    std::vector<std::string> text;  // bytes so far per sample (only with stop strings)
    int64_t first_seq = 0;
    int64_t arrival = 0;
    int remaining = 0;
  };
  void finish(Sequence& s, StopReason why);
  void accept(Sequence& s, int token);  // appends a sampled token and applies stop rules
  void record_failure(int64_t seq_id);

  const Model& model_;
  Backend& be_;
  EngineConfig cfg_;
  KvCache kv_;
  Scheduler sched_;
  Sampler sampler_;
  KvBuffers pool_;
  Workspace ws_;
  std::map<int64_t, ReqState> reqs_;
  int64_t next_request_ = 0, next_seq_ = 0, next_arrival_ = 0;
  EngineStats stats_;
  std::chrono::steady_clock::time_point start_;
  bool started_ = false;

  // Device index tensors (max sizes) and host staging.
  StepIndices idx_;  // the step's index arrays, host and device
  Buffer logits_, copy_src_, copy_dst_;
  std::vector<Buffer> sel_pages_, sel_counts_;
  std::vector<int32_t> h_src_, h_dst_, h_sel_;
  std::vector<int> logit_row_;  // [n_seqs] row of each sampled sequence's logits, -1 if none
  // Device sampling: per-row parameters and the sampled tokens.
  Buffer s_temp_, s_topk_, s_topp_, s_minp_, s_u_, tokens_;
  std::vector<float> h_temp_, h_topp_, h_minp_, h_u_;
  std::vector<int32_t> h_topk_, h_tokens_;
  int max_seqs_ = 0;            // rows of the per-sequence buffers
  int pad_page_ = 0;            // the pool's extra page, written only by padding rows
  bool use_graphs_ = false;
  std::vector<float> h_logits_, row_logits_;
  std::vector<uint16_t> h_logits_bf16_;
  std::vector<int> context_;
  std::vector<PageSelection> sels_;
  std::vector<int64_t> group_;
};

}  // namespace kf

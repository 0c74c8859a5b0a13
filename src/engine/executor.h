// StepExecutor: owns every device-side buffer of a step and turns a step's
// description into kernel launches (the only driver of Model::forward).
//
//   begin(); add_seq(...); add_logits(...); add_sample(...); add_logprob(...); add_copy(...);
//   StepHandle h = launch();          // uploads, forward, penalties, sampling, logprobs
//   const StepOutput& out = collect(h);  // waits; sampled tokens (+ logprobs, logits)
//
// It owns the KV pool (and the token pool beside it: the token of every KV
// slot, which device-side penalties read), the activations, the logits and
// sampling buffers, the step's index arrays (one packed page-locked staging
// buffer per step in flight, uploaded with one copy) and the decode graphs,
// keyed by a typed GraphKey. A step may be launched before the previous one is
// collected (one in flight: the engine's overlap): its rows can take their
// input token from the previous step's samples on the device
// (from_previous), so only sampled token ids ever come back to the host.
//
// Pure decode steps on a graph backend are padded to a bucket of rows (dummy
// one-token sequences on the pool's extra padding page) and a bucket of
// page-table columns, and replayed as graphs; padding changes no real row.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "model/model.h"

namespace kf {

struct ExecutorConfig {
  int page_size = 16;
  int kv_pages = 0;           // pool capacity in pages per layer (plus one padding page)
  int max_step_tokens = 512;  // query rows in one step
  int max_seqs = 256;         // sequences in one step, and sampled rows
  int max_logit_rows = 0;     // logits rows in one step (0 = max_seqs)
  int max_logprobs = 0;       // add_logprob entries in one step (0 = max_seqs + logits rows)
  bool graphs = false;        // replay pure decode steps as graphs (padded to buckets)
  bool pad_decode = false;    // pad pure decode steps as graph steps are, even without graphs (tests)
  AttnPolicy policy;          // decode policy of sequences added without one
  std::vector<int> dense_layers;  // layers that stay dense under any policy
  bool i8_summaries = false;      // page summaries as int8 codes + scale (attn/summary.h), else the act dtype
};

// One sampled token: the parameters of Backend::sample for its row.
struct SampleRow {
  float temperature = 1.f;
  int top_k = 0;
  float top_p = 1.f;
  float min_p = 0.f;
  float uniform = 0.f;  // the Philox draw in [0, 1)
  int forced = -1;      // emit this token instead of sampling
};
// Penalties of a logits row (see Backend::apply_penalties).
struct PenaltyRow {
  float repetition = 1.f, presence = 0.f, frequency = 0.f;
  int prompt_len = 0;
  bool active() const { return repetition != 1.f || presence != 0.f || frequency != 0.f; }
};

// The log-probability of one token (after the row's penalties, before
// temperature) and the row's most likely tokens, most likely first.
struct TokenLogprob {
  int token = -1;
  float logprob = 0.f;
  std::vector<std::pair<int32_t, float>> top;
};

struct StepOutput {
  std::vector<int32_t> tokens;  // [sampled rows] in add_sample order
  std::vector<TokenLogprob> logprobs;  // [add_logprob entries] in add_logprob order
  std::vector<float> logits;    // [logits rows, vocab] in add_logits order, when download_logits()
  int rows = 0, decode_rows = 0, seqs = 0;
  bool graph = false;
  double device_ms = 0;  // the step's device time (0 on the CPU)
};

using StepHandle = int;

class StepExecutor {
 public:
  StepExecutor(const Model& model, Backend& backend, ExecutorConfig cfg);
  ~StepExecutor();
  StepExecutor(const StepExecutor&) = delete;
  StepExecutor& operator=(const StepExecutor&) = delete;

  const ExecutorConfig& config() const { return cfg_; }
  const Model& model() const { return model_; }
  Backend& backend() const { return be_; }
  int vocab() const { return model_.config().vocab_size; }
  int pad_page() const { return cfg_.kv_pages; }

  // An input token taken from sampled row k (add_sample order) of the
  // previous step, still on the device.
  static constexpr int32_t from_previous(int k) { return -k - 1; }

  // ---- building a step (host only) ----
  void begin();
  // Rows for positions [start, start + tokens.size()) of a sequence whose
  // pages (logical -> physical) hold them after this step; slots are the KV
  // slots the rows write. Returns the sequence's index in the step.
  int add_seq(std::span<const int> pages, int start, std::span<const int32_t> tokens,
              std::span<const int32_t> slots, const AttnPolicy* policy = nullptr);
  // Logits of row `row` of sequence `seq` (-1 = its last row); returns the logits row.
  int add_logits(int seq, int row = -1, const PenaltyRow* penalties = nullptr);
  // One sampled token from a logits row; returns its sampled row.
  int add_sample(int logits_row, const SampleRow& s);
  // The log-probability of `target` in a logits row and the row's top k
  // (k <= Backend::kMaxTopLogprobs), computed on the device after sampling.
  // target: a token id, or sampled_target(k): what sampled row k of this
  // step draws. Returns the entry's index in StepOutput::logprobs.
  static constexpr int32_t sampled_target(int k) { return -k - 1; }
  int add_logprob(int logits_row, int32_t target, int k);
  void add_copy(int src_page, int dst_page);  // copy-on-write, before the step writes
  void download_logits() { want_logits_ = true; }  // collect() brings the logits to the host

  StepHandle launch();
  const StepOutput& collect(StepHandle h);

  // Benchmarks: every page of the pool gets random K and V (uniform in [-1,
  // 1)) and the key summary of its random keys, as if full.
  void fill_synthetic(uint64_t seed = 7);
  // The KV pool (tests read it back).
  const std::vector<KvLayer>& kv_layers() const { return kv_layers_; }
  void set_graphs(bool on) { cfg_.graphs = on; }
  int graphs_recorded() const { return static_cast<int>(graphs_.size()); }

 private:
  struct GraphKey {
    int rows = 0, pages = 0;
    bool penalties = false, mixed_policies = false;
    auto operator<=>(const GraphKey&) const = default;
  };
  struct Recorded {
    std::unique_ptr<Graph> graph;
    uint64_t epoch = 0;
  };
  struct SeqEntry {
    std::span<const int> pages;
    int start = 0, rows = 0, first_row = 0;
    AttnPolicy policy;
  };
  struct LogitsEntry {
    int seq = 0, row = 0;  // step row
    PenaltyRow pen;
  };
  struct LogprobEntry {
    int logits_row = 0;
    int32_t target = 0;
    int k = 0;
  };
  // Sections of the packed step staging, in 4-byte words.
  struct Layout {
    int64_t ids, pos, slots, logit_rows, q_start, ctx, seq_policy;
    int64_t s_row, s_temp, s_topk, s_topp, s_minp, s_u, s_forced;
    int64_t p_seq, p_prompt, p_rep, p_pres, p_freq;
    int64_t copy_src, copy_dst, lp_row, lp_target, words;
  };
  struct InFlight {
    Buffer staging;                        // pinned, Layout
    Buffer tokens_out;                     // pinned [max_seqs] I32
    Buffer lp_values_out, lp_ids_out;      // pinned [max_logprobs, kMaxTopLogprobs + 1]
    std::vector<LogprobEntry> logprobs;    // the step's entries (k per entry)
    int lp_cols = 0;                       // k + 1 of the step's token_logprobs call
    std::unique_ptr<Backend::Event> start, end;
    std::vector<int> sample_phys;          // logical sampled row -> physical
    std::vector<int> logits_phys;          // logical logits row -> physical
    StepOutput out;
    bool busy = false, want_logits = false;
  };

  void stage(InFlight& f, bool padded, int n_seqs_run, int stride);
  void run_forward(int n_logits, int n_samples, bool penalties);
  void run_logprobs(InFlight& f, int n_logits);
  int32_t* words(InFlight& f, int64_t off) { return f.staging.ptr<int32_t>() + off; }
  Tensor dev_i32(int64_t off, int64_t n) const;
  Tensor dev_f32(int64_t off, int64_t n) const;
  void reserve_table(int64_t cells);

  const Model& model_;
  Backend& be_;
  ExecutorConfig cfg_;
  Layout lay_{};
  int max_rows_ = 0, max_logits_ = 0, max_logprobs_ = 0;
  std::vector<uint8_t> layer_dense_;

  // Device state.
  std::vector<Buffer> k_, v_, summary_, summary_scale_;
  std::vector<KvLayer> kv_layers_;
  Buffer token_pool_;  // [kv_pages + 1, page_size] I32
  Workspace ws_;
  Buffer packed_;       // device copy of the staging Layout
  Buffer table_;        // [cells] I32 page tables
  Buffer table_host_;   // pinned
  Buffer logits_;       // [max_logits, vocab] F32
  Buffer sampled_;      // [max_seqs] I32: the last step's sampled tokens (from_previous reads them)
  Buffer lp_values_, lp_ids_;  // [max_logprobs, kMaxTopLogprobs + 1] token_logprobs outputs
  AttnBatch batch_;
  StepInput input_;
  std::map<GraphKey, Recorded> graphs_;

  // The step being built.
  std::vector<SeqEntry> seqs_;
  std::vector<int32_t> ids_, slots_;
  std::vector<LogitsEntry> logits_rows_;
  std::vector<std::pair<int, SampleRow>> samples_;  // (logits row, params)
  std::vector<std::pair<int, int>> copies_;
  std::vector<LogprobEntry> logprobs_;
  bool want_logits_ = false;
  int n_rows_ = 0;
  std::vector<uint8_t> seen_;  // launch()'s per-sequence counts (kept: no allocation per step)

  InFlight flight_[2];
  int next_flight_ = 0;
  const InFlight* last_launched_ = nullptr;  // from_previous maps through its sample_phys
};

}  // namespace kf

// Runner: the smallest driver of Model::forward, for n independent sequences
// with private pages (no sharing, no preemption). Used by the model tests,
// `kinfer generate`'s greedy loop (until the engine replaces it) and
// `kinfer bench decode`. Pages are laid out reversed and interleaved across
// sequences, so tests exercise real page tables, not one contiguous block.
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace kf {

class Runner {
 public:
  // max_ctx: tokens per sequence; max_step_tokens: rows per forward (prefill
  // chunks longer than this are split); 0 = max(max_ctx, n_seqs).
  Runner(const Model& model, Backend& backend, int n_seqs, int max_ctx, int page_size = 16,
         int max_step_tokens = 0);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  int n_seqs() const { return n_seqs_; }
  int ctx_len(int seq) const { return ctx_[seq]; }
  int vocab() const { return model_.config().vocab_size; }
  void set_policy(const AttnPolicy& p) { policy_ = p; }
  void reset();  // every sequence back to empty

  // Appends `tokens` to sequence `seq` (in chunks of at most max_step_tokens)
  // and returns the F32 logits of every appended row ([k, vocab]) when
  // all_logits, else of the last one ([1, vocab]).
  const std::vector<float>& prefill(int seq, const std::vector<int32_t>& tokens, bool all_logits);
  // One decode step: tokens[s] is appended to sequence s for every s; returns
  // logits [n_seqs, vocab].
  const std::vector<float>& decode(const std::vector<int32_t>& tokens);
  // The same step without bringing the logits to the host: they stay in
  // device_logits() ([n_seqs, vocab], backend dtype). Benchmarks use this.
  void decode_on_device(const std::vector<int32_t>& tokens);
  Tensor device_logits() const { return logits_.view().rows(0, n_seqs_); }

  // Synthetic context for benchmarks: every sequence's cache holds `tokens`
  // tokens whose K and V are uniform random values (all layers) and whose full
  // pages have their key summaries computed as kv_write does. Far faster than
  // prefilling real tokens; the work of later decode steps does not depend on
  // the values (block top-k selects different pages, but as many).
  void fill_synthetic(int tokens, uint64_t seed = 7);

  // Decode steps are replayed as one graph per shape on backends that have
  // graphs (Backend::replay); on by default.
  void set_graphs(bool on) { graphs_ = on; }
  // One mixed step: tokens[i] is appended to sequence seqs[i] (ascending,
  // distinct; several tokens = a prefill chunk, one = a decode row). Returns
  // the logits of every row, in order ([total rows, vocab]).
  const std::vector<float>& run(const std::vector<int>& seqs,
                                const std::vector<std::vector<int32_t>>& tokens);

 private:
  // Runs rows (seq_of_row[i], token[i]) as one step; sequences must be
  // grouped and ascending. want[i] marks rows whose logits are returned.
  void step(const std::vector<int>& seqs, const std::vector<int>& rows_per_seq,
            const std::vector<int32_t>& tokens, const std::vector<uint8_t>& want, bool download = true);
  int physical_page(int seq, int logical) const;

  const Model& model_;
  Backend& be_;
  int n_seqs_, max_ctx_, page_size_, pages_per_seq_, max_step_;
  AttnPolicy policy_;
  bool graphs_ = true;
  std::vector<int> ctx_;
  Workspace ws_;
  KvBuffers kv_;
  // Device copies of the step's index tensors (sized for the maximum).
  StepIndices idx_;  // the step's index arrays, host and device
  Buffer logits_;
  // Host staging.
  std::vector<uint16_t> h_logits_bf16_;
  std::vector<int> all_seqs_, ones_;  // decode: every sequence, one row each
  std::vector<uint8_t> want_all_;
  std::vector<float> out_;
};

}  // namespace kf

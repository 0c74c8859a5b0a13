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
  // One mixed step: tokens[i] is appended to sequence seqs[i] (ascending,
  // distinct; several tokens = a prefill chunk, one = a decode row). Returns
  // the logits of every row, in order ([total rows, vocab]).
  const std::vector<float>& run(const std::vector<int>& seqs,
                                const std::vector<std::vector<int32_t>>& tokens);

 private:
  // Runs rows (seq_of_row[i], token[i]) as one step; sequences must be
  // grouped and ascending. want[i] marks rows whose logits are returned.
  void step(const std::vector<int>& seqs, const std::vector<int>& rows_per_seq,
            const std::vector<int32_t>& tokens, const std::vector<uint8_t>& want);
  int physical_page(int seq, int logical) const;

  const Model& model_;
  Backend& be_;
  int n_seqs_, max_ctx_, page_size_, pages_per_seq_, max_step_;
  AttnPolicy policy_;
  std::vector<int> ctx_;
  Workspace ws_;
  KvBuffers kv_;
  // Device copies of the step's index tensors (sized for the maximum).
  Buffer ids_, pos_, slots_, rows_, q_start_, ctx_len_, page_table_, logits_;
  // Host staging.
  std::vector<int32_t> h_ids_, h_pos_, h_slots_, h_rows_, h_q_start_, h_ctx_, h_table_;
  std::vector<uint16_t> h_logits_bf16_;
  std::vector<int> all_seqs_, ones_;  // decode: every sequence, one row each
  std::vector<uint8_t> want_all_;
  std::vector<float> out_;
};

}  // namespace kf

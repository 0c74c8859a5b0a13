// StepDriver: the model tests' way to run steps through the one executor
// (engine/executor.h) for n independent sequences with private pages (no
// sharing, no preemption). Pages are laid out reversed and interleaved
// across sequences, so tests exercise real page tables, not one contiguous
// block. Every step brings every row's logits back as F32.
#pragma once
#include <algorithm>
#include <memory>
#include <vector>

#include "engine/executor.h"
#include "util/error.h"

namespace kf::test {

class StepDriver {
 public:
  // max_ctx: tokens per sequence; max_step_tokens: rows per step (longer
  // prefills are split); 0 = max(max_ctx, n_seqs).
  StepDriver(const Model& model, Backend& be, int n_seqs, int max_ctx, int page_size = 16, int max_step_tokens = 0,
             bool graphs = true, AttnPolicy policy = {}, std::vector<int> dense_layers = {}, bool pad_decode = false,
             bool i8_summaries = false)
      : n_seqs_(n_seqs), max_ctx_(max_ctx), page_size_(page_size),
        pages_per_seq_((max_ctx + page_size - 1) / page_size), ctx_(n_seqs, 0) {
    KF_CHECK(n_seqs > 0 && max_ctx > 0, "driver: n_seqs {} and max_ctx {} must be positive", n_seqs, max_ctx);
    ExecutorConfig c;
    c.page_size = page_size;
    c.kv_pages = n_seqs * pages_per_seq_;
    c.max_step_tokens = max_step_tokens > 0 ? max_step_tokens : std::max(max_ctx, n_seqs);
    c.max_seqs = n_seqs;
    c.max_logit_rows = c.max_step_tokens;
    c.graphs = graphs;
    c.pad_decode = pad_decode;
    c.policy = policy;
    c.dense_layers = std::move(dense_layers);
    c.i8_summaries = i8_summaries;
    max_step_ = c.max_step_tokens;
    exec_ = std::make_unique<StepExecutor>(model, be, c);
    pages_.resize(n_seqs);
    for (int s = 0; s < n_seqs; ++s)
      for (int p = 0; p < pages_per_seq_; ++p) pages_[s].push_back((pages_per_seq_ - 1 - p) * n_seqs + s);
  }

  int vocab() const { return exec_->vocab(); }
  int ctx_len(int seq) const { return ctx_[seq]; }
  void reset() { std::fill(ctx_.begin(), ctx_.end(), 0); }
  StepExecutor& executor() { return *exec_; }

  // Appends `tokens` to sequence `seq` (in chunks of at most max_step_tokens)
  // and returns the logits of every appended row ([k, vocab]) when
  // all_logits, else of the last one ([1, vocab]).
  std::vector<float> prefill(int seq, const std::vector<int32_t>& tokens, bool all_logits) {
    KF_CHECK(!tokens.empty(), "driver: empty prefill");
    std::vector<float> out;
    for (size_t b = 0; b < tokens.size(); b += max_step_) {
      const size_t e = std::min(tokens.size(), b + max_step_);
      const std::vector<int32_t> chunk(tokens.begin() + b, tokens.begin() + e);
      const std::vector<float> l = step({seq}, {chunk}, all_logits || e == tokens.size() ? 1 : 0);
      if (all_logits) out.insert(out.end(), l.begin(), l.end());
      else if (e == tokens.size()) out.assign(l.end() - vocab(), l.end());
    }
    return out;
  }
  // One decode step: tokens[s] is appended to sequence s for every s; returns logits [n_seqs, vocab].
  std::vector<float> decode(const std::vector<int32_t>& tokens) {
    KF_CHECK(static_cast<int>(tokens.size()) == n_seqs_, "driver: decode needs {} tokens, got {}", n_seqs_,
             tokens.size());
    std::vector<int> seqs(n_seqs_);
    std::vector<std::vector<int32_t>> rows(n_seqs_);
    for (int s = 0; s < n_seqs_; ++s) {
      seqs[s] = s;
      rows[s] = {tokens[s]};
    }
    return step(seqs, rows, 1);
  }
  // One mixed step: tokens[i] is appended to sequence seqs[i] (several tokens
  // = a prefill chunk, one = a decode row). Returns every row's logits in order.
  std::vector<float> run(const std::vector<int>& seqs, const std::vector<std::vector<int32_t>>& tokens) {
    return step(seqs, tokens, 1);
  }

 private:
  // want: 0 = logits of no row, 1 = of every row.
  std::vector<float> step(const std::vector<int>& seqs, const std::vector<std::vector<int32_t>>& tokens, int want) {
    KF_CHECK(seqs.size() == tokens.size() && !seqs.empty(), "driver: {} sequences, {} token lists", seqs.size(),
             tokens.size());
    StepExecutor& x = *exec_;
    x.begin();
    slots_.assign(seqs.size(), {});
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int s = seqs[i];
      KF_CHECK(s >= 0 && s < n_seqs_ && !tokens[i].empty(), "driver: bad sequence {} or empty rows", s);
      KF_CHECK(ctx_[s] + static_cast<int>(tokens[i].size()) <= max_ctx_, "driver: sequence {} would exceed {} tokens",
               s, max_ctx_);
      for (size_t r = 0; r < tokens[i].size(); ++r) {
        const int p = ctx_[s] + static_cast<int>(r);
        slots_[i].push_back(pages_[s][p / page_size_] * page_size_ + p % page_size_);
      }
      const int seq = x.add_seq(pages_[s], ctx_[s], tokens[i], slots_[i]);
      ctx_[s] += static_cast<int>(tokens[i].size());
      if (want)
        for (size_t r = 0; r < tokens[i].size(); ++r) x.add_logits(seq, static_cast<int>(r));
    }
    if (want) x.download_logits();
    return x.collect(x.launch()).logits;
  }

  int n_seqs_, max_ctx_, page_size_, pages_per_seq_, max_step_ = 0;
  std::vector<int> ctx_;
  std::vector<std::vector<int>> pages_;
  std::vector<std::vector<int32_t>> slots_;
  std::unique_ptr<StepExecutor> exec_;
};

}  // namespace kf::test

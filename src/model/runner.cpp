#include "model/runner.h"

#include <algorithm>
#include <cstring>

namespace kf {

Runner::Runner(const Model& model, Backend& be, int n_seqs, int max_ctx, int page_size,
               int max_step_tokens)
    : model_(model),
      be_(be),
      n_seqs_(n_seqs),
      max_ctx_(max_ctx),
      page_size_(page_size),
      pages_per_seq_((max_ctx + page_size - 1) / page_size),
      max_step_(max_step_tokens > 0 ? max_step_tokens : std::max(max_ctx, n_seqs)),
      ctx_(n_seqs, 0),
      ws_(model.config(), be, std::max(max_step_, n_seqs), std::max(max_step_, n_seqs)),
      kv_(model.config(), be, n_seqs * ((max_ctx + page_size - 1) / page_size), page_size) {
  KF_CHECK(n_seqs > 0 && max_ctx > 0, "runner: n_seqs {} and max_ctx {} must be positive", n_seqs,
           max_ctx);
  const int64_t T = ws_.max_tokens, vocab = model.config().vocab_size;
  const Device dev = be.device();
  ids_ = Buffer(DType::I32, {T}, dev);
  pos_ = Buffer(DType::I32, {T}, dev);
  slots_ = Buffer(DType::I32, {T}, dev);
  rows_ = Buffer(DType::I32, {T}, dev);
  q_start_ = Buffer(DType::I32, {int64_t(n_seqs) + 1}, dev);
  ctx_len_ = Buffer(DType::I32, {int64_t(n_seqs)}, dev);
  page_table_ = Buffer(DType::I32, {int64_t(n_seqs), int64_t(pages_per_seq_)}, dev);
  logits_ = Buffer(be.act_dtype(), {T, vocab}, dev);
  for (int s = 0; s < n_seqs; ++s) all_seqs_.push_back(s);
  ones_.assign(n_seqs, 1);
  want_all_.assign(n_seqs, 1);
}

void Runner::reset() { std::fill(ctx_.begin(), ctx_.end(), 0); }

int Runner::physical_page(int seq, int logical) const {
  return (pages_per_seq_ - 1 - logical) * n_seqs_ + seq;
}

void Runner::step(const std::vector<int>& seqs, const std::vector<int>& rows_per_seq,
                  const std::vector<int32_t>& tokens, const std::vector<uint8_t>& want) {
  const int n = static_cast<int>(tokens.size()), ns = static_cast<int>(seqs.size());
  h_ids_.assign(tokens.begin(), tokens.end());
  h_pos_.resize(n);
  h_slots_.resize(n);
  h_rows_.clear();
  h_q_start_.assign(1, 0);
  h_ctx_.resize(ns);
  h_table_.assign(size_t(ns) * pages_per_seq_, -1);
  int row = 0;
  for (int i = 0; i < ns; ++i) {
    const int s = seqs[i];
    KF_CHECK(ctx_[s] + rows_per_seq[i] <= max_ctx_, "runner: sequence {} would exceed {} tokens", s,
             max_ctx_);
    for (int r = 0; r < rows_per_seq[i]; ++r, ++row) {
      const int p = ctx_[s] + r;
      h_pos_[row] = p;
      h_slots_[row] = physical_page(s, p / page_size_) * page_size_ + p % page_size_;
      if (want[row]) h_rows_.push_back(row);
    }
    ctx_[s] += rows_per_seq[i];
    h_ctx_[i] = ctx_[s];
    h_q_start_.push_back(row);
    for (int pg = 0; pg < pages_per_seq_; ++pg) h_table_[size_t(i) * pages_per_seq_ + pg] = physical_page(s, pg);
  }
  const int m = static_cast<int>(h_rows_.size());
  const Tensor ids = ids_.view().rows(0, n), pos = pos_.view().rows(0, n),
               slots = slots_.view().rows(0, n), rows = rows_.view().rows(0, m);
  const Tensor q_start = q_start_.view().rows(0, ns + 1), ctx_len = ctx_len_.view().rows(0, ns),
               table = page_table_.view().rows(0, ns);
  be_.upload(ids, h_ids_.data());
  be_.upload(pos, h_pos_.data());
  be_.upload(slots, h_slots_.data());
  if (m) be_.upload(rows, h_rows_.data());
  be_.upload(q_start, h_q_start_.data());
  be_.upload(ctx_len, h_ctx_.data());
  be_.upload(table, h_table_.data());

  AttnBatch batch;
  batch.n_seqs = ns;
  batch.max_pages = pages_per_seq_;
  batch.q_start = q_start;
  batch.ctx_len = ctx_len;
  batch.page_table = table;
  StepInput in;
  in.token_ids = ids;
  in.positions = pos;
  in.kv_slots = slots;
  in.batch = &batch;
  in.policy = policy_;
  in.logit_rows = rows;
  const Tensor logits = logits_.view().rows(0, m);
  model_.forward(be_, ws_, kv_.layers, in, logits);

  // Append this step's logits as F32 to out_.
  const size_t off = out_.size(), count = size_t(m) * vocab();
  out_.resize(off + count);
  if (logits.dtype == DType::F32) {
    be_.download(out_.data() + off, logits);
  } else {
    h_logits_bf16_.resize(count);
    be_.download(h_logits_bf16_.data(), logits);
    for (size_t i = 0; i < count; ++i) out_[off + i] = bf16_to_f32(h_logits_bf16_[i]);
  }
}

const std::vector<float>& Runner::prefill(int seq, const std::vector<int32_t>& tokens, bool all_logits) {
  KF_CHECK(seq >= 0 && seq < n_seqs_, "runner: no sequence {}", seq);
  KF_CHECK(!tokens.empty(), "runner: empty prefill");
  out_.clear();
  const int total = static_cast<int>(tokens.size());
  for (int b = 0; b < total; b += max_step_) {
    const int e = std::min(total, b + max_step_);
    std::vector<int32_t> chunk(tokens.begin() + b, tokens.begin() + e);
    std::vector<uint8_t> want(e - b, all_logits ? 1 : 0);
    if (e == total) want.back() = 1;
    step({seq}, {e - b}, chunk, want);
  }
  return out_;
}

const std::vector<float>& Runner::decode(const std::vector<int32_t>& tokens) {
  KF_CHECK(static_cast<int>(tokens.size()) == n_seqs_, "runner: decode needs {} tokens, got {}",
           n_seqs_, tokens.size());
  out_.clear();
  step(all_seqs_, ones_, tokens, want_all_);  // no allocation once warm
  return out_;
}

const std::vector<float>& Runner::run(const std::vector<int>& seqs,
                                      const std::vector<std::vector<int32_t>>& tokens) {
  KF_CHECK(seqs.size() == tokens.size() && !seqs.empty(), "runner: {} sequences, {} token lists",
           seqs.size(), tokens.size());
  std::vector<int> rows;
  std::vector<int32_t> flat;
  for (size_t i = 0; i < seqs.size(); ++i) {
    KF_CHECK(seqs[i] >= 0 && seqs[i] < n_seqs_ && (i == 0 || seqs[i] > seqs[i - 1]) && !tokens[i].empty(),
             "runner: sequences must be ascending and distinct, each with tokens");
    rows.push_back(static_cast<int>(tokens[i].size()));
    flat.insert(flat.end(), tokens[i].begin(), tokens[i].end());
  }
  KF_CHECK(static_cast<int>(flat.size()) <= ws_.max_tokens, "runner: {} rows exceed the step size {}",
           flat.size(), ws_.max_tokens);
  out_.clear();
  step(seqs, rows, flat, std::vector<uint8_t>(flat.size(), 1));
  return out_;
}

}  // namespace kf

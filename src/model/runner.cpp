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
      kv_(model.config(), be, n_seqs * ((max_ctx + page_size - 1) / page_size), page_size),
      idx_(be, std::max(max_step_, n_seqs), n_seqs, int64_t(n_seqs) * pages_per_seq_) {
  KF_CHECK(n_seqs > 0 && max_ctx > 0, "runner: n_seqs {} and max_ctx {} must be positive", n_seqs,
           max_ctx);
  const int64_t T = ws_.max_tokens, vocab = model.config().vocab_size;
  logits_ = Buffer(be.act_dtype(), {T, vocab}, be.device());
  for (int s = 0; s < n_seqs; ++s) all_seqs_.push_back(s);
  ones_.assign(n_seqs, 1);
  want_all_.assign(n_seqs, 1);
}

// Graphs hold this runner's buffers: none may outlive it.
Runner::~Runner() { be_.clear_graphs(); }

void Runner::reset() { std::fill(ctx_.begin(), ctx_.end(), 0); }

void Runner::fill_synthetic(int tokens, uint64_t seed) {
  KF_CHECK(tokens >= 0 && tokens <= max_ctx_, "runner: synthetic context of {} tokens exceeds {}", tokens, max_ctx_);
  const ModelConfig& cfg = model_.config();
  for (int l = 0; l < cfg.n_layers; ++l) {
    be_.fill_uniform(kv_.layers[l].k, seed + 2 * l, -1.f, 1.f);
    be_.fill_uniform(kv_.layers[l].v, seed + 2 * l + 1, -1.f, 1.f);
  }
  // Rewriting the last slot of each full page with its own (random) key
  // makes kv_write compute that page's summary.
  std::vector<int32_t> slots;
  for (int s = 0; s < n_seqs_; ++s)
    for (int pg = 0; pg < tokens / page_size_; ++pg) slots.push_back(physical_page(s, pg) * page_size_ + page_size_ - 1);
  Buffer slot_buf(DType::I32, {ws_.max_tokens}, be_.device());  // setup only, not the decode path
  for (size_t b = 0; b < slots.size(); b += ws_.max_tokens) {
    const int n = static_cast<int>(std::min<size_t>(ws_.max_tokens, slots.size() - b));
    const Tensor sl = slot_buf.view().rows(0, n);
    be_.upload(sl, slots.data() + b);
    // Staging for the random rows: the q and attention-output buffers ([T, Hq*D], Hq >= Hkv).
    const int64_t kv_elems = int64_t(n) * cfg.n_kv_heads * cfg.head_dim;
    const Tensor k = ws_.q.view().reshape({ws_.q.view().numel()}).rows(0, kv_elems).reshape({n, cfg.n_kv_heads, cfg.head_dim});
    const Tensor v = ws_.attn.view().reshape({ws_.attn.view().numel()}).rows(0, kv_elems).reshape({n, cfg.n_kv_heads, cfg.head_dim});
    for (int l = 0; l < cfg.n_layers; ++l) {
      const uint64_t off = seed * 1000003ull + b * 131 + l;
      be_.fill_uniform(k, off, -1.f, 1.f);
      be_.fill_uniform(v, off + 7, -1.f, 1.f);
      be_.kv_write(kv_.layers[l], k, v, sl);
    }
  }
  be_.synchronize();  // slot_buf is freed on return
  std::fill(ctx_.begin(), ctx_.end(), tokens);
}

int Runner::physical_page(int seq, int logical) const {
  return (pages_per_seq_ - 1 - logical) * n_seqs_ + seq;
}

void Runner::step(const std::vector<int>& seqs, const std::vector<int>& rows_per_seq,
                  const std::vector<int32_t>& tokens, const std::vector<uint8_t>& want, bool download) {
  const int n = static_cast<int>(tokens.size()), ns = static_cast<int>(seqs.size());
  StepIndices& x = idx_;
  x.ids.assign(tokens.begin(), tokens.end());
  x.pos.resize(n);
  x.slots.resize(n);
  x.logit_rows.clear();
  x.q_start.assign(1, 0);
  x.ctx.resize(ns);
  x.table.assign(size_t(ns) * pages_per_seq_, -1);
  int row = 0;
  for (int i = 0; i < ns; ++i) {
    const int s = seqs[i];
    KF_CHECK(ctx_[s] + rows_per_seq[i] <= max_ctx_, "runner: sequence {} would exceed {} tokens", s,
             max_ctx_);
    for (int r = 0; r < rows_per_seq[i]; ++r, ++row) {
      const int p = ctx_[s] + r;
      x.pos[row] = p;
      x.slots[row] = physical_page(s, p / page_size_) * page_size_ + p % page_size_;
      if (want[row]) x.logit_rows.push_back(row);
    }
    ctx_[s] += rows_per_seq[i];
    x.ctx[i] = ctx_[s];
    x.q_start.push_back(row);
    for (int pg = 0; pg < pages_per_seq_; ++pg) x.table[size_t(i) * pages_per_seq_ + pg] = physical_page(s, pg);
  }
  const int m = static_cast<int>(x.logit_rows.size());
  AttnBatch batch;
  StepInput in = x.upload(batch, pages_per_seq_);
  in.policy = policy_;
  const Tensor logits = logits_.view().rows(0, m);
  if (graphs_ && n == ns) {  // decode: the same buffers and shapes every step of this size
    const uint64_t key = reinterpret_cast<uintptr_t>(this) * 0x9e3779b97f4a7c15ull ^ (uint64_t(ns) << 40) ^ (uint64_t(m) << 20) ^ (uint64_t(policy_.kind) << 16) ^
                         (uint64_t(policy_.topk_pages) << 4) ^ uint64_t(policy_.local_pages);
    be_.replay(key, [&] { model_.forward(be_, ws_, kv_.layers, in, logits); });
  } else {
    model_.forward(be_, ws_, kv_.layers, in, logits);
  }
  if (!download) return;

  // Append this step's logits as F32 to out_.
  const size_t off = out_.size(), count = size_t(m) * vocab();
  out_.resize(off + count);
  download_f32(be_, logits, out_.data() + off, h_logits_bf16_);
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

void Runner::decode_on_device(const std::vector<int32_t>& tokens) {
  KF_CHECK(static_cast<int>(tokens.size()) == n_seqs_, "runner: decode needs {} tokens, got {}",
           n_seqs_, tokens.size());
  step(all_seqs_, ones_, tokens, want_all_, false);
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

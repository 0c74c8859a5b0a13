#include "engine/executor.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace kf {

namespace {

// Decode batches are padded up to these sizes (and page tables to a power of
// two columns) so a graph backend records a few step shapes, not one per size.
int rows_bucket(int n, int cap) {
  const int b = n <= 2 ? n : n <= 4 ? 4 : n <= 64 ? (n + 7) / 8 * 8 : n <= 256 ? (n + 31) / 32 * 32 : (n + 127) / 128 * 128;
  return std::min(b, cap);
}
int pages_bucket(int n) {
  int b = 16;
  while (b < n) b *= 2;
  return b;
}

}  // namespace

StepExecutor::StepExecutor(const Model& model, Backend& be, ExecutorConfig cfg)
    : model_(model),
      be_(be),
      cfg_(std::move(cfg)),
      max_rows_(std::max(cfg_.max_step_tokens, cfg_.max_seqs)),
      max_logits_(std::min(std::max(cfg_.max_logit_rows, cfg_.max_seqs), max_rows_)),
      max_logprobs_(cfg_.max_logprobs > 0 ? cfg_.max_logprobs : cfg_.max_seqs + max_logits_),
      ws_(model.config(), be, max_rows_, max_logits_) {
  const ModelConfig& mc = model.config();
  KF_CHECK(cfg_.kv_pages > 0 && cfg_.page_size > 0, "executor: kv_pages {} and page_size {} must be positive",
           cfg_.kv_pages, cfg_.page_size);
  KF_CHECK(cfg_.max_seqs >= 1 && cfg_.max_step_tokens >= 1, "executor: max_seqs {} and max_step_tokens {} must be >= 1",
           cfg_.max_seqs, cfg_.max_step_tokens);
  layer_dense_.assign(mc.n_layers, 0);
  for (int l : cfg_.dense_layers) {
    KF_CHECK(l >= 0 && l < mc.n_layers, "--dense-layers: layer {} is outside [0, {})", l, mc.n_layers);
    layer_dense_[l] = 1;
  }

  // The KV pool, one extra page for padding rows: [page][kv_head][P][head_dim].
  const int64_t pages = int64_t(cfg_.kv_pages) + 1, P = cfg_.page_size;
  const DType act = be.act_dtype();
  for (int l = 0; l < mc.n_layers; ++l) {
    k_.emplace_back(act, std::initializer_list<int64_t>{pages, mc.n_kv_heads, P, mc.head_dim}, be);
    v_.emplace_back(act, std::initializer_list<int64_t>{pages, mc.n_kv_heads, P, mc.head_dim}, be);
    summary_.emplace_back(cfg_.i8_summaries ? DType::U8 : act,
                          std::initializer_list<int64_t>{pages, mc.n_kv_heads, mc.head_dim}, be);
    if (cfg_.i8_summaries)
      summary_scale_.emplace_back(DType::F32, std::initializer_list<int64_t>{pages, mc.n_kv_heads}, be);
    kv_layers_.push_back(KvLayer{k_[l].view(), v_[l].view(), summary_[l].view(),
                                 cfg_.i8_summaries ? summary_scale_[l].view() : Tensor()});
  }
  token_pool_ = Buffer(DType::I32, {pages, P}, be);

  // Packed index arrays: rows T, sequences and sampled rows S, logits rows L.
  const int64_t T = max_rows_, S = cfg_.max_seqs, L = max_logits_;
  int64_t at = 0;
  auto take = [&](int64_t n) {
    const int64_t o = at;
    at += (n + 3) / 4 * 4;  // 16-byte aligned sections
    return o;
  };
  lay_.ids = take(T), lay_.pos = take(T), lay_.slots = take(T), lay_.logit_rows = take(L);
  lay_.q_start = take(S + 1), lay_.ctx = take(S), lay_.seq_policy = take(3 * S);
  lay_.s_row = take(S), lay_.s_temp = take(S), lay_.s_topk = take(S), lay_.s_topp = take(S);
  lay_.s_minp = take(S), lay_.s_u = take(S), lay_.s_forced = take(S);
  lay_.p_seq = take(L), lay_.p_prompt = take(L), lay_.p_rep = take(L), lay_.p_pres = take(L), lay_.p_freq = take(L);
  lay_.copy_src = take(S), lay_.copy_dst = take(S);
  lay_.lp_row = take(max_logprobs_), lay_.lp_target = take(max_logprobs_);
  lay_.words = at;
  packed_ = Buffer(DType::I32, {lay_.words}, be);
  for (InFlight& f : flight_) {
    f.staging = Buffer(DType::I32, {lay_.words}, be.pinned());
    f.tokens_out = Buffer(DType::I32, {S}, be.pinned());
    f.lp_values_out = Buffer(DType::F32, {max_logprobs_, Backend::kMaxTopLogprobs + 1}, be.pinned());
    f.lp_ids_out = Buffer(DType::I32, {max_logprobs_, Backend::kMaxTopLogprobs + 1}, be.pinned());
    f.start = be.make_event();
    f.end = be.make_event();
  }
  logits_ = Buffer(DType::F32, {L, int64_t(mc.vocab_size)}, be);
  sampled_ = Buffer(DType::I32, {S}, be);
  lp_values_ = Buffer(DType::F32, {max_logprobs_, Backend::kMaxTopLogprobs + 1}, be);
  lp_ids_ = Buffer(DType::I32, {max_logprobs_, Backend::kMaxTopLogprobs + 1}, be);
  reserve_table(S * 64);
}

// Recorded graphs hold this executor's buffers: they go first.
StepExecutor::~StepExecutor() {
  be_.synchronize();
  graphs_.clear();
}

void StepExecutor::reserve_table(int64_t cells) {
  const int64_t have = table_.empty() ? 0 : table_.view().numel();
  if (have >= cells) return;
  const int64_t want = std::max(cells, 2 * have);  // doubling: few moves
  be_.synchronize();                               // in-flight steps still read the old tables
  table_ = Buffer(DType::I32, {want}, be_);
  table_host_ = Buffer(DType::I32, {2 * want}, be_.pinned());  // one half per step in flight
  graphs_.clear();                                             // they point at the old table
}

Tensor StepExecutor::dev_i32(int64_t off, int64_t n) const {
  return Tensor(packed_.ptr<int32_t>() + off, DType::I32, {n}, be_.device());
}
Tensor StepExecutor::dev_f32(int64_t off, int64_t n) const {
  return Tensor(packed_.ptr<int32_t>() + off, DType::F32, {n}, be_.device());
}

void StepExecutor::begin() {
  seqs_.clear();
  ids_.clear();
  slots_.clear();
  logits_rows_.clear();
  samples_.clear();
  copies_.clear();
  logprobs_.clear();
  want_logits_ = false;
  n_rows_ = 0;
}

int StepExecutor::add_seq(std::span<const int> pages, int start, std::span<const int32_t> tokens,
                          std::span<const int32_t> slots, const AttnPolicy* policy) {
  const int n = static_cast<int>(tokens.size());
  KF_CHECK(n >= 1 && slots.size() == tokens.size(), "executor: a sequence needs rows ({}) and as many slots ({})", n,
           slots.size());
  KF_CHECK(static_cast<int>(seqs_.size()) < cfg_.max_seqs, "executor: more than {} sequences in one step",
           cfg_.max_seqs);
  KF_CHECK(n_rows_ + n <= cfg_.max_step_tokens, "executor: {} rows exceed the step's {}", n_rows_ + n,
           cfg_.max_step_tokens);
  const int64_t P = cfg_.page_size;
  KF_CHECK(static_cast<int64_t>(pages.size()) * P >= start + n, "executor: {} pages cannot hold {} tokens",
           pages.size(), start + n);
  SeqEntry e;
  e.pages = pages;
  e.start = start;
  e.rows = n;
  e.first_row = n_rows_;
  e.policy = policy ? *policy : cfg_.policy;
  seqs_.push_back(e);
  ids_.insert(ids_.end(), tokens.begin(), tokens.end());
  slots_.insert(slots_.end(), slots.begin(), slots.end());
  n_rows_ += n;
  return static_cast<int>(seqs_.size()) - 1;
}

int StepExecutor::add_logits(int seq, int row, const PenaltyRow* penalties) {
  KF_CHECK(seq >= 0 && seq < static_cast<int>(seqs_.size()), "executor: no sequence {} in this step", seq);
  const SeqEntry& e = seqs_[seq];
  if (row < 0) row = e.rows - 1;
  KF_CHECK(row < e.rows, "executor: sequence {} has {} rows, not {}", seq, e.rows, row + 1);
  KF_CHECK(static_cast<int>(logits_rows_.size()) < max_logits_, "executor: more than {} logits rows in one step",
           max_logits_);
  LogitsEntry le;
  le.seq = seq;
  le.row = e.first_row + row;
  if (penalties) le.pen = *penalties;
  logits_rows_.push_back(le);
  return static_cast<int>(logits_rows_.size()) - 1;
}

int StepExecutor::add_sample(int logits_row, const SampleRow& s) {
  KF_CHECK(logits_row >= 0 && logits_row < static_cast<int>(logits_rows_.size()),
           "executor: no logits row {} in this step", logits_row);
  KF_CHECK(static_cast<int>(samples_.size()) < cfg_.max_seqs, "executor: more than {} sampled rows in one step",
           cfg_.max_seqs);
  samples_.emplace_back(logits_row, s);
  return static_cast<int>(samples_.size()) - 1;
}

int StepExecutor::add_logprob(int logits_row, int32_t target, int k) {
  KF_CHECK(logits_row >= 0 && logits_row < static_cast<int>(logits_rows_.size()),
           "executor: no logits row {} in this step", logits_row);
  KF_CHECK(k >= 0 && k <= Backend::kMaxTopLogprobs, "executor: {} top logprobs, at most {}", k,
           Backend::kMaxTopLogprobs);
  KF_CHECK(target >= 0 ? target < vocab() : -target - 1 < static_cast<int>(samples_.size()),
           "executor: logprob target {} is neither a token nor a sampled row of this step", target);
  KF_CHECK(static_cast<int>(logprobs_.size()) < max_logprobs_, "executor: more than {} logprob entries in one step",
           max_logprobs_);
  logprobs_.push_back(LogprobEntry{logits_row, target, k});
  return static_cast<int>(logprobs_.size()) - 1;
}

void StepExecutor::add_copy(int src_page, int dst_page) {
  KF_CHECK(static_cast<int>(copies_.size()) < cfg_.max_seqs, "executor: more than {} page copies in one step",
           cfg_.max_seqs);
  copies_.emplace_back(src_page, dst_page);
}

// Fills the staging of `f`: every array of the step at its Layout offset, the
// page tables, and the logical -> physical maps of logits and sampled rows.
void StepExecutor::stage(InFlight& f, bool padded, int n_seqs_run, int stride) {
  const int n_seqs = static_cast<int>(seqs_.size());
  const int P = cfg_.page_size;
  int32_t* ids = words(f, lay_.ids);
  int32_t* pos = words(f, lay_.pos);
  int32_t* slots = words(f, lay_.slots);
  int32_t* q_start = words(f, lay_.q_start);
  int32_t* ctx = words(f, lay_.ctx);
  int32_t* pol = words(f, lay_.seq_policy);
  int32_t* table = table_host_.ptr<int32_t>() + (&f - flight_) * (table_host_.view().numel() / 2);
  const std::vector<int>* prev_phys = last_launched_ ? &last_launched_->sample_phys : nullptr;
  q_start[0] = 0;
  for (int i = 0; i < n_seqs_run; ++i) {
    const bool pad = i >= n_seqs;
    const int first = pad ? n_rows_ + (i - n_seqs) : seqs_[i].first_row;
    const int rows = pad ? 1 : seqs_[i].rows;
    const int start = pad ? 0 : seqs_[i].start;
    for (int r = 0; r < rows; ++r) {
      int32_t tok = pad ? 0 : ids_[first + r];
      if (tok < 0) {  // from_previous(k): the previous step's sampled row k, by its physical index
        const int k = -tok - 1;
        KF_CHECK(prev_phys && k < static_cast<int>(prev_phys->size()),
                 "executor: a row takes sampled row {} of the previous step, which has none", k);
        tok = StepExecutor::from_previous((*prev_phys)[k]);
      }
      ids[first + r] = tok;
      pos[first + r] = start + r;
      slots[first + r] = pad ? pad_page() * P : slots_[first + r];
    }
    q_start[i + 1] = first + rows;
    ctx[i] = start + rows;
    const AttnPolicy& p = pad ? cfg_.policy : seqs_[i].policy;
    pol[3 * i] = static_cast<int32_t>(p.kind);
    pol[3 * i + 1] = p.local_pages;
    pol[3 * i + 2] = p.topk_pages;
    int32_t* row = table + static_cast<int64_t>(i) * stride;
    std::fill(row, row + stride, -1);
    if (pad) row[0] = pad_page();
    else std::copy(seqs_[i].pages.begin(), seqs_[i].pages.end(), row);
  }

  // Logits rows: in a padded step every sequence's (only) row, in order.
  const int n_logits = padded ? n_seqs_run : static_cast<int>(logits_rows_.size());
  int32_t* logit_rows = words(f, lay_.logit_rows);
  f.logits_phys.assign(logits_rows_.size(), 0);
  if (padded) {
    for (int i = 0; i < n_logits; ++i) logit_rows[i] = i;
    for (size_t j = 0; j < logits_rows_.size(); ++j) f.logits_phys[j] = logits_rows_[j].seq;
  } else {
    for (int j = 0; j < n_logits; ++j) {
      logit_rows[j] = logits_rows_[j].row;
      f.logits_phys[j] = j;
    }
  }
  // Penalties per physical logits row (rows without any stay neutral).
  int32_t* p_seq = words(f, lay_.p_seq);
  int32_t* p_prompt = words(f, lay_.p_prompt);
  float* p_rep = reinterpret_cast<float*>(words(f, lay_.p_rep));
  float* p_pres = reinterpret_cast<float*>(words(f, lay_.p_pres));
  float* p_freq = reinterpret_cast<float*>(words(f, lay_.p_freq));
  for (int j = 0; j < n_logits; ++j) {
    p_seq[j] = padded ? j : logits_rows_[j].seq;
    p_prompt[j] = 0;
    p_rep[j] = 1.f;
    p_pres[j] = 0.f;
    p_freq[j] = 0.f;
  }
  for (size_t j = 0; j < logits_rows_.size(); ++j) {
    const PenaltyRow& pen = logits_rows_[j].pen;
    const int ph = f.logits_phys[j];
    p_prompt[ph] = pen.prompt_len;
    p_rep[ph] = pen.repetition;
    p_pres[ph] = pen.presence;
    p_freq[ph] = pen.frequency;
  }

  // Sampled rows: in a padded step row i samples logits row i (padding: greedy, ignored).
  const int n_samples = padded ? n_seqs_run : static_cast<int>(samples_.size());
  int32_t* s_row = words(f, lay_.s_row);
  float* s_temp = reinterpret_cast<float*>(words(f, lay_.s_temp));
  int32_t* s_topk = words(f, lay_.s_topk);
  float* s_topp = reinterpret_cast<float*>(words(f, lay_.s_topp));
  float* s_minp = reinterpret_cast<float*>(words(f, lay_.s_minp));
  float* s_u = reinterpret_cast<float*>(words(f, lay_.s_u));
  int32_t* s_forced = words(f, lay_.s_forced);
  for (int r = 0; r < n_samples; ++r) {
    s_row[r] = padded ? r : 0;
    s_temp[r] = 0.f;
    s_topk[r] = 0;
    s_topp[r] = 1.f;
    s_minp[r] = 0.f;
    s_u[r] = 0.f;
    s_forced[r] = -1;
  }
  f.sample_phys.assign(samples_.size(), 0);
  for (size_t k = 0; k < samples_.size(); ++k) {
    const auto& [lrow, s] = samples_[k];
    const int ph = padded ? f.logits_phys[lrow] : static_cast<int>(k);
    f.sample_phys[k] = ph;
    s_row[ph] = f.logits_phys[lrow];
    s_temp[ph] = s.temperature;
    s_topk[ph] = s.top_k;
    s_topp[ph] = s.top_p;
    s_minp[ph] = s.min_p;
    s_u[ph] = s.uniform;
    s_forced[ph] = s.forced;
  }
  // Logprob entries: physical logits rows, and sampled targets by their physical row.
  int32_t* lp_row = words(f, lay_.lp_row);
  int32_t* lp_target = words(f, lay_.lp_target);
  for (size_t j = 0; j < logprobs_.size(); ++j) {
    const LogprobEntry& e = logprobs_[j];
    lp_row[j] = f.logits_phys[e.logits_row];
    lp_target[j] = e.target >= 0 ? e.target : sampled_target(f.sample_phys[-e.target - 1]);
  }
  int32_t* c_src = words(f, lay_.copy_src);
  int32_t* c_dst = words(f, lay_.copy_dst);
  for (size_t i = 0; i < copies_.size(); ++i) {
    c_src[i] = copies_[i].first;
    c_dst[i] = copies_[i].second;
  }
  be_.upload(packed_.view(), f.staging.ptr<int32_t>());
  be_.upload(Tensor(table_.ptr<int32_t>(), DType::I32, {int64_t(n_seqs_run) * stride}, be_.device()), table);
}

// The step's ops, all on fixed buffers (what a graph records): input tokens,
// the forward, penalties, sampling.
void StepExecutor::run_forward(int n_logits, int n_samples, bool penalties) {
  be_.resolve_tokens(input_.token_ids, sampled_.view(), input_.kv_slots, token_pool_.view());
  const Tensor logits = logits_.view().rows(0, n_logits);
  model_.forward(be_, ws_, kv_layers_, input_, logits);
  if (penalties) {
    PenaltyArgs pa;
    pa.seq = dev_i32(lay_.p_seq, n_logits);
    pa.prompt_len = dev_i32(lay_.p_prompt, n_logits);
    pa.repetition = dev_f32(lay_.p_rep, n_logits);
    pa.presence = dev_f32(lay_.p_pres, n_logits);
    pa.frequency = dev_f32(lay_.p_freq, n_logits);
    be_.apply_penalties(logits, pa, batch_, token_pool_.view());
  }
  if (n_samples > 0) {
    SampleArgs sa;
    sa.logit_row = dev_i32(lay_.s_row, n_samples);
    sa.temperature = dev_f32(lay_.s_temp, n_samples);
    sa.top_k = dev_i32(lay_.s_topk, n_samples);
    sa.top_p = dev_f32(lay_.s_topp, n_samples);
    sa.min_p = dev_f32(lay_.s_minp, n_samples);
    sa.uniform = dev_f32(lay_.s_u, n_samples);
    sa.forced = dev_i32(lay_.s_forced, n_samples);
    be_.sample(logits, sa, sampled_.view().rows(0, n_samples));
  }
}

// After the step's sampling (outside any graph): the entries' logprobs, on the
// device, and their download.
void StepExecutor::run_logprobs(InFlight& f, int n_logits) {
  const int m = static_cast<int>(logprobs_.size());
  int k = 0;
  for (const LogprobEntry& e : logprobs_) k = std::max(k, e.k);
  f.lp_cols = k + 1;
  const Tensor values = lp_values_.view().reshape({lp_values_.view().numel()}).rows(0, int64_t(m) * f.lp_cols);
  const Tensor ids = lp_ids_.view().reshape({lp_ids_.view().numel()}).rows(0, int64_t(m) * f.lp_cols);
  be_.token_logprobs(logits_.view().rows(0, n_logits), dev_i32(lay_.lp_row, m), dev_i32(lay_.lp_target, m),
                     sampled_.view(), k, values.reshape({m, k + 1}), ids.reshape({m, k + 1}));
  be_.download_async(f.lp_values_out.ptr<float>(), values);
  be_.download_async(f.lp_ids_out.ptr<int32_t>(), ids);
}

StepHandle StepExecutor::launch() {
  const int n_seqs = static_cast<int>(seqs_.size());
  KF_CHECK(n_seqs > 0, "executor: launch of an empty step");
  const int h = next_flight_;
  InFlight& f = flight_[h];
  KF_CHECK(!f.busy, "executor: more than two steps in flight (collect the older one first)");
  next_flight_ = 1 - next_flight_;

  int max_pages = 1;
  for (const SeqEntry& e : seqs_) max_pages = std::max(max_pages, static_cast<int>(e.pages.size()));
  // Padding needs at most one logits row (a sequence's last) and one sample per sequence.
  bool one_sample_per_seq = true;
  seen_.assign(2 * seqs_.size(), 0);
  for (const auto& [lrow, s] : samples_)
    if (seen_[logits_rows_[lrow].seq]++) one_sample_per_seq = false;
  for (const LogitsEntry& le : logits_rows_)
    if (seen_[seqs_.size() + le.seq]++ || le.row != seqs_[le.seq].first_row + seqs_[le.seq].rows - 1)
      one_sample_per_seq = false;
  // A pure decode step is padded to a bucket of rows and columns, and
  // replayed as a graph when graphs are on.
  const bool padded = (cfg_.graphs || cfg_.pad_decode) && n_rows_ == n_seqs && one_sample_per_seq;
  const bool graph = padded && cfg_.graphs;
  const int n_seqs_run = padded ? rows_bucket(n_seqs, cfg_.max_seqs) : n_seqs;
  const int stride = padded ? pages_bucket(max_pages) : max_pages;
  reserve_table(int64_t(n_seqs_run) * stride);
  bool penalties = false;
  for (const LogitsEntry& le : logits_rows_) penalties |= le.pen.active();
  // Per-sequence policies only when some sequence differs from the default:
  // a uniform batch keeps the one-kernel attention path.
  bool mixed = false;
  for (const SeqEntry& e : seqs_) mixed |= !(e.policy == cfg_.policy);

  be_.record(*f.start);
  stage(f, padded, n_seqs_run, stride);
  if (!copies_.empty()) {
    const int nc = static_cast<int>(copies_.size());
    const Tensor src = dev_i32(lay_.copy_src, nc), dst = dev_i32(lay_.copy_dst, nc);
    for (const KvLayer& layer : kv_layers_) be_.kv_copy_pages(layer, src, dst);
    be_.copy_rows(token_pool_.view(), src, dst);
  }

  const int n_rows_run = padded ? n_seqs_run : n_rows_;
  const int n_logits = padded ? n_seqs_run : static_cast<int>(logits_rows_.size());
  const int n_samples = padded ? n_seqs_run : static_cast<int>(samples_.size());
  batch_ = AttnBatch{};
  batch_.n_seqs = n_seqs_run;
  batch_.max_pages = stride;
  batch_.q_start = dev_i32(lay_.q_start, n_seqs_run + 1);
  batch_.ctx_len = dev_i32(lay_.ctx, n_seqs_run);
  batch_.page_table = Tensor(table_.ptr<int32_t>(), DType::I32, {n_seqs_run, stride}, be_.device());
  if (mixed)
    batch_.seq_policy = Tensor(packed_.ptr<int32_t>() + lay_.seq_policy, DType::I32, {n_seqs_run, 3}, be_.device());
  input_ = StepInput{};
  input_.token_ids = dev_i32(lay_.ids, n_rows_run);
  input_.positions = dev_i32(lay_.pos, n_rows_run);
  input_.kv_slots = dev_i32(lay_.slots, n_rows_run);
  input_.logit_rows = dev_i32(lay_.logit_rows, n_logits);
  input_.batch = &batch_;
  input_.policy = cfg_.policy;
  input_.layer_dense = layer_dense_;

  if (graph) {
    const GraphKey key{n_seqs_run, stride, penalties, mixed};
    auto it = graphs_.find(key);
    if (it != graphs_.end() && it->second.epoch != be_.scratch_epoch()) {
      graphs_.erase(it);
      it = graphs_.end();
    }
    if (it == graphs_.end()) {
      Recorded rec;
      rec.graph = be_.record([this, n_logits, n_samples, penalties] { run_forward(n_logits, n_samples, penalties); });
      rec.epoch = be_.scratch_epoch();
      graphs_.emplace(key, std::move(rec));
    } else {
      be_.replay(*it->second.graph);
    }
  } else {
    run_forward(n_logits, n_samples, penalties);
  }
  if (n_samples > 0) be_.download_async(f.tokens_out.ptr<int32_t>(), sampled_.view().rows(0, n_samples));
  f.logprobs = logprobs_;
  if (!logprobs_.empty()) run_logprobs(f, n_logits);
  be_.record(*f.end);

  f.busy = true;
  f.want_logits = want_logits_;
  f.out = StepOutput{};
  f.out.rows = n_rows_;
  f.out.seqs = n_seqs;
  f.out.graph = graph;
  for (const SeqEntry& e : seqs_) f.out.decode_rows += e.rows == 1 ? 1 : 0;
  last_launched_ = &f;
  return h;
}

const StepOutput& StepExecutor::collect(StepHandle h) {
  KF_CHECK(h == 0 || h == 1, "executor: bad step handle {}", h);
  InFlight& f = flight_[h];
  KF_CHECK(f.busy, "executor: step {} is not in flight", h);
  be_.wait(*f.end);
  f.busy = false;
  f.out.device_ms = be_.ms_between(*f.start, *f.end);
  f.out.tokens.resize(f.sample_phys.size());
  for (size_t k = 0; k < f.sample_phys.size(); ++k) f.out.tokens[k] = f.tokens_out.ptr<int32_t>()[f.sample_phys[k]];
  f.out.logprobs.resize(f.logprobs.size());
  for (size_t j = 0; j < f.logprobs.size(); ++j) {
    const float* val = f.lp_values_out.ptr<float>() + j * f.lp_cols;
    const int32_t* id = f.lp_ids_out.ptr<int32_t>() + j * f.lp_cols;
    TokenLogprob& lp = f.out.logprobs[j];
    lp.token = id[0];
    lp.logprob = val[0];
    lp.top.clear();
    for (int c = 1; c <= f.logprobs[j].k; ++c) lp.top.emplace_back(id[c], val[c]);
  }
  if (f.want_logits) {
    KF_CHECK(&f == last_launched_, "executor: logits of a step can only be collected before the next launch");
    const int64_t vocab = model_.config().vocab_size;
    int n_phys = 0;
    for (int p : f.logits_phys) n_phys = std::max(n_phys, p + 1);
    std::vector<float> phys(static_cast<size_t>(n_phys) * vocab);
    if (n_phys > 0) be_.download(phys.data(), logits_.view().rows(0, n_phys));
    f.out.logits.resize(f.logits_phys.size() * vocab);
    for (size_t j = 0; j < f.logits_phys.size(); ++j)
      std::copy_n(phys.data() + static_cast<size_t>(f.logits_phys[j]) * vocab, vocab,
                  f.out.logits.data() + j * vocab);
  }
  return f.out;
}

void StepExecutor::fill_synthetic(uint64_t seed) {
  const ModelConfig& mc = model_.config();
  const int64_t P = cfg_.page_size, pages = int64_t(cfg_.kv_pages) + 1;
  for (int l = 0; l < mc.n_layers; ++l) {
    be_.fill_uniform(kv_layers_[l].k, seed + 2 * l, -1.f, 1.f);
    be_.fill_uniform(kv_layers_[l].v, seed + 2 * l + 1, -1.f, 1.f);
  }
  // Rewriting the last slot of every page with a random key makes kv_write
  // compute the page's summary; staging rows are the workspace's q and attn.
  const int64_t chunk = max_rows_;
  Buffer slot_buf(DType::I32, {chunk}, be_);  // set-up only, not the decode path
  std::vector<int32_t> slots(chunk);
  const int64_t kv_elems = chunk * mc.n_kv_heads * mc.head_dim;
  const Tensor kstage = ws_.q.view().reshape({ws_.q.view().numel()}).rows(0, kv_elems);
  const Tensor vstage = ws_.attn.view().reshape({ws_.attn.view().numel()}).rows(0, kv_elems);
  for (int64_t b = 0; b < pages; b += chunk) {
    const int64_t n = std::min(chunk, pages - b);
    for (int64_t i = 0; i < n; ++i) slots[i] = static_cast<int32_t>((b + i) * P + P - 1);
    const Tensor sl = slot_buf.view().rows(0, n);
    be_.upload(sl, slots.data());
    const Tensor k = kstage.rows(0, n * mc.n_kv_heads * mc.head_dim).reshape({n, mc.n_kv_heads, mc.head_dim});
    const Tensor v = vstage.rows(0, n * mc.n_kv_heads * mc.head_dim).reshape({n, mc.n_kv_heads, mc.head_dim});
    for (int l = 0; l < mc.n_layers; ++l) {
      const uint64_t off = seed * 1000003ull + static_cast<uint64_t>(b) * 131 + l;
      be_.fill_uniform(k, off, -1.f, 1.f);
      be_.fill_uniform(v, off + 7, -1.f, 1.f);
      be_.kv_write(kv_layers_[l], k, v, sl);
    }
    be_.synchronize();  // slots is rewritten next chunk; slot_buf is freed on return
  }
}

}  // namespace kf

#include "engine/engine.h"

#include <algorithm>
#include <cstring>

#include "attn/policy.h"
#include "util/error.h"
#include "util/philox.h"

namespace kf {

int default_kv_pages(const ModelConfig& cfg, int page_size, int64_t tokens_needed, int64_t max_bytes) {
  // K + V + summary per page, all layers (F32 on CPU; an upper bound for BF16).
  const int64_t page_bytes = static_cast<int64_t>(cfg.n_layers) * cfg.n_kv_heads * cfg.head_dim * 4 *
                             (2 * static_cast<int64_t>(page_size) + 1);
  int64_t want = (tokens_needed + page_size - 1) / page_size + 1;
  int64_t cap = std::max<int64_t>(1, max_bytes / std::max<int64_t>(1, page_bytes));
  return static_cast<int>(std::min<int64_t>({want, cap, int64_t{1} << 30}));
}

namespace {
SchedulerConfig sched_config(const EngineConfig& c) {
  SchedulerConfig s;
  s.max_step_tokens = c.max_step_tokens;
  s.max_running = c.max_running;
  // Dense decode rows compute exactly what a prefill row does, so recompute
  // may replay generated tokens in chunks; sparse policies replay row by row.
  s.chunked_replay = c.policy.kind == AttnKind::Dense;
  return s;
}
}  // namespace

Engine::Engine(const Model& model, Backend& backend, EngineConfig cfg)
    : model_(model),
      be_(backend),
      cfg_(std::move(cfg)),
      kv_(cfg_.kv_pages, cfg_.page_size),
      sched_(kv_, sched_config(cfg_)),
      pool_(model.config(), backend, cfg_.kv_pages, cfg_.page_size),
      ws_(model.config(), backend, cfg_.max_step_tokens, std::min(cfg_.max_step_tokens, cfg_.max_running)) {
  attn::check_policy(cfg_.policy);
  const int64_t T = cfg_.max_step_tokens, vocab = model.config().vocab_size;
  const int64_t max_seqs = std::min(cfg_.max_step_tokens, cfg_.max_running);
  const Device dev = be_.device();
  ids_ = Buffer(DType::I32, {T}, dev);
  pos_ = Buffer(DType::I32, {T}, dev);
  slots_ = Buffer(DType::I32, {T}, dev);
  rows_ = Buffer(DType::I32, {max_seqs}, dev);
  q_start_ = Buffer(DType::I32, {max_seqs + 1}, dev);
  ctx_len_ = Buffer(DType::I32, {max_seqs}, dev);
  logits_ = Buffer(be_.act_dtype(), {max_seqs, vocab}, dev);
  stats_.kv_pages = cfg_.kv_pages;
  stats_.page_size = cfg_.page_size;
}

Engine::~Engine() = default;

int64_t Engine::submit(Request r) {
  KF_CHECK(!r.prompt.empty(), "generate: the prompt is empty");
  KF_CHECK(r.n >= 1, "generate: -n must be >= 1 (got {})", r.n);
  KF_CHECK(r.max_tokens >= 1, "generate: --max-tokens must be >= 1 (got {})", r.max_tokens);
  r.sampling.validate();
  KF_CHECK(r.stop_strings.empty() || cfg_.token_bytes, "generate: stop strings need a tokenizer");
  const int vocab = model_.config().vocab_size;
  for (int t : r.prompt) KF_CHECK(t >= 0 && t < vocab, "generate: prompt token {} is outside the vocabulary ({})", t, vocab);
  const int64_t id = next_request_++;
  if (r.rng_key < 0) r.rng_key = id;
  ReqState st;
  st.samples.resize(r.n);
  st.text.resize(r.n);
  st.first_seq = next_seq_;
  st.arrival = next_arrival_;
  st.remaining = r.n;
  next_seq_ += r.n;  // sample i gets sequence id first_seq + i
  next_arrival_ += r.n;
  Sequence s;
  s.id = st.first_seq;
  s.request = id;
  s.sample = 0;
  s.arrival = st.arrival;
  s.prompt = r.prompt;
  s.fork_children = r.n - 1;
  st.req = std::move(r);
  reqs_.emplace(id, std::move(st));
  sched_.add(std::move(s));
  return id;
}

const std::vector<SampleResult>& Engine::result(int64_t request) const {
  auto it = reqs_.find(request);
  KF_CHECK(it != reqs_.end(), "engine: no request {}", request);
  return it->second.samples;
}

void Engine::run() {
  while (step()) {
  }
}

void Engine::finish(Sequence& s, StopReason why) {
  ReqState& st = reqs_.at(s.request);
  sched_.finish(s.id, why);
  SampleResult& out = st.samples[s.sample];
  out.stop = why;
  out.preemptions = s.preemptions;
  --st.remaining;
  if (st.req.on_done) st.req.on_done(s.request, s.sample, why);
}

void Engine::record_failure(int64_t seq_id) {
  Sequence& s = sched_.seq(seq_id);
  ReqState& st = reqs_.at(s.request);
  // A Best-of-N prompt that never fits fails every sample of its request.
  int first = s.sample, last = s.fork_children > 0 ? s.sample + s.fork_children : s.sample;
  for (int i = first; i <= last; ++i) {
    SampleResult& out = st.samples[i];
    out.tokens = s.generated;
    out.stop = s.stop;
    out.error = s.error;
    out.preemptions = s.preemptions;
    --st.remaining;
    if (st.req.on_done) st.req.on_done(s.request, i, s.stop);
  }
}

void Engine::accept(Sequence& s, int token) {
  ReqState& st = reqs_.at(s.request);
  const Request& r = st.req;
  const auto& eos = model_.config().eos_token_ids;
  SampleResult& out = st.samples[s.sample];
  if ((!r.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) ||
      std::find(r.stop_tokens.begin(), r.stop_tokens.end(), token) != r.stop_tokens.end()) {
    finish(s, StopReason::Eos);
    return;
  }
  s.generated.push_back(token);
  out.tokens.push_back(token);
  ++stats_.generated_tokens;
  if (r.on_token) r.on_token(s.request, s.sample, token);
  if (!r.stop_strings.empty()) {
    std::string& text = st.text[s.sample];
    size_t before = text.size();
    text += cfg_.token_bytes(token);
    for (const std::string& stop : r.stop_strings) {
      size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
      if (!stop.empty() && text.find(stop, from) != std::string::npos) {
        finish(s, StopReason::Stop);
        return;
      }
    }
  }
  if (static_cast<int>(s.generated.size()) >= r.max_tokens) {
    finish(s, StopReason::Length);
  } else if (is_repetition_loop(s.generated, cfg_.repetition)) {
    finish(s, StopReason::Repetition);
  }
}

bool Engine::step() {
  if (!started_) {
    start_ = std::chrono::steady_clock::now();
    started_ = true;
  }
  if (sched_.done()) return false;
  const auto t0 = std::chrono::steady_clock::now();
  StepPlan plan = sched_.schedule();
  for (int64_t id : plan.failed) record_failure(id);
  if (plan.seqs.empty()) {
    KF_CHECK(sched_.done(), "engine: scheduler made no progress ({} waiting, {} running, {} of {} pages free)",
             sched_.n_waiting(), sched_.n_running(), kv_.pool().free_count(), kv_.pool().capacity());
    return false;
  }
  const ModelConfig& mc = model_.config();
  const int P = cfg_.page_size, Hkv = mc.n_kv_heads, vocab = mc.vocab_size;
  const int ns = static_cast<int>(plan.seqs.size()), n = plan.rows;

  // Copy-on-write copies first, on every layer.
  if (!plan.copies.empty()) {
    const int nc = static_cast<int>(plan.copies.size());
    h_src_.resize(nc);
    h_dst_.resize(nc);
    for (int i = 0; i < nc; ++i) {
      h_src_[i] = plan.copies[i].src;
      h_dst_[i] = plan.copies[i].dst;
    }
    if (copy_src_.empty() || copy_src_.view().numel() < nc) {
      copy_src_ = Buffer(DType::I32, {std::max<int64_t>(nc, 64)}, be_.device());
      copy_dst_ = Buffer(DType::I32, {std::max<int64_t>(nc, 64)}, be_.device());
    }
    Tensor src = copy_src_.view().rows(0, nc), dst = copy_dst_.view().rows(0, nc);
    be_.upload(src, h_src_.data());
    be_.upload(dst, h_dst_.data());
    for (const KvLayer& layer : pool_.layers) be_.kv_copy_pages(layer, src, dst);
  }

  // Host index arrays for the step.
  int max_pages = 1;
  for (const StepSeq& ss : plan.seqs) max_pages = std::max(max_pages, static_cast<int>(kv_.pages(ss.id).size()));
  h_ids_.resize(n);
  h_pos_.resize(n);
  h_rows_.clear();
  h_q_start_.assign(1, 0);
  h_ctx_.resize(ns);
  h_table_.assign(static_cast<size_t>(ns) * max_pages, -1);
  int row = 0;
  int64_t decode_rows = 0;
  for (int i = 0; i < ns; ++i) {
    const StepSeq& ss = plan.seqs[i];
    const Sequence& s = sched_.seq(ss.id);
    for (int r = 0; r < ss.n; ++r, ++row) {
      h_ids_[row] = s.token_at(ss.start + r);
      h_pos_[row] = ss.start + r;
    }
    if (ss.sample) h_rows_.push_back(row - 1);
    if (ss.n == 1) ++decode_rows;
    h_q_start_.push_back(row);
    h_ctx_[i] = ss.start + ss.n;
    const auto& pages = kv_.pages(ss.id);
    std::copy(pages.begin(), pages.end(), h_table_.begin() + static_cast<size_t>(i) * max_pages);
  }
  const int m = static_cast<int>(h_rows_.size());
  if (table_.empty() || table_.view().numel() < static_cast<int64_t>(ns) * max_pages) {
    int64_t cols = std::max<int64_t>(max_pages * 2, 64);
    table_ = Buffer(DType::I32, {std::min<int64_t>(ws_.max_tokens, cfg_.max_running) * cols}, be_.device());
    sel_pages_.clear();
    sel_counts_.clear();
    const int64_t max_seqs = std::min<int64_t>(ws_.max_tokens, cfg_.max_running);
    for (int l = 0; l < mc.n_layers; ++l) {
      sel_pages_.emplace_back(DType::I32, std::initializer_list<int64_t>{max_seqs * Hkv * cols}, be_.device());
      sel_counts_.emplace_back(DType::I32, std::initializer_list<int64_t>{max_seqs * Hkv}, be_.device());
    }
  }
  const Tensor ids = ids_.view().rows(0, n), pos = pos_.view().rows(0, n), slots = slots_.view().rows(0, n);
  const Tensor rows = rows_.view().rows(0, m), q_start = q_start_.view().rows(0, ns + 1),
               ctx_len = ctx_len_.view().rows(0, ns);
  const Tensor table(table_.view().data, DType::I32, {ns, max_pages}, be_.device());
  be_.upload(ids, h_ids_.data());
  be_.upload(pos, h_pos_.data());
  be_.upload(slots, plan.slots.data());
  if (m) be_.upload(rows, h_rows_.data());
  be_.upload(q_start, h_q_start_.data());
  be_.upload(ctx_len, h_ctx_.data());
  be_.upload(table, h_table_.data());

  AttnBatch batch;
  batch.n_seqs = ns;
  batch.max_pages = max_pages;
  batch.q_start = q_start;
  batch.ctx_len = ctx_len;
  batch.page_table = table;
  std::vector<PageSelection>& sels = sels_;
  sels.clear();
  for (int l = 0; l < mc.n_layers; ++l)
    sels.push_back(PageSelection{Tensor(sel_pages_[l].view().data, DType::I32, {ns, Hkv, max_pages}, be_.device()),
                                 Tensor(sel_counts_[l].view().data, DType::I32, {ns, Hkv}, be_.device())});
  StepInput in;
  in.token_ids = ids;
  in.positions = pos;
  in.kv_slots = slots;
  in.batch = &batch;
  in.policy = cfg_.policy;
  in.logit_rows = rows;
  in.selections = sels;
  const Tensor logits = logits_.view().rows(0, m);
  model_.forward(be_, ws_, pool_.layers, in, logits);

  // Logits to host F32.
  h_logits_.resize(static_cast<size_t>(m) * vocab);
  if (m) {
    if (logits.dtype == DType::F32) {
      be_.download(h_logits_.data(), logits);
    } else {
      h_logits_bf16_.resize(h_logits_.size());
      be_.download(h_logits_bf16_.data(), logits);
      for (size_t i = 0; i < h_logits_.size(); ++i) h_logits_[i] = bf16_to_f32(h_logits_bf16_[i]);
    }
  }

  // Decode-row reads, from each layer's page selection.
  if (decode_rows > 0) {
    const int elem = static_cast<int>(dtype_bytes(be_.act_dtype(), 1));
    const auto& dense = model_.dense_layers();
    h_sel_.resize(static_cast<size_t>(ns) * Hkv);
    for (int l = 0; l < mc.n_layers; ++l) {
      be_.download(h_sel_.data(), sels[l].counts);
      const bool scored = cfg_.policy.kind == AttnKind::BlockTopK &&
                          std::find(dense.begin(), dense.end(), l) == dense.end();
      for (int i = 0; i < ns; ++i) {
        if (plan.seqs[i].n != 1) continue;
        const int ctx = h_ctx_[i];
        for (int h = 0; h < Hkv; ++h) {
          const int c = h_sel_[static_cast<size_t>(i) * Hkv + h];
          stats_.decode_page_reads += c;
          stats_.kv_bytes_read += static_cast<int64_t>(c) * P * mc.head_dim * elem * 2;
          if (scored) stats_.kv_bytes_read += static_cast<int64_t>(attn::candidates(ctx, P, cfg_.policy.local_pages).size()) * mc.head_dim * 4;
        }
        stats_.decode_head_rows += Hkv;
      }
    }
  }

  // Sample, in plan order; Best-of-N parents fork their siblings first.
  int logit_row = 0;
  for (const StepSeq& ss : plan.seqs) {
    if (!ss.sample) continue;
    const float* lrow = h_logits_.data() + static_cast<size_t>(logit_row++) * vocab;
    std::vector<int64_t>& group = group_;
    group.assign(1, ss.id);
    Sequence& parent = sched_.seq(ss.id);
    if (parent.fork_children > 0) {
      const ReqState& st = reqs_.at(parent.request);
      for (int c = 1; c <= parent.fork_children; ++c) {
        Sequence child;
        child.id = st.first_seq + parent.sample + c;
        child.request = parent.request;
        child.sample = parent.sample + c;
        child.arrival = st.arrival + child.sample;
        sched_.fork(ss.id, std::move(child));
        group.push_back(st.first_seq + parent.sample + c);
      }
      sched_.seq(ss.id).fork_children = 0;
    }
    for (int64_t id : group) {
      Sequence& s = sched_.seq(id);
      const Request& r = reqs_.at(s.request).req;
      row_logits_.assign(lrow, lrow + vocab);
      context_.clear();
      if (r.sampling.repetition_penalty != 1.f) {  // HF applies it over prompt + generated
        context_.assign(s.prompt.begin(), s.prompt.end());
        context_.insert(context_.end(), s.generated.begin(), s.generated.end());
      }
      const double u = philox_uniform(r.sampling.seed, static_cast<uint64_t>(r.rng_key), static_cast<uint32_t>(s.sample),
                                      static_cast<uint32_t>(s.generated.size()));
      const int token = sampler_.sample(row_logits_, r.sampling, context_, s.generated, u);
      accept(s, token);
    }
  }

  // Stats.
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t prefill_rows = n - decode_rows;
  stats_.steps += 1;
  stats_.prefill_tokens += prefill_rows;
  stats_.decode_tokens += decode_rows;
  stats_.prefill_seconds += dt * static_cast<double>(prefill_rows) / n;
  stats_.decode_seconds += dt * static_cast<double>(decode_rows) / n;
  stats_.preemptions = sched_.preemptions();
  stats_.kv_pages_peak = kv_.pool().peak_used();
  stats_.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return !sched_.done();
}

}  // namespace kf

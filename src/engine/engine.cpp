#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "attn/policy.h"
#include "util/error.h"
#include "util/philox.h"

namespace kf {

int default_kv_pages(const ModelConfig& cfg, int page_size, int64_t tokens_needed, int64_t max_bytes,
                     int elem_bytes) {
  // K + V + summary per page, all layers.
  const int64_t page_bytes = static_cast<int64_t>(cfg.n_layers) * cfg.n_kv_heads * cfg.head_dim * elem_bytes *
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

// The Philox uniform of a sample's next token, as the float both sampling
// paths use (rounded down below 1).
float draw(const Request& r, const Sequence& s) {
  const float u = static_cast<float>(philox_uniform(r.sampling.seed, static_cast<uint64_t>(r.rng_key),
                                                    static_cast<uint32_t>(s.sample),
                                                    static_cast<uint32_t>(s.generated.size())));
  return u < 1.f ? u : std::nextafter(1.f, 0.f);
}

// Decode batches are padded up to these sizes (and page tables to a power of
// two columns) so a graph backend records a few step shapes, not one per size.
int batch_bucket(int n, int cap) {
  const int b = n <= 2 ? n : n <= 4 ? 4 : n <= 64 ? (n + 7) / 8 * 8 : (n + 31) / 32 * 32;
  return std::min(b, cap);
}
int pages_bucket(int n) {
  int b = 16;
  while (b < n) b *= 2;
  return b;
}
}  // namespace

Engine::Engine(const Model& model, Backend& backend, EngineConfig cfg)
    : model_(model),
      be_(backend),
      cfg_(std::move(cfg)),
      kv_(cfg_.kv_pages, cfg_.page_size),
      sched_(kv_, sched_config(cfg_)),
      pool_(model.config(), backend, cfg_.kv_pages + 1, cfg_.page_size),  // + the padding rows' page
      ws_(model.config(), backend, cfg_.max_step_tokens, std::min(cfg_.max_step_tokens, cfg_.max_running)),
      idx_(backend, cfg_.max_step_tokens, std::min(cfg_.max_step_tokens, cfg_.max_running),
           int64_t{64} * std::min(cfg_.max_step_tokens, cfg_.max_running)) {
  attn::check_policy(cfg_.policy);
  const int64_t vocab = model.config().vocab_size;
  const int64_t max_seqs = std::min(cfg_.max_step_tokens, cfg_.max_running);
  const Device dev = be_.device();
  logits_ = Buffer(be_.act_dtype(), {max_seqs, vocab}, dev);
  s_temp_ = Buffer(DType::F32, {max_seqs}, dev);
  s_topk_ = Buffer(DType::I32, {max_seqs}, dev);
  s_topp_ = Buffer(DType::F32, {max_seqs}, dev);
  s_minp_ = Buffer(DType::F32, {max_seqs}, dev);
  s_u_ = Buffer(DType::F32, {max_seqs}, dev);
  tokens_ = Buffer(DType::I32, {max_seqs}, dev);
  max_seqs_ = static_cast<int>(max_seqs);
  pad_page_ = cfg_.kv_pages;
  use_graphs_ = cfg_.graphs == EngineConfig::Graphs::Always ||
                (cfg_.graphs == EngineConfig::Graphs::Auto && be_.device() == Device::CUDA);
  stats_.kv_pages = cfg_.kv_pages;
  stats_.page_size = cfg_.page_size;
}

// Recorded graphs hold this engine's buffers: none may outlive it.
Engine::~Engine() { be_.clear_graphs(); }

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

  // Host index arrays for the step. A decode-only step on a graph backend is
  // padded to a bucket of rows (dummy sequences of one token on the padding
  // page) and a bucket of page-table columns, and every row gets logits.
  int max_pages = 1;
  for (const StepSeq& ss : plan.seqs) max_pages = std::max(max_pages, static_cast<int>(kv_.pages(ss.id).size()));
  const bool graph = use_graphs_ && n == ns;
  const int ns_run = graph ? batch_bucket(ns, max_seqs_) : ns;
  const int stride = graph ? pages_bucket(max_pages) : max_pages;
  StepIndices& x = idx_;
  x.ids.clear();
  x.pos.clear();
  x.slots.assign(plan.slots.begin(), plan.slots.end());
  x.logit_rows.clear();
  x.q_start.assign(1, 0);
  x.ctx.clear();
  x.table.assign(static_cast<size_t>(ns_run) * stride, -1);
  logit_row_.assign(ns, -1);
  int64_t decode_rows = 0;
  for (int i = 0; i < ns; ++i) {
    const StepSeq& ss = plan.seqs[i];
    const Sequence& s = sched_.seq(ss.id);
    for (int r = 0; r < ss.n; ++r) {
      x.ids.push_back(s.token_at(ss.start + r));
      x.pos.push_back(ss.start + r);
    }
    const int last = static_cast<int>(x.ids.size()) - 1;
    if (graph) {
      x.logit_rows.push_back(last);
      if (ss.sample) logit_row_[i] = i;
    } else if (ss.sample) {
      logit_row_[i] = static_cast<int>(x.logit_rows.size());
      x.logit_rows.push_back(last);
    }
    if (ss.n == 1) ++decode_rows;
    x.q_start.push_back(last + 1);
    x.ctx.push_back(ss.start + ss.n);
    const auto& pages = kv_.pages(ss.id);
    std::copy(pages.begin(), pages.end(), x.table.begin() + static_cast<size_t>(i) * stride);
  }
  for (int i = ns; i < ns_run; ++i) {  // padding: token 0 at position 0 of the padding page
    x.logit_rows.push_back(static_cast<int>(x.ids.size()));
    x.ids.push_back(0);
    x.pos.push_back(0);
    x.slots.push_back(pad_page_ * P);
    x.q_start.push_back(static_cast<int>(x.ids.size()));
    x.ctx.push_back(1);
    x.table[static_cast<size_t>(i) * stride] = pad_page_;
  }
  const int m = static_cast<int>(x.logit_rows.size());
  const bool want_sel = cfg_.policy.kind == AttnKind::TopK;  // page policies' reads are known on the host
  const int64_t cols = std::max<int64_t>(stride * 2, 64);
  const bool table_moved = x.reserve_table(static_cast<int64_t>(ns_run) * stride);
  if (table_moved || (want_sel && (sel_pages_.empty() ||
                                   sel_pages_[0].view().numel() < static_cast<int64_t>(ns_run) * Hkv * stride))) {
    be_.clear_graphs();  // the recordings point at the buffers replaced here
    sel_pages_.clear();
    sel_counts_.clear();
    if (want_sel)
      for (int l = 0; l < mc.n_layers; ++l) {
        sel_pages_.emplace_back(DType::I32, std::initializer_list<int64_t>{max_seqs_ * Hkv * cols}, be_.device());
        sel_counts_.emplace_back(DType::I32, std::initializer_list<int64_t>{max_seqs_ * Hkv}, be_.device());
      }
  }
  AttnBatch batch;
  StepInput in = x.upload(batch, stride);
  std::vector<PageSelection>& sels = sels_;
  sels.clear();
  if (want_sel)
    for (int l = 0; l < mc.n_layers; ++l)
      sels.push_back(PageSelection{Tensor(sel_pages_[l].view().data, DType::I32, {ns_run, Hkv, stride}, be_.device()),
                                   Tensor(sel_counts_[l].view().data, DType::I32, {ns_run, Hkv}, be_.device())});
  in.policy = cfg_.policy;
  in.selections = sels;
  const Tensor logits = logits_.view().rows(0, m);
  if (graph) {
    const uint64_t key = reinterpret_cast<uintptr_t>(this) * 0x9e3779b97f4a7c15ull ^
                         (static_cast<uint64_t>(ns_run) << 32) ^ static_cast<uint64_t>(stride);
    be_.replay(key, [&] { model_.forward(be_, ws_, pool_.layers, in, logits); });
  } else {
    model_.forward(be_, ws_, pool_.layers, in, logits);
  }

  // Sampling on the device when every sampled row can (no penalties, no
  // Best-of-N fork this step): only the tokens come back. Otherwise the
  // logits come to the host for kf::Sampler. The CPU backend keeps the host
  // path (its draw uses the full 53-bit Philox double).
  const int m_real = graph ? ns : m;  // logit rows of real sequences (padding rows come last)
  bool on_device = m_real > 0 && (cfg_.device_sampling == EngineConfig::DeviceSampling::Always ||
                                  (cfg_.device_sampling == EngineConfig::DeviceSampling::Auto &&
                                   be_.device() != Device::CPU));
  for (int i = 0; i < ns && on_device; ++i) {
    if (!plan.seqs[i].sample) continue;
    const Sequence& s = sched_.seq(plan.seqs[i].id);
    const SamplingParams& sp = reqs_.at(s.request).req.sampling;
    on_device = s.fork_children == 0 && sp.repetition_penalty == 1.f && sp.presence_penalty == 0.f;
  }
  if (on_device) {
    h_temp_.assign(m_real, 0.f);  // rows nobody samples: greedy, ignored
    h_topk_.assign(m_real, 0);
    h_topp_.assign(m_real, 1.f);
    h_minp_.assign(m_real, 0.f);
    h_u_.assign(m_real, 0.f);
    for (int i = 0; i < ns; ++i) {
      if (!plan.seqs[i].sample) continue;
      const Sequence& s = sched_.seq(plan.seqs[i].id);
      const Request& r = reqs_.at(s.request).req;
      const int j = logit_row_[i];
      h_temp_[j] = r.sampling.temperature;
      h_topk_[j] = r.sampling.top_k;
      h_topp_[j] = r.sampling.top_p;
      h_minp_[j] = r.sampling.min_p;
      h_u_[j] = draw(r, s);
    }
    SampleArgs sa;
    sa.temperature = s_temp_.view().rows(0, m_real);
    sa.top_k = s_topk_.view().rows(0, m_real);
    sa.top_p = s_topp_.view().rows(0, m_real);
    sa.min_p = s_minp_.view().rows(0, m_real);
    sa.uniform = s_u_.view().rows(0, m_real);
    be_.upload(sa.temperature, h_temp_.data());
    be_.upload(sa.top_k, h_topk_.data());
    be_.upload(sa.top_p, h_topp_.data());
    be_.upload(sa.min_p, h_minp_.data());
    be_.upload(sa.uniform, h_u_.data());
    const Tensor toks = tokens_.view().rows(0, m_real);
    be_.sample(logits.rows(0, m_real), sa, toks);
    h_tokens_.resize(m_real);
    be_.download(h_tokens_.data(), toks);
  } else if (m_real) {
    h_logits_.resize(static_cast<size_t>(m_real) * vocab);
    download_f32(be_, logits.rows(0, m_real), h_logits_.data(), h_logits_bf16_);
  }

  // What decode rows read: from the policy on the host (page policies), from
  // each layer's selection (the topk oracle).
  if (decode_rows > 0) {
    const int64_t elem = static_cast<int64_t>(dtype_bytes(be_.act_dtype(), 1)), hd = mc.head_dim;
    const auto& dense = model_.dense_layers();
    const int n_dense = static_cast<int>(dense.size());
    AttnPolicy dense_policy;
    dense_policy.kind = AttnKind::Dense;
    if (want_sel) h_sel_.resize(static_cast<size_t>(ns) * Hkv);
    for (int i = 0; i < ns; ++i) {
      if (plan.seqs[i].n != 1) continue;
      const attn::Reads rd = attn::reads_per_head(x.ctx[i], P, cfg_.policy);
      const attn::Reads rdense = attn::reads_per_head(x.ctx[i], P, dense_policy);
      const int64_t sparse_layers = mc.n_layers - n_dense;
      stats_.kv_bytes_read += Hkv * hd * elem *
                              (sparse_layers * (2 * rd.kv_tokens + rd.k_tokens + rd.summaries) +
                               n_dense * 2 * rdense.kv_tokens);
      if (!want_sel) stats_.decode_page_reads += Hkv * (sparse_layers * rd.pages + n_dense * rdense.pages);
      stats_.decode_head_rows += static_cast<int64_t>(Hkv) * mc.n_layers;
    }
    for (int l = 0; l < (want_sel ? mc.n_layers : 0); ++l) {
      be_.download(h_sel_.data(), sels[l].counts.rows(0, ns));
      for (int i = 0; i < ns; ++i)
        if (plan.seqs[i].n == 1)
          for (int h = 0; h < Hkv; ++h) stats_.decode_page_reads += h_sel_[static_cast<size_t>(i) * Hkv + h];
    }
  }

  // Sample, in plan order; Best-of-N parents fork their siblings first.
  for (int i = 0; i < ns; ++i) {
    const StepSeq& ss = plan.seqs[i];
    if (!ss.sample) continue;
    if (on_device) {
      accept(sched_.seq(ss.id), h_tokens_[logit_row_[i]]);
      continue;
    }
    const float* lrow = h_logits_.data() + static_cast<size_t>(logit_row_[i]) * vocab;
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
      const int token = sampler_.sample(row_logits_, r.sampling, context_, s.generated, draw(r, s));
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

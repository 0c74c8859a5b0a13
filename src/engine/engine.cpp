#include "engine/engine.h"

#include <algorithm>
#include <cmath>

#include "attn/policy.h"
#include "attn/summary.h"
#include "util/error.h"
#include "util/philox.h"

namespace kf {

using Clock = std::chrono::steady_clock;

int64_t kv_page_bytes(const ModelConfig& cfg, int page_size, int elem_bytes, bool i8_summaries) {
  // K + V + the key summary per page and layer, plus the page's tokens.
  const int64_t summary = attn::summary_bytes(attn::summary_kind_for(elem_bytes, i8_summaries), cfg.head_dim);
  return static_cast<int64_t>(cfg.n_layers) * cfg.n_kv_heads *
             (cfg.head_dim * elem_bytes * 2 * static_cast<int64_t>(page_size) + summary) +
         4 * static_cast<int64_t>(page_size);
}

int default_kv_pages(const ModelConfig& cfg, int page_size, int64_t tokens_needed, int64_t max_bytes,
                     int elem_bytes, bool i8_summaries) {
  const int64_t want = (tokens_needed + page_size - 1) / page_size + 1;
  const int64_t page_bytes = kv_page_bytes(cfg, page_size, elem_bytes, i8_summaries);
  const int64_t cap = std::max<int64_t>(1, max_bytes / std::max<int64_t>(1, page_bytes));
  return static_cast<int>(std::min<int64_t>({want, cap, int64_t{1} << 30}));
}

// ---- RequestStream -------------------------------------------------------------

void RequestStream::push(StreamEvent e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (e.done) ++ended_;
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
  if (on_push_) on_push_();
}

std::vector<StreamEvent> RequestStream::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  std::vector<StreamEvent> out;
  out.swap(events_);
  return out;
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ended_ >= samples_ && events_.empty();
}

void RequestStream::expect_samples(int n) {
  std::lock_guard<std::mutex> lock(mu_);
  samples_ = n;
}

// ---- Engine ----------------------------------------------------------------------

namespace {

SchedulerConfig sched_config(const EngineConfig& c) {
  SchedulerConfig s;
  s.max_step_tokens = c.max_step_tokens;
  s.max_running = c.max_seqs;
  // Dense decode rows compute exactly what a prefill row does, so recompute
  // may replay generated tokens in chunks; sequences under a sparse policy
  // (the engine's or their request's) replay row by row (Sequence::row_replay).
  s.chunked_replay = true;
  s.max_echo_rows = c.max_echo_rows;
  s.prefix_cache = c.prefix_cache;
  return s;
}

ExecutorConfig executor_config(const EngineConfig& c, const Backend& be) {
  ExecutorConfig e;
  e.page_size = c.page_size;
  e.kv_pages = c.kv_pages;
  e.max_step_tokens = c.max_step_tokens;
  e.max_seqs = std::min(c.max_seqs, c.max_step_tokens);
  e.max_logit_rows = e.max_seqs + std::max(0, c.max_echo_rows);
  e.graphs = c.graphs == EngineConfig::Mode::Always || (c.graphs == EngineConfig::Mode::Auto && be.device() != Device::CPU);
  e.policy = c.policy;
  e.dense_layers = c.dense_layers;
  e.i8_summaries = c.i8_summaries;
  return e;
}

// The Philox uniform of a sample's token number `index`, as the float both
// backends' samplers use (rounded down below 1).
float draw(const Request& r, int sample, int index) {
  const float u = static_cast<float>(philox_uniform(r.sampling.seed, static_cast<uint64_t>(r.rng_key),
                                                    static_cast<uint32_t>(sample), static_cast<uint32_t>(index)));
  return u < 1.f ? u : std::nextafter(1.f, 0.f);
}

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

Engine::Engine(const Model& model, Backend& backend, EngineConfig cfg)
    : Engine(std::vector<ExecutorRank>{ExecutorRank{&model, &backend}}, std::move(cfg)) {}

Engine::Engine(std::vector<ExecutorRank> ranks, EngineConfig cfg)
    : model_(*ranks.at(0).model),
      be_(*ranks.at(0).backend),
      cfg_(std::move(cfg)),
      kv_(cfg_.kv_pages, cfg_.page_size, cfg_.prefix_cache),
      sched_(kv_, sched_config(cfg_)),
      exec_(ranks, executor_config(cfg_, be_)) {
  for (const ExecutorRank& r : ranks) {  // tensor parallelism: each rank reads its heads' KV and its weights
    kv_heads_ += r.model->config().n_kv_heads;
    weight_bytes_ += r.model->weights().bytes_per_step();
  }
  attn::check_policy(cfg_.policy);
  KF_CHECK(cfg_.max_seqs >= 1, "--max-seqs must be >= 1 (got {})", cfg_.max_seqs);
  if (cfg_.max_model_len <= 0) cfg_.max_model_len = model_.config().max_position;
  overlap_ = cfg_.overlap == EngineConfig::Mode::Always ||
             (cfg_.overlap == EngineConfig::Mode::Auto && be_.device() != Device::CPU);
  stats_.kv_pages = cfg_.kv_pages;
  stats_.page_size = cfg_.page_size;
}

Engine::~Engine() {
  if (in_flight_) exec_.synchronize();  // its buffers go with the executor
}

void Engine::check_request(const Request& r) const {
  KF_CHECK(!r.prompt.empty(), "generate: the prompt is empty");
  KF_CHECK(r.n >= 1, "generate: -n must be >= 1 (got {})", r.n);
  KF_CHECK(r.first_sample >= 0, "generate: first_sample must be >= 0 (got {})", r.first_sample);
  KF_CHECK(r.n <= cfg_.max_seqs, "generate: -n {} exceeds the {} sequences that may run at once (--max-seqs)", r.n,
           cfg_.max_seqs);
  KF_CHECK(r.max_tokens >= 0, "generate: --max-tokens must be >= 0 (got {})", r.max_tokens);
  KF_CHECK(r.logprobs >= -1 && r.logprobs <= Backend::kMaxTopLogprobs, "generate: logprobs {} outside [0, {}]",
           r.logprobs, Backend::kMaxTopLogprobs);
  KF_CHECK(r.thinking_budget < 0 || r.think_end_token >= 0,
           "generate: a thinking budget needs the model's </think> token");
  r.sampling.validate();
  KF_CHECK(r.stop_strings.empty() || cfg_.token_bytes, "generate: stop strings need a tokenizer");
  if (r.policy) {
    attn::check_policy(*r.policy);
    ExecutorGroup::check_policy(model_.config(), *r.policy);
    KF_CHECK(r.policy->kind != AttnKind::TopK || *r.policy == cfg_.policy,
             "generate: the topk oracle policy cannot share a batch with other policies; make it the engine's --attn");
  }
  const int vocab = model_.config().vocab_size;
  for (int t : r.prompt) KF_CHECK(t >= 0 && t < vocab, "generate: prompt token {} is outside the vocabulary ({})", t, vocab);
}

int64_t Engine::submit(Request r) {
  check_request(r);
  if (r.stream) r.stream->expect_samples(r.n);
  int64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    id = next_request_++;
    submitted_.emplace_back(id, std::move(r));
  }
  queue_cv_.notify_all();
  return id;
}

void Engine::cancel(int64_t request) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    cancelled_.push_back(request);
  }
  queue_cv_.notify_all();
}

void Engine::wait_for_work(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(queue_mu_);
  queue_cv_.wait_for(lock, timeout, [&] { return !submitted_.empty() || !cancelled_.empty(); });
}

bool Engine::idle() const {
  std::lock_guard<std::mutex> lock(queue_mu_);
  return sched_.done() && !in_flight_ && submitted_.empty() && cancelled_.empty();
}

std::vector<FinishedRequest> Engine::take_finished() {
  std::vector<FinishedRequest> out;
  out.swap(finished_);
  return out;
}

const std::vector<SampleResult>& Engine::result(int64_t request) const {
  for (const FinishedRequest& f : finished_)
    if (f.id == request) return f.samples;
  fail("engine: request {} has not finished (or was taken)", request);
}

void Engine::run() {
  while (step()) {
  }
}

void Engine::add_request(int64_t id, Request r) {
  ReqState st;
  st.id = id;
  st.samples.resize(r.n);
  st.text.resize(r.n);
  st.first_seq = next_seq_;
  st.remaining = r.n;
  if (r.rng_key < 0) r.rng_key = id;
  const int prompt_len = static_cast<int>(r.prompt.size());
  st.think_closed.assign(r.n, 0);
  if (r.prompt_logprobs) st.prompt_lp.resize(prompt_len - 1);
  st.prefill_only = r.max_tokens == 0;
  if (st.prefill_only) r.max_tokens = 1;  // sampled (its logits row is the prompt's last) and dropped
  const int limit = cfg_.max_model_len;
  Sequence s;
  s.id = st.first_seq;
  s.request = id;
  s.arrival = next_arrival_;
  s.prompt = r.prompt;
  s.fork_children = r.n - 1;
  s.row_replay = !decode_rows_match_prefill(r.policy ? *r.policy : cfg_.policy);
  s.echo = r.prompt_logprobs && prompt_len > 1;
  s.max_new = limit > 0 ? std::min(r.max_tokens, limit - prompt_len) : r.max_tokens;
  next_seq_ += r.n;  // sample i gets sequence id first_seq + i
  next_arrival_ += r.n;
  st.req = std::move(r);
  auto [it, inserted] = reqs_.emplace(id, std::move(st));
  (void)inserted;
  if (limit > 0 && prompt_len >= limit) {  // fails alone; the others go on
    const std::string why = fmt::format("prompt of {} tokens leaves no room to generate within the context limit of {} "
                                        "tokens (max_position_embeddings, or --max-model-len)", prompt_len, limit);
    const int n = it->second.req.n;  // the last end_sample releases the request
    for (int i = 0; i < n; ++i) end_sample(it->second, i, nullptr, StopReason::Error, why);
    return;
  }
  sched_.add(std::move(s));
}

void Engine::intake() {
  std::deque<std::pair<int64_t, Request>> subs;
  std::vector<int64_t> cancels;
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    subs.swap(submitted_);
    cancels.swap(cancelled_);
  }
  for (auto& [id, r] : subs) add_request(id, std::move(r));
  for (int64_t id : cancels) {
    auto it = reqs_.find(id);
    if (it == reqs_.end()) continue;
    ReqState& st = it->second;
    const int n = st.req.n;
    for (int i = 0; i < n && reqs_.count(id); ++i) {
      const int64_t sid = st.first_seq + i;
      if (!sched_.has(sid)) {  // an unforked child: ends with its parent below, or already ended
        continue;
      }
      Sequence& s = sched_.seq(sid);
      if (!s.finished) end_sample(st, i, &s, StopReason::Cancelled);
    }
    // Children never forked (their parent was still in prefill) end too.
    if (reqs_.count(id))
      for (int i = 0; i < n && reqs_.count(id); ++i)
        if (st.samples[i].stop == StopReason::None) end_sample(st, i, nullptr, StopReason::Cancelled);
  }
}

// Ends sample `sample` of a request (s: its sequence, if it exists); when the
// request has no sample left it is finished: results move to finished_, its
// sequences are released.
void Engine::end_sample(ReqState& st, int sample, Sequence* s, StopReason why, const std::string& error) {
  SampleResult& out = st.samples[sample];
  if (out.stop != StopReason::None) return;
  if (s) {
    if (!s->finished) sched_.finish(s->id, why, error);
    out.preemptions = s->preemptions;
    // A parent that never forked takes its unborn children with it.
    if (s->fork_children > 0) {
      const int children = s->fork_children;
      s->fork_children = 0;
      for (int c = 1; c <= children; ++c) end_sample(st, sample + c, nullptr, why, error);
    }
  }
  out.stop = why;
  out.error = error;
  if (st.req.stream) st.req.stream->push(StreamEvent{sample, {}, {}, true, why, error});
  if (--st.remaining > 0) return;
  FinishedRequest f;
  f.id = st.id;
  f.samples = std::move(st.samples);
  f.prompt_tokens = static_cast<int>(st.req.prompt.size());
  f.prompt_logprobs = std::move(st.prompt_lp);
  f.policy = st.req.policy ? *st.req.policy : cfg_.policy;
  f.kv_bytes_read = st.kv_bytes;
  if (sched_.has(st.first_seq)) f.cached_prompt_tokens = sched_.seq(st.first_seq).prefix_cached;
  for (int i = 0; i < st.req.n; ++i) sched_.release(st.first_seq + i);
  reqs_.erase(st.id);  // st is gone from here on
  ++stats_.requests_finished;
  finished_.push_back(std::move(f));
}

void Engine::fail_sequence(int64_t seq_id) {
  Sequence& s = sched_.seq(seq_id);
  ReqState& st = reqs_.at(s.request);
  st.samples[s.sample].tokens = s.generated;
  end_sample(st, s.sample, &s, s.stop, s.error);
}

void Engine::accept(Sequence& s, int token, const TokenLogprob* lp, bool forced) {
  ReqState& st = reqs_.at(s.request);
  const Request& r = st.req;
  const auto& eos = model_.config().eos_token_ids;
  SampleResult& out = st.samples[s.sample];
  if (st.prefill_only) {  // max_tokens 0: the prompt was all the work
    end_sample(st, s.sample, &s, StopReason::Length);
    return;
  }
  if (forced) out.thinking_cut = static_cast<int>(out.tokens.size());
  if (token == r.think_end_token) st.think_closed[s.sample] = 1;
  if ((!r.ignore_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) ||
      std::find(r.stop_tokens.begin(), r.stop_tokens.end(), token) != r.stop_tokens.end()) {
    end_sample(st, s.sample, &s, StopReason::Eos);
    return;
  }
  s.generated.push_back(token);
  out.tokens.push_back(token);
  if (lp) out.logprobs.push_back(*lp);
  ++stats_.generated_tokens;
  if (r.stream) {
    StreamEvent ev{s.sample, {token}, {}, false, StopReason::None, {}};
    if (lp) ev.logprobs.push_back(*lp);
    r.stream->push(std::move(ev));
  }
  if (!r.stop_strings.empty()) {
    std::string& text = st.text[s.sample];
    const size_t before = text.size();
    text += cfg_.token_bytes(token);
    for (const std::string& stop : r.stop_strings) {
      const size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
      if (!stop.empty() && text.find(stop, from) != std::string::npos) {
        end_sample(st, s.sample, &s, StopReason::Stop);
        return;
      }
    }
  }
  if (static_cast<int64_t>(s.generated.size()) >= s.max_new) {
    end_sample(st, s.sample, &s, StopReason::Length);
  } else if (is_repetition_loop(s.generated, cfg_.repetition)) {
    end_sample(st, s.sample, &s, StopReason::Repetition);
  }
}

void Engine::Launched::reset() {
  handle = 0;
  sampled.clear();
  sampled_lp.clear();
  forced.clear();
  echo.clear();
  prefill_rows = decode_rows = 0;
  launch_s = 0;
}

Engine::Launched& Engine::launch(const StepPlan& plan) {
  const auto t0 = Clock::now();
  const ModelConfig& mc = model_.config();
  const int64_t elem = static_cast<int64_t>(dtype_bytes(be_.act_dtype(), 1));
  Launched& l = launches_[next_launch_];
  next_launch_ ^= 1;
  l.reset();
  exec_.begin();
  size_t slot = 0;
  for (const StepSeq& ss : plan.seqs) {
    Sequence& s = sched_.seq(ss.id);
    ReqState& st = reqs_.at(s.request);
    const Request& r = st.req;
    tokens_.resize(ss.n);
    for (int i = 0; i < ss.n; ++i) {
      const int pos = ss.start + i;
      tokens_[i] = pos < s.known() ? s.token_at(pos) : StepExecutor::from_previous(s.pending_row);
    }
    const AttnPolicy& policy = r.policy ? *r.policy : cfg_.policy;
    const int seq = exec_.add_seq(kv_.pages(ss.id), ss.start, tokens_,
                                  std::span<const int32_t>(plan.slots).subspan(slot, ss.n), &policy);
    slot += ss.n;
    // Echo: row p's logits score prompt token p + 1 (each position once, also across recompute).
    for (int i = 0; r.prompt_logprobs && i < ss.n; ++i) {
      const int pos = ss.start + i;
      if (pos < st.prompt_lp_asked || pos + 1 >= static_cast<int>(r.prompt.size())) continue;
      const int echo_lrow = exec_.add_logits(seq, i);
      l.echo.push_back({st.id, pos, exec_.add_logprob(echo_lrow, r.prompt[pos + 1], std::max(r.logprobs, 0))});
      st.prompt_lp_asked = pos + 1;
    }
    if (st.prompt_lp_asked + 1 >= static_cast<int>(r.prompt.size())) s.echo = false;
    if (ss.n == 1) {
      ++l.decode_rows;
      // What the row reads, from its policy (the same for every layer but the dense ones).
      const int ctx = ss.start + 1;
      const attn::Reads rd = attn::reads_per_head(ctx, cfg_.page_size, policy);
      AttnPolicy dense;
      dense.kind = AttnKind::Dense;
      const attn::Reads rdense = attn::reads_per_head(ctx, cfg_.page_size, dense);
      const int64_t n_dense = static_cast<int64_t>(cfg_.dense_layers.size()), n_sparse = mc.n_layers - n_dense;
      const attn::SummaryKind kind = attn::summary_kind_for(static_cast<int>(elem), cfg_.i8_summaries);
      const int64_t summary = attn::summary_bytes(kind, mc.head_dim);  // bytes of one (page, KV head) summary
      const int64_t bytes = kv_heads_ * (n_sparse * attn::read_bytes(rd, mc.head_dim, elem, summary) +
                                         n_dense * attn::read_bytes(rdense, mc.head_dim, elem, summary));
      stats_.kv_bytes_read += bytes;
      st.kv_bytes += bytes;
      stats_.decode_page_reads += kv_heads_ * (n_sparse * rd.pages + n_dense * rdense.pages);
      stats_.decode_head_rows += kv_heads_ * mc.n_layers;
    } else {
      l.prefill_rows += ss.n;
    }
    if (!ss.sample) continue;
    PenaltyRow pen;
    pen.repetition = r.sampling.repetition_penalty;
    pen.presence = r.sampling.presence_penalty;
    pen.frequency = r.sampling.frequency_penalty;
    pen.prompt_len = static_cast<int>(s.prompt.size());
    const int lrow = exec_.add_logits(seq, -1, &pen);
    for (int c = 0; c <= ss.children; ++c) {  // the sequence, then the siblings forked from it
      Sequence& t = c == 0 ? s : sched_.seq(ss.id + c);
      SampleRow sr;
      sr.temperature = r.sampling.temperature;
      sr.top_k = r.sampling.top_k;
      sr.top_p = r.sampling.top_p;
      sr.min_p = r.sampling.min_p;
      const int index = static_cast<int>(t.generated.size()) + t.pending - 1;  // of the token this row samples
      sr.uniform = draw(r, r.first_sample + t.sample, index);
      const bool force = r.thinking_budget >= 0 && index == r.thinking_budget && !st.think_closed[t.sample];
      if (force) sr.forced = r.think_end_token;
      t.pending_row = exec_.add_sample(lrow, sr);
      l.sampled.push_back(t.id);
      l.forced.push_back(force ? 1 : 0);
      l.sampled_lp.push_back(r.logprobs >= 0 && !st.prefill_only
                                 ? exec_.add_logprob(lrow, StepExecutor::sampled_target(t.pending_row), r.logprobs)
                                 : -1);
    }
  }
  for (const PageCopy& c : plan.copies) exec_.add_copy(c.src, c.dst);
  l.handle = exec_.launch();
  l.launch_s = since(t0);
  stats_.host_launch_s += l.launch_s;
  stats_.weight_bytes_read += weight_bytes_;
  return l;
}

void Engine::collect(const Launched& l) {
  const auto t0 = Clock::now();
  const StepOutput& out = exec_.collect(l.handle);
  const auto t1 = Clock::now();
  stats_.host_wait_s += std::chrono::duration<double>(t1 - t0).count();
  for (const Launched::Echo& e : l.echo) {  // before the samples: a prefill-only request ends with its last one
    auto it = reqs_.find(e.request);
    if (it != reqs_.end()) it->second.prompt_lp[e.pos] = out.logprobs[e.entry];
  }
  for (size_t k = 0; k < l.sampled.size(); ++k) {
    if (!sched_.has(l.sampled[k])) continue;  // its request ended and was released
    Sequence& s = sched_.seq(l.sampled[k]);
    --s.pending;
    if (s.finished) continue;  // ended (stopped, cancelled) after this step was launched
    const int e = l.sampled_lp[k];
    accept(s, out.tokens[k], e >= 0 ? &out.logprobs[e] : nullptr, l.forced[k] != 0);
  }
  stats_.host_postprocess_s += since(t1);
  stats_.device_s += out.device_ms / 1e3;
  stats_.graph_steps += out.graph ? 1 : 0;
}

EngineStats EngineStats::since(const EngineStats& before) const {
  EngineStats d = *this;
  d.steps -= before.steps;
  d.graph_steps -= before.graph_steps;
  d.prefill_tokens -= before.prefill_tokens;
  d.decode_tokens -= before.decode_tokens;
  d.generated_tokens -= before.generated_tokens;
  d.requests_finished -= before.requests_finished;
  d.prefill_seconds -= before.prefill_seconds;
  d.decode_seconds -= before.decode_seconds;
  d.wall_seconds -= before.wall_seconds;
  d.preemptions -= before.preemptions;
  d.prefix_cached_rows -= before.prefix_cached_rows;
  d.prefix_cache_evictions -= before.prefix_cache_evictions;
  d.decode_page_reads -= before.decode_page_reads;
  d.decode_head_rows -= before.decode_head_rows;
  d.kv_bytes_read -= before.kv_bytes_read;
  d.weight_bytes_read -= before.weight_bytes_read;
  d.host_schedule_s -= before.host_schedule_s;
  d.host_launch_s -= before.host_launch_s;
  d.host_wait_s -= before.host_wait_s;
  d.host_postprocess_s -= before.host_postprocess_s;
  d.device_s -= before.device_s;
  return d;
}

bool Engine::step() {
  if (!started_) {
    start_ = Clock::now();
    started_ = true;
  }
  const auto t0 = Clock::now();
  intake();
  if (sched_.done() && !in_flight_) {
    stats_.wall_seconds = since(start_);
    return !idle();
  }
  const StepPlan& plan = sched_.schedule();
  for (int64_t id : plan.failed) fail_sequence(id);
  stats_.host_schedule_s += since(t0);
  Launched* launched = plan.seqs.empty() ? nullptr : &launch(plan);
  const bool was_in_flight = in_flight_ != nullptr;
  if (in_flight_) {  // overlap: step t-1 is collected while step t runs
    collect(*in_flight_);
    in_flight_ = nullptr;
  }
  if (launched) {
    if (overlap_) in_flight_ = launched;
    else collect(*launched);
  } else if (!was_in_flight) {
    KF_CHECK(sched_.done() || !plan.failed.empty(),
             "engine: scheduler made no progress ({} waiting, {} running, {} of {} pages free)", sched_.n_waiting(),
             sched_.n_running(), kv_.free_pages(), kv_.pool().capacity());
  }
  // Stats: a step's time is split between its prefill and decode rows.
  const double dt = since(t0);
  const int64_t rows = plan.rows;
  int64_t decode_rows = 0;
  for (const StepSeq& ss : plan.seqs) decode_rows += ss.n == 1 ? 1 : 0;
  if (rows > 0) {
    stats_.steps += 1;
    stats_.prefill_tokens += rows - decode_rows;
    stats_.decode_tokens += decode_rows;
    stats_.prefill_seconds += dt * static_cast<double>(rows - decode_rows) / rows;
    stats_.decode_seconds += dt * static_cast<double>(decode_rows) / rows;
  }
  stats_.preemptions = sched_.preemptions();
  stats_.prefix_cached_rows = sched_.prefix_cached_rows();
  stats_.prefix_cache_evictions = kv_.evictions();
  stats_.kv_pages_peak = kv_.peak_used();
  stats_.running_peak = std::max(stats_.running_peak, sched_.n_running());
  stats_.wall_seconds = since(start_);
  return !idle();
}

}  // namespace kf

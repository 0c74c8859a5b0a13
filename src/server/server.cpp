#include "server/server.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "cost/presets.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace kf::server {

namespace {

using json = nlohmann::json;

Reply json_reply(int status, const json& body) {
  Reply r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

Reply error_reply(int status, const std::string& message, const std::string& param = {}, const std::string& type = {}) {
  Reply r;
  r.status = status;
  r.body = error_body(status, message, type, param);
  if (status == 429 || status == 503) r.headers.emplace_back("Retry-After", "1");
  return r;
}

}  // namespace

Server::Server(std::vector<dist::Replica>& replicas, const ModelConfig& whole, const Tokenizer* tok, EngineConfig cfg,
               ServerOptions opt)
    : tok_(tok), opt_(std::move(opt)) {
  const std::optional<double> intensity = cost::hardware_intensity(opt_.hardware);
  KF_CHECK(intensity.has_value(), "--hardware '{}': not a known preset (b200, h200, h100)", opt_.hardware);
  KF_CHECK(opt_.max_waiting >= 0, "--max-waiting must be >= 0 (got {})", opt_.max_waiting);
  set_ = std::make_unique<dist::ReplicaSet>(replicas, cfg);
  const EngineConfig& c = set_->config();
  ctx_.tok = tok;
  ctx_.model = &whole;
  ctx_.model_name = opt_.model_name;
  ctx_.default_policy = c.policy;
  ctx_.page_size = c.page_size;
  ctx_.i8_summaries = c.i8_summaries;
  ctx_.intensity = *intensity;
  ctx_.hardware = opt_.hardware;
  limits_.vocab = whole.vocab_size;
  limits_.max_model_len = c.max_model_len;
  limits_.max_seqs = c.max_seqs;
  limits_.kv_tokens = static_cast<int64_t>(c.kv_pages) * c.page_size;
  limits_.think_end_token = tok ? tok->token_id("</think>") : -1;
}

Server::~Server() { stop(); }

void Server::start() {
  KF_CHECK(!thread_.joinable(), "server: already started");
  thread_ = std::thread([this] { loop(); });
}

void Server::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();  // the loop wakes every 50 ms
}

// The loop thread: hands finished requests to their jobs and publishes the
// replicas' state for /metrics. The replicas step in their own threads.
void Server::loop() {
  while (!stop_) {
    std::vector<FinishedRequest> fin;
    try {
      fin = set_->wait_finished(std::chrono::milliseconds(50));
    } catch (const std::exception& e) {
      // A replica failed (a bug or a device fault): the set is stopped. Jobs in
      // flight end with the error; new requests get 503.
      const std::string error = fmt::format("engine failed: {}", e.what());
      spdlog::error("kinfer serve: {}", error);
      broken_ = true;
      std::vector<std::pair<std::shared_ptr<Job>, int64_t>> left;
      {
        std::lock_guard<std::mutex> lock(jobs_mu_);
        for (auto& [id, job] : by_engine_id_) left.emplace_back(job, id);
        by_engine_id_.clear();
      }
      for (auto& [job, id] : left) {
        FinishedRequest f;
        f.id = id;
        f.samples.resize(job->samples_per_request());
        for (SampleResult& s : f.samples) {
          s.stop = StopReason::Error;
          s.error = error;
        }
        job->finish(std::move(f));
      }
      return;
    }
    std::vector<std::pair<std::shared_ptr<Job>, FinishedRequest>> done;
    {
      std::lock_guard<std::mutex> lock(jobs_mu_);
      for (FinishedRequest& f : fin) {
        auto it = by_engine_id_.find(f.id);
        if (it == by_engine_id_.end()) continue;
        done.emplace_back(it->second, std::move(f));
        by_engine_id_.erase(it);
      }
    }
    for (auto& [job, f] : done) job->finish(std::move(f));
    int64_t running = 0, waiting = 0, kv_used = 0, kv_cached = 0, prefix_routed = 0;
    const std::vector<dist::ReplicaStats> replicas = set_->replica_stats();  // one copy under the set's lock
    for (const dist::ReplicaStats& r : replicas) {
      running += r.running;
      waiting += r.waiting;
      kv_used += r.kv_pages_used;
      kv_cached += r.kv_pages_cached;
      prefix_routed += r.prefix_routed;
    }
    const EngineStats s = dist::merge_stats(replicas);
    running_ = running;
    waiting_seqs_ = waiting;
    kv_used_ = kv_used;
    kv_cached_ = kv_cached;
    prefix_routed_ = prefix_routed;
    std::lock_guard<std::mutex> lock(metrics_mu_);
    engine_ = s;
  }
}

int64_t Server::jobs_in_flight() const {
  std::lock_guard<std::mutex> lock(jobs_mu_);
  return static_cast<int64_t>(by_engine_id_.size());
}

int Server::drain(std::chrono::milliseconds timeout) {
  draining_ = true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (jobs_in_flight() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::vector<std::shared_ptr<Job>> left;
  {
    std::lock_guard<std::mutex> lock(jobs_mu_);
    for (auto& [id, job] : by_engine_id_)
      if (std::find(left.begin(), left.end(), job) == left.end()) left.push_back(job);
  }
  for (const std::shared_ptr<Job>& job : left) job->cancel();
  const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (jobs_in_flight() > 0 && std::chrono::steady_clock::now() < grace)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return static_cast<int>(left.size());
}

void Server::count(int status) {
  std::lock_guard<std::mutex> lock(metrics_mu_);
  ++requests_by_status_[status];
}

void Server::job_done(const JobTotals& t) {
  std::lock_guard<std::mutex> lock(metrics_mu_);
  ++requests_by_status_[t.status];
  prompt_tokens_ += t.prompt_tokens;
  generated_tokens_ += t.completion_tokens;
  kv_bytes_read_ += t.kv_bytes_read;
  efflops_ += t.efflops;
}

std::string Server::metrics() const {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, const std::string& lines) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}", name, help, name, type, lines);
  };
  auto line = [](const char* name, auto v) { return fmt::format("{} {}\n", name, v); };
  std::string by_status;
  {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    for (const auto& [status, n] : requests_by_status_)
      by_status += fmt::format("kinfer_requests_total{{status=\"{}\"}} {}\n", status, n);
    metric("kinfer_requests_total", "counter",
           "completion and chat requests by HTTP status (499: the client went away first)", by_status);
    metric("kinfer_prompt_tokens_total", "counter", "prompt tokens of finished requests",
           line("kinfer_prompt_tokens_total", prompt_tokens_));
    metric("kinfer_generation_tokens_total", "counter", "tokens generated for finished requests",
           line("kinfer_generation_tokens_total", generated_tokens_));
    metric("kinfer_efflops_total", "counter", "eFLOPs served (Kinetics cost model, usage.efflops summed)",
           line("kinfer_efflops_total", efflops_));
    metric("kinfer_kv_bytes_read_total", "counter", "KV cache bytes read by decode steps of finished requests",
           line("kinfer_kv_bytes_read_total", kv_bytes_read_));
    const EngineStats& e = engine_;
    metric("kinfer_preemptions_total", "counter", "sequences preempted for KV pages",
           line("kinfer_preemptions_total", e.preemptions));
    metric("kinfer_engine_steps_total", "counter", "engine steps", line("kinfer_engine_steps_total", e.steps));
    metric("kinfer_prefix_cache_rows_total", "counter",
           "prompt rows whose KV pages came from the prefix cache (--prefix-cache), not computed",
           line("kinfer_prefix_cache_rows_total", e.prefix_cached_rows));
    metric("kinfer_prefix_routed_requests_total", "counter",
           "requests a replica took because it had taken their prompt's first pages before (--prefix-cache "
           "with several replicas)", line("kinfer_prefix_routed_requests_total", prefix_routed_.load()));
    metric("kinfer_prefix_cache_evictions_total", "counter",
           "cached prefix pages taken back, least recently used first, when no KV page was free",
           line("kinfer_prefix_cache_evictions_total", e.prefix_cache_evictions));
    metric("kinfer_engine_rows_total", "counter", "rows the engine's steps computed: a sequence's one new row is "
           "decode, several (a prompt, recomputed rows) prefill", fmt::format("kinfer_engine_rows_total{{kind=\"prefill\"}} {}\n"
                                           "kinfer_engine_rows_total{{kind=\"decode\"}} {}\n",
                                           e.prefill_tokens, e.decode_tokens));
    // Where a step's time goes: the host's parts of the step loop (they overlap the device's work
    // of the step before) and the steps' device time (0 on the CPU); the slowest replica's.
    std::string parts;
    for (const auto& [part, seconds] : {std::pair{"schedule", e.host_schedule_s}, {"stage_and_launch", e.host_launch_s},
                                        {"postprocess", e.host_postprocess_s}, {"wait_for_device", e.host_wait_s},
                                        {"device", e.device_s}})
      parts += fmt::format("kinfer_engine_seconds_total{{part=\"{}\"}} {}\n", part, seconds);
    metric("kinfer_engine_seconds_total", "counter", "engine step time by part (host: schedule, stage_and_launch, "
           "postprocess, wait_for_device; device: the steps' GPU time)", parts);
  }
  const int64_t pages = int64_t{set_->config().kv_pages} * set_->size();  // every replica's pool
  metric("kinfer_running_sequences", "gauge", "sequences running in the engine(s)",
         line("kinfer_running_sequences", running_.load()));
  metric("kinfer_waiting_sequences", "gauge", "sequences waiting (or preempted) in the engine",
         line("kinfer_waiting_sequences", waiting_seqs_.load()));
  metric("kinfer_waiting_requests", "gauge", "requests without their first token yet (--max-waiting bounds it)",
         line("kinfer_waiting_requests", waiting_.load()));
  metric("kinfer_requests_in_flight", "gauge", "engine requests not finished", line("kinfer_requests_in_flight", jobs_in_flight()));
  // used + cached + free = every replica's pool.
  metric("kinfer_kv_pages_used", "gauge", "KV pages held by sequences", line("kinfer_kv_pages_used", kv_used_.load()));
  metric("kinfer_kv_pages_cached", "gauge", "KV pages held only by the prefix cache (--prefix-cache; evicted when "
         "pages run out)", line("kinfer_kv_pages_cached", kv_cached_.load()));
  metric("kinfer_kv_pages_free", "gauge", "KV pages free",
         line("kinfer_kv_pages_free", pages - kv_used_.load() - kv_cached_.load()));
  return out;
}

Reply Server::generate(Endpoint ep, const HttpRequest& req, const Notifier& wake) {
  auto fail = [&](int status, const std::string& message, const std::string& param = {}) {
    count(status);
    return error_reply(status, message, param);
  };
  if (draining_) return fail(503, "the server is shutting down");
  if (broken_) return fail(503, "the engine failed (see the server's log); restart the server");
  const json body = json::parse(req.body, nullptr, false);
  if (body.is_discarded()) return fail(400, "the request body is not valid JSON");
  if (body.is_object()) {
    if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
      if (!it->is_string()) return fail(400, "'model' must be a string", "model");
      if (it->get<std::string>() != opt_.model_name)
        return fail(404, fmt::format("The model `{}` does not exist (this server serves `{}`)", it->get<std::string>(),
                                     opt_.model_name),
                    "model");
    }
  }
  GenParams p;
  try {
    p = parse_request(ep, body, tok_, limits_);
  } catch (const ApiError& e) {
    return fail(e.status, e.what(), e.param);
  }
  if (waiting_.load() + static_cast<int64_t>(p.prompts.size()) > opt_.max_waiting)
    return fail(429, fmt::format("too many requests waiting (--max-waiting {}): retry later", opt_.max_waiting));
  const bool stream = p.stream;
  auto job = std::make_shared<Job>(
      std::move(p), ctx_, wake, [this](int64_t id) { set_->cancel(id); },
      [this](const JobTotals& t) { job_done(t); });
  std::vector<Request> reqs = job->requests([this, wake] {
    auto first = std::make_shared<std::atomic<bool>>(false);
    return [this, wake, first] {
      if (!first->exchange(true)) --waiting_;
      wake();
    };
  });
  {
    std::lock_guard<std::mutex> lock(jobs_mu_);  // the engine loop routes by id under this lock
    std::vector<int64_t> ids;
    for (Request& r : reqs) {
      ++waiting_;
      try {
        ids.push_back(set_->submit(std::move(r)));
      } catch (const Error& e) {
        --waiting_;
        for (int64_t id : ids) set_->cancel(id);  // (their results are dropped: no job listens)
        return fail(400, e.what());
      }
    }
    job->set_engine_ids(ids);
    for (int64_t id : ids) by_engine_id_[id] = job;
  }
  Reply r;
  r.source = job;
  r.stream = stream;
  if (stream) r.content_type = "text/event-stream";
  return r;
}

Reply Server::handle(const HttpRequest& req, const Notifier& wake) {
  const std::string& path = req.path;
  const bool get = req.method == "GET" || req.method == "HEAD";
  if (path == "/health") {
    if (!get) return error_reply(405, "use GET /health");
    return draining_ ? error_reply(503, "the server is shutting down") : json_reply(200, json::object());
  }
  if (path == "/metrics") {
    if (!get) return error_reply(405, "use GET /metrics");
    Reply r;
    r.content_type = "text/plain; version=0.0.4";
    r.body = metrics();
    return r;
  }
  const bool completions = path == "/v1/completions", chat = path == "/v1/chat/completions";
  const bool models = path == "/v1/models" || path.rfind("/v1/models/", 0) == 0;
  if (!completions && !chat && !models) return error_reply(404, fmt::format("no route {} {}", req.method, path));
  if (!opt_.api_key.empty()) {
    const std::string* auth = req.header("authorization");
    if (!auth || *auth != "Bearer " + opt_.api_key) {
      if (!models) count(401);
      return error_reply(401, "a valid API key is required (Authorization: Bearer KEY)");
    }
  }
  if (models) {
    if (!get) return error_reply(405, "use GET /v1/models");
    const json card = {{"id", opt_.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "kinfer"},
                       {"max_model_len", limits_.max_model_len}, {"vocab_size", limits_.vocab}};
    if (path == "/v1/models") return json_reply(200, {{"object", "list"}, {"data", json::array({card})}});
    if (path.substr(11) != opt_.model_name)
      return error_reply(404, fmt::format("The model `{}` does not exist", path.substr(11)), "model");
    return json_reply(200, card);
  }
  if (req.method != "POST") {
    count(405);
    return error_reply(405, fmt::format("use POST {}", path));
  }
  return generate(completions ? Endpoint::Completions : Endpoint::Chat, req, wake);
}

}  // namespace kf::server

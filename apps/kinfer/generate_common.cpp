#include "generate_common.h"

#include <chrono>
#include <map>

#include "bench.h"
#include "cost/cost.h"
#include "cost/presets.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace kf::cli {

// random:PRESET models have no tokenizer: then only token ids work.
struct GenerateSetup::Text {
  Tokenizer tok;
};

namespace {
const Tokenizer& need_tokenizer(const GenerateSetup& g, const char* what) {
  KF_CHECK(g.text, "{} needs a tokenizer, and model '{}' has none: use --prompt-ids", what, g.model().source());
  return g.text->tok;
}
}  // namespace

void add_cpu_weights_option(CLI::App& app, std::string& value) {
  app.add_option("--cpu-weights", value,
                 "CPU matrix storage: auto (GGUF keeps its format, e.g. Q4_1; safetensors F32 -> bf16), "
                 "native (as stored), bf16, f32 (the exact reference)")
      ->check(CLI::IsMember({"auto", "native", "bf16", "f32"}))
      ->capture_default_str();
}

void add_summary_dtype_option(CLI::App& app, std::string& summary_dtype) {
  app.add_option("--summary-dtype", summary_dtype,
                 "page key summaries (blocktopk): auto = the KV dtype, int8 = 8-bit codes with a scale per page "
                 "and head (half the bytes of bf16 to score)")
      ->check(CLI::IsMember({"auto", "int8"}))
      ->capture_default_str();
}

void add_engine_options(CLI::App& app, GenerateOptions& o) {
  app.add_option("--model", o.model, "GGUF file, HF directory, 'default' or random:PRESET")->capture_default_str();
  app.add_option("--attn", o.attn, "decode attention: dense|local|blocktopk|topk")->capture_default_str();
  app.add_option("--page-size", o.page_size, "KV page size in tokens")->capture_default_str();
  app.add_option("--topk-pages", o.topk_pages, "pages (blocktopk) or pages' worth of tokens (topk) selected")
      ->capture_default_str();
  app.add_option("--local-pages", o.local_pages, "most recent pages always read")->capture_default_str();
  app.add_option("--kv-pages", o.kv_pages, "KV pool capacity in pages per layer (0 = fit all samples)")
      ->capture_default_str();
  app.add_option("--dense-layers", o.dense_layers, "layers kept dense under any policy, e.g. 0,1");
  add_summary_dtype_option(app, o.summary_dtype);
  app.add_flag("--no-repetition-stop", o.no_repetition_stop,
               "do not stop samples that loop (64-token block seen 15 times in 1024)");
  app.add_option("--max-step-tokens", o.max_step_tokens,
                 "rows per forward step: decode rows plus prefill chunks of many prompts (0 = 512 CPU, 8192 GPU)")
      ->capture_default_str();
  app.add_option("--max-seqs", o.max_seqs, "sequences running at once at most (0 = 256 CPU, 1024 GPU)")
      ->capture_default_str();
  app.add_option("--max-model-len", o.max_model_len,
                 "prompt + generated tokens per sample at most (0 = the model's max_position_embeddings)")
      ->capture_default_str();
  app.add_option("--gpu-memory", o.gpu_memory, "fraction of the GPU's free memory the KV pool may take")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0 = all cores)")->capture_default_str();
  add_cpu_weights_option(app, o.cpu_weights);
  app.add_option("--device", o.device, "cpu or cuda (bf16 weights and KV on GPU 0)")->capture_default_str();
  app.add_option("--devices", o.devices,
                 "GPUs to use, e.g. 0,1: one engine replica per GPU (per --tp GPUs), requests spread by load");
  app.add_option("--num-gpus", o.num_gpus, "use GPUs 0..N-1 (as --devices)");
  app.add_option("--tp", o.tp, "tensor parallelism: split the model's heads and MLP over this many GPUs (NCCL)")
      ->capture_default_str();
  app.add_option("--replicas", o.replicas, "CPU: engine replicas (the data-parallel path without GPUs; tests)")
      ->capture_default_str();
  app.add_flag("--no-graphs", o.no_graphs, "CUDA: launch every op instead of replaying decode-step graphs");
  app.add_flag("--no-overlap", o.no_overlap, "CUDA: wait for each step before preparing the next");
  // On by default for serve (as in vLLM and SGLang: independent requests
  // often share a system prompt), off for the batch commands, whose outputs
  // stay bit-for-bit those of one run of each request.
  app.add_flag("--prefix-cache,!--no-prefix-cache", o.prefix_cache,
               fmt::format("share the KV pages of prompt prefixes across requests (a request computes only past the "
                           "cached pages of its prompt, and its last two rows; the least recently used pages are "
                           "evicted when pages run out; with several replicas a request goes to the one that took "
                           "its prompt's pages). On a GPU a shared page was computed in another request's prefill "
                           "chunks, so outputs may differ in the last bits; on the CPU they are the same. Default: "
                           "{}",
                           o.prefix_cache ? "on (--no-prefix-cache: off)" : "off"));
  app.add_flag("--profile", o.profile,
               "report host time per step by phase, device time and the bandwidth roofline in the stats");
}

void add_generate_options(CLI::App& app, GenerateOptions& o) {
  add_engine_options(app, o);
  app.add_option("-n", o.n, "samples (Best-of-N; the prompt is prefilled once)")->capture_default_str();
  app.add_option("--max-tokens", o.max_tokens, "generated tokens per sample at most")->capture_default_str();
  app.add_option("--seed", o.seed, "random seed (Philox key)")->capture_default_str();
  app.add_option("--temp", o.temp, "temperature (0 = greedy)")->capture_default_str();
  app.add_option("--top-k", o.top_k, "keep the k most likely tokens (0 = off)")->capture_default_str();
  app.add_option("--top-p", o.top_p, "nucleus: keep the smallest set with this mass (1 = off)")->capture_default_str();
  app.add_option("--min-p", o.min_p, "keep tokens with p >= min-p * p_max (0 = off)")->capture_default_str();
  app.add_option("--repetition-penalty", o.repetition_penalty, "HF repetition penalty (1 = off)")
      ->capture_default_str();
  app.add_option("--presence-penalty", o.presence_penalty, "subtracted from seen tokens' logits (0 = off)")
      ->capture_default_str();
  app.add_option("--frequency-penalty", o.frequency_penalty, "subtracted per occurrence of a generated token (0 = off)")
      ->capture_default_str();
  app.add_option("--stop", o.stop, "stop string (repeatable)");
  app.add_flag("--ignore-eos", o.ignore_eos, "keep generating past EOS (benchmarks)");
  app.add_option("--thinking-budget", o.thinking_budget,
                 "Qwen3 budget forcing: after this many generated tokens without </think>, insert </think> "
                 "(-1 = off)")
      ->capture_default_str();
}

dist::PlacementFlags placement_flags(const GenerateOptions& o) {
  dist::PlacementFlags f;
  f.device = o.device;
  f.devices = o.devices;
  f.num_gpus = o.num_gpus;
  f.tp = o.tp;
  f.replicas = o.replicas;
  f.threads = o.threads;
  return f;
}

GenerateSetup setup_generate(const GenerateOptions& o) {
  GenerateSetup g;
  g.placement = dist::make_placement(placement_flags(o), cuda_device_count(), cuda_tp_available());
  g.placement.weight_format = parse_weight_format(o.cpu_weights);
  g.replicas = dist::load_replicas(g.placement, o.model);
  g.config = g.model().config().whole();
  if (o.model.rfind("random:", 0) != 0) g.text = std::make_shared<GenerateSetup::Text>(GenerateSetup::Text{load_tokenizer(o.model)});
  g.backend().bind_thread();  // this thread's own CUDA calls (the copy benchmark) go to the first GPU
  if (o.profile && g.backend().device() == Device::CUDA) g.copy_gbps = measure_copy_gbps(g.backend());
  return g;
}

std::string GenerateSetup::backend_name() const {
  const bool several = placement.device == Device::CUDA ? placement.gpus.size() > 1 : placement.cpu_replicas > 1;
  return several ? fmt::format("{} on {}", backend().name(), placement.describe()) : backend().name();
}

const Tokenizer* GenerateSetup::tokenizer() const { return text ? &text->tok : nullptr; }

std::vector<int> parse_token_ids(const std::string& s, int vocab) {
  std::vector<int> ids = parse_layer_list(s);  // same "1,2,3" syntax
  KF_CHECK(!ids.empty(), "--prompt-ids is empty");
  for (int t : ids) KF_CHECK(t >= 0 && t < vocab, "--prompt-ids: token {} is outside the vocabulary [0, {})", t, vocab);
  return ids;
}

std::vector<int> encode_prompt(const GenerateSetup& g, const std::string& text, bool chat) {
  const Tokenizer& tok = need_tokenizer(g, chat ? "--chat" : "--prompt");
  std::vector<int32_t> ids = chat ? tok.encode_chat({ChatMessage{"user", text}}) : tok.encode(text, false, true);
  KF_CHECK(!ids.empty(), "the prompt encodes to no tokens");
  return std::vector<int>(ids.begin(), ids.end());
}

std::string sample_text(const GenerateSetup& g, const SampleResult& s, const GenerateOptions& o) {
  if (!g.text) return {};
  std::vector<int32_t> ids(s.tokens.begin(), s.tokens.end());
  std::string text = g.text->tok.decode(ids, true);
  if (s.stop == StopReason::Stop) {  // cut at the earliest stop string
    size_t cut = std::string::npos;
    for (const std::string& st : o.stop) cut = std::min(cut, text.find(st));
    if (cut != std::string::npos) text.resize(cut);
  }
  return text;
}

TextStream::TextStream(const GenerateSetup& g) {
  if (g.text) dec_ = std::make_unique<StreamDecoder>(g.text->tok, true);
}
TextStream::~TextStream() = default;
std::string TextStream::push(int token) { return dec_ ? dec_->push(token) : fmt::format("{} ", token); }
std::string TextStream::flush() { return dec_ ? dec_->flush() : std::string(); }

Request make_request(const GenerateOptions& o, const GenerateSetup& g, const std::vector<int>& prompt) {
  Request r;
  if (g.text && !o.ignore_eos)  // the tokenizer's end-of-turn tokens (e.g. <|im_end|>) end a sample too
    for (int32_t id : g.text->tok.eos_ids()) r.stop_tokens.push_back(id);
  r.prompt = prompt;
  r.n = o.n;
  r.max_tokens = o.max_tokens;
  r.sampling.temperature = o.temp;
  r.sampling.top_k = o.top_k;
  r.sampling.top_p = o.top_p;
  r.sampling.min_p = o.min_p;
  r.sampling.repetition_penalty = o.repetition_penalty;
  r.sampling.presence_penalty = o.presence_penalty;
  r.sampling.frequency_penalty = o.frequency_penalty;
  r.sampling.seed = o.seed;
  r.stop_strings = o.stop;
  r.ignore_eos = o.ignore_eos;
  r.rng_key = 0;
  if (o.thinking_budget >= 0) {
    KF_CHECK(g.text, "--thinking-budget needs a tokenizer with </think>; model '{}' has none", g.model().source());
    r.think_end_token = g.text->tok.token_id("</think>");
    KF_CHECK(r.think_end_token >= 0, "--thinking-budget: model '{}' has no </think> token (not a thinking model)",
             g.model().source());
    r.thinking_budget = o.thinking_budget;
  }
  return r;
}

EngineConfig engine_config(const GenerateOptions& o, const GenerateSetup& g, const std::vector<Request>& reqs) {
  const bool gpu = g.backend().device() == Device::CUDA;
  EngineConfig c;
  c.page_size = o.page_size;
  c.policy.kind = parse_attn_kind(o.attn);
  c.policy.topk_pages = o.topk_pages;
  c.policy.local_pages = o.local_pages;
  c.dense_layers = parse_layer_list(o.dense_layers);
  c.i8_summaries = o.summary_dtype == "int8";
  c.max_step_tokens = o.max_step_tokens > 0 ? o.max_step_tokens : gpu ? 8192 : 512;
  c.max_seqs = o.max_seqs > 0 ? o.max_seqs : gpu ? 1024 : 256;
  c.max_model_len = o.max_model_len;
  c.repetition.enabled = !o.no_repetition_stop;
  c.graphs = o.no_graphs ? EngineConfig::Mode::Off : EngineConfig::Mode::Auto;
  c.overlap = o.no_overlap ? EngineConfig::Mode::Off : EngineConfig::Mode::Auto;
  c.prefix_cache = o.prefix_cache;
  if (g.text) {
    std::shared_ptr<GenerateSetup::Text> text = g.text;
    c.token_bytes = [text](int id) { return text->tok.token_bytes(id); };
  }
  KF_CHECK(o.page_size >= 1, "--page-size must be >= 1 (got {})", o.page_size);
  KF_CHECK(o.kv_pages >= 0, "--kv-pages must be >= 0 (got {})", o.kv_pages);
  KF_CHECK(o.gpu_memory > 0 && o.gpu_memory <= 1, "--gpu-memory must be in (0, 1] (got {})", o.gpu_memory);
  KF_CHECK(o.max_model_len >= 0, "--max-model-len must be >= 0 (got {})", o.max_model_len);
  // The pool may take a fraction of the free device memory (half the free
  // RAM on the CPU, shared by CPU replicas), less what the step's activations
  // and logits need. Every replica gets the same pool, sized on the GPU with
  // the least free memory; a --tp rank holds its shard's heads of every page.
  const ModelConfig& mc = g.model().config();
  const int elem = static_cast<int>(dtype_bytes(g.backend().act_dtype(), 1));
  const int64_t page_bytes = kv_page_bytes(mc, o.page_size, elem, c.i8_summaries);
  Backend::Memory mem = g.backend().memory();
  for (const dist::Replica& r : g.replicas)
    for (const auto& b : r.backends) mem.free = std::min(mem.free, b->memory().free);
  if (!gpu) mem.free /= g.placement.replicas();
  const int64_t step_bytes = int64_t(c.max_seqs) * mc.vocab_size * 4 +
                             int64_t(std::max(c.max_step_tokens, c.max_seqs)) *
                                 (4 * int64_t(mc.hidden_size) + 3 * int64_t(mc.n_heads + 2 * mc.n_kv_heads) * mc.head_dim +
                                  3 * int64_t(mc.intermediate_size)) * elem;
  const int64_t avail = std::max<int64_t>(
      int64_t(64) << 20, gpu ? static_cast<int64_t>(mem.free * o.gpu_memory) - step_bytes : mem.free / 2);
  const int64_t fit = std::max<int64_t>(1, avail / page_bytes - 1);  // - the padding page
  if (o.kv_pages > 0) {
    KF_CHECK(o.kv_pages <= fit,
             "--kv-pages {} needs {:.1f} GB, but at most {} pages ({:.1f} GB) fit in {} with these weights{}", o.kv_pages,
             o.kv_pages * page_bytes / 1e9, fit, fit * page_bytes / 1e9, g.backend().name(),
             gpu ? fmt::format(" at --gpu-memory {}", o.gpu_memory) : std::string());
    c.kv_pages = o.kv_pages;
  } else {
    int64_t tokens = 0;
    for (const Request& r : reqs)
      tokens += static_cast<int64_t>(r.n) * (static_cast<int64_t>(r.prompt.size()) + r.max_tokens + o.page_size);
    // With no requests known up front (a server) the pool takes what fits.
    c.kv_pages = reqs.empty() ? static_cast<int>(std::min<int64_t>(fit, int64_t{1} << 30))
                              : default_kv_pages(mc, o.page_size, tokens, fit * page_bytes, elem, c.i8_summaries);
  }
  return c;
}

void run_requests(dist::ReplicaSet& set, std::vector<Request> reqs,
                  const std::function<void(size_t, FinishedRequest&)>& on_finished,
                  const std::function<void()>& on_tick) {
  std::map<int64_t, size_t> index;
  const std::vector<int64_t> ids = set.submit_all(std::move(reqs));  // together: steps do not depend on timing
  for (size_t i = 0; i < ids.size(); ++i) index[ids[i]] = i;
  size_t done = 0;
  while (done < index.size()) {
    for (FinishedRequest& f : set.wait_finished(std::chrono::milliseconds(20))) {
      on_finished(index.at(f.id), f);
      ++done;
    }
    if (on_tick) on_tick();
  }
}

std::vector<SampleResult> run_split(dist::ReplicaSet& set, const Request& req, const std::function<void()>& on_tick,
                                    int requests) {
  const std::vector<Request> parts = dist::split_samples(req, std::max(static_cast<int>(set.size()), requests));
  std::vector<std::vector<SampleResult>> got(parts.size());
  run_requests(set, parts, [&](size_t i, FinishedRequest& f) { got[i] = std::move(f.samples); }, on_tick);
  std::vector<SampleResult> out;
  for (auto& part : got)
    for (SampleResult& s : part) out.push_back(std::move(s));
  return out;
}

std::vector<dist::ReplicaStats> replica_stats_since(const dist::ReplicaSet& set,
                                                    const std::vector<dist::ReplicaStats>& before) {
  std::vector<dist::ReplicaStats> now = set.replica_stats();
  for (size_t i = 0; i < now.size() && i < before.size(); ++i) {
    now[i].requests -= before[i].requests;
    now[i].samples -= before[i].samples;
    now[i].prefix_routed -= before[i].prefix_routed;
    now[i].engine = now[i].engine.since(before[i].engine);
  }
  return now;
}

nlohmann::json stats_json(const dist::ReplicaSet& set, const GenerateSetup& g, int prompt_tokens,
                          const GenerateOptions& o, const std::vector<dist::ReplicaStats>& before) {
  const std::vector<dist::ReplicaStats> per_replica = replica_stats_since(set, before);
  const EngineStats s = dist::merge_stats(per_replica);
  const EngineConfig& c = set.config();
  nlohmann::json attn = {{"kind", attn_kind_name(c.policy.kind)}, {"page_size", c.page_size},
                         {"topk_pages", c.policy.topk_pages}, {"local_pages", c.policy.local_pages},
                         {"dense_layers", c.dense_layers}, {"summary_dtype", c.i8_summaries ? "int8" : "auto"}};
  nlohmann::json j = {
      {"model", g.model().source()},
      {"backend", g.backend_name()},
      {"attn", attn},
      {"n", o.n},
      {"prompt_tokens", prompt_tokens},
      {"generated_tokens", s.generated_tokens},
      {"prefill_tokens", s.prefill_tokens},
      {"decode_tokens", s.decode_tokens},
      {"steps", s.steps},
      {"graph_steps", s.graph_steps},
      {"wall_s", s.wall_seconds},
      {"prefill_tok_s", s.prefill_tok_s()},
      {"decode_tok_s", s.decode_tok_s()},
      {"gen_tok_s", s.wall_seconds > 0 ? s.generated_tokens / s.wall_seconds : 0.0},
      {"kv_pages", s.kv_pages},
      {"kv_pages_peak", s.kv_pages_peak},
      {"max_seqs", c.max_seqs},
      {"running_peak", s.running_peak},
      {"preemptions", s.preemptions},
      {"prefix_cache", c.prefix_cache},
      {"prefix_cached_rows", s.prefix_cached_rows},
      {"prefix_cache_evictions", s.prefix_cache_evictions},
      {"pages_read_per_step", s.pages_read_per_step()},
      {"kv_bytes_read_per_token", s.decode_tokens ? static_cast<double>(s.kv_bytes_read) / s.decode_tokens : 0.0},
  };
  if (g.placement.tp > 1) j["tp"] = g.placement.tp;
  if (set.size() > 1) {  // how the work spread over the replicas
    nlohmann::json reps = nlohmann::json::array();
    for (const dist::ReplicaStats& r : per_replica)
      reps.push_back({{"backend", r.backend}, {"requests", r.requests}, {"samples", r.samples},
                      {"generated_tokens", r.engine.generated_tokens}, {"steps", r.engine.steps},
                      {"wall_s", r.engine.wall_seconds}, {"preemptions", r.engine.preemptions},
                      {"prefix_cached_rows", r.engine.prefix_cached_rows}, {"prefix_routed", r.prefix_routed}});
    j["replicas"] = reps;
  }
  if (o.profile) {  // per step of one replica (replicas run side by side), roofline over all GPUs
    const double steps = std::max<double>(1, static_cast<double>(s.steps) / set.size());
    const double devices = std::max<size_t>(1, g.placement.gpus.size());
    const double host = s.host_schedule_s + s.host_launch_s + s.host_postprocess_s;
    nlohmann::json p = {
        {"host_ms_per_step", {{"schedule", 1e3 * s.host_schedule_s / steps},
                              {"stage_and_launch", 1e3 * s.host_launch_s / steps},
                              {"postprocess", 1e3 * s.host_postprocess_s / steps},
                              {"total", 1e3 * host / steps},
                              {"wait_for_device", 1e3 * s.host_wait_s / steps}}},
        {"device_ms_per_step", 1e3 * s.device_s / steps},
        {"bytes_read", s.kv_bytes_read + s.weight_bytes_read},
        {"kv_bytes_read", s.kv_bytes_read},
        {"weight_bytes_read", s.weight_bytes_read},
    };
    if (g.copy_gbps > 0) {
      const double roofline_s = (s.kv_bytes_read + s.weight_bytes_read) / (g.copy_gbps * 1e9 * devices);
      p["copy_gbps"] = g.copy_gbps;
      p["roofline_s"] = roofline_s;
      p["roofline_fraction"] = s.wall_seconds > 0 ? roofline_s / s.wall_seconds : 0.0;
      p["device_roofline_fraction"] = s.device_s > 0 ? roofline_s / s.device_s : 0.0;
    }
    j["profile"] = p;
  }
  return j;
}

nlohmann::json efflops_json(const EngineConfig& c, const GenerateSetup& g, int prompt_tokens,
                            const std::vector<SampleResult>& samples) {
  std::vector<int64_t> lens;
  for (const SampleResult& s : samples) lens.push_back(static_cast<int64_t>(s.tokens.size()));
  const double intensity = cost::hardware_intensity(cost::kDefaultHardware).value_or(0.0);
  nlohmann::json j = cost::cost_json(
      cost::price_samples(g.config, c.policy, c.page_size, intensity, prompt_tokens, lens, c.i8_summaries));
  j["hardware"] = cost::kDefaultHardware;
  j["attn"] = cost::spec_of(c.policy, c.page_size, c.i8_summaries).label();
  return j;
}

}  // namespace kf::cli

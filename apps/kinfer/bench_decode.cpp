// `kinfer bench decode`: decode speed of B sequences stepping together.
// The caches first hold either a real prefill of --prompt-len tokens (whose
// speed is reported too) or, with --context L, a synthetic context of L
// tokens (random K/V with real page summaries: StepExecutor::fill_synthetic),
// which is how long-context shapes are benchmarked without minutes of
// prefill. Steps run through the engine's executor, one in flight while the
// next is prepared, each sampling its tokens on the device and feeding them to
// the next step there. Reports tokens/s (B tokens per
// step) and the bandwidth roofline: bytes a step must read (every weight once
// plus the K/V and summaries the attention policy reads, at the mean context
// of the timed steps) over the measured copy bandwidth. Every step samples
// its next tokens on the device and brings only those back, as the engine does.
//
// --tp K runs the model's K tensor-parallel shards on K GPUs (--devices names
// them; default 0..K-1) through the engine's executor group: every rank
// launches every step from its own thread, with the NCCL all-reduces inside
// the decode graphs. Bytes and the roofline are then per GPU, and the JSON
// adds the all-reduce time of a step (its 2 x layers all-reduces of
// [batch, hidden], replayed as one graph on every rank).
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "attn/policy.h"
#include "attn/summary.h"
#include "bench.h"
#include "dist/placement.h"
#include "engine/executor_group.h"
#include "model/model.h"
#include "engine/executor.h"
#include "generate_common.h"
#include "util/philox.h"
#ifdef KINFER_HAVE_CUDA
#include "backend/cuda/cuda_util.h"
#endif
#ifdef KINFER_ATTN_PHASES
#include "backend/cuda/kernels.h"
#endif

namespace kf::cli {
namespace {

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

}  // namespace

int bench_decode(int argc, char** argv) {
  CLI::App app{"Decode throughput: tokens/s and the bandwidth roofline", "kinfer bench decode"};
  std::string model_spec = "default", device = "cpu", attn = "dense", devices, cpu_weights = "auto";
  int batch = 1, tokens = 32, prompt_len = 32, context = 0, threads = 0, warmup = 2, tp = 1;
  int page_size = 16, topk_pages = 64, local_pages = 4;
  double copy_gbps = 0;
  bool blas = false, json = false, no_graphs = false, profile = false;
  std::string dense_layers, summary_dtype = "auto";
  app.add_option("--model", model_spec, "GGUF file, HF directory, 'default' or random:PRESET")
      ->capture_default_str();
  app.add_option("--batch", batch, "sequences decoding together")->capture_default_str();
  app.add_option("--tokens", tokens, "timed decode steps")->capture_default_str();
  app.add_option("--prompt-len", prompt_len, "tokens prefilled per sequence first (when --context is 0)")
      ->capture_default_str();
  app.add_option("--context", context, "synthetic context: tokens of random K/V per sequence (0 = prefill instead)")
      ->capture_default_str();
  app.add_option("--warmup", warmup, "untimed decode steps first")->capture_default_str();
  app.add_option("--attn", attn, "decode attention: dense|local|blocktopk|topk")->capture_default_str();
  app.add_option("--page-size", page_size, "KV page size in tokens")->capture_default_str();
  app.add_option("--topk-pages", topk_pages, "pages selected (blocktopk)")->capture_default_str();
  app.add_option("--local-pages", local_pages, "most recent pages always read")->capture_default_str();
  app.add_option("--dense-layers", dense_layers, "layers kept dense under any policy, e.g. 0");
  add_summary_dtype_option(app, summary_dtype);
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--tp", tp, "tensor parallelism: the model's shards on this many GPUs (NCCL)")->capture_default_str();
  app.add_option("--devices", devices, "the GPUs of the --tp shards, e.g. 0,1 (default 0..tp-1)");
  app.add_option("--copy-gbps", copy_gbps, "copy bandwidth for the roofline (0 = measure on CUDA)");
  app.add_flag("--no-graphs", no_graphs, "launch every op instead of replaying CUDA graphs");
  app.add_flag("--profile", profile, "CUDA: after the timed steps, time each op of 5 more steps (no graphs)");
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_flag("--blas", blas, "CPU: OpenBLAS sgemm for F32 weights (not batch-invariant; with --cpu-weights f32)");
  add_cpu_weights_option(app, cpu_weights);
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  KF_CHECK(batch >= 1 && tokens >= 1 && prompt_len >= 1 && warmup >= 0 && context >= 0,
           "--batch, --tokens and --prompt-len must be positive, --warmup and --context >= 0");
  KF_CHECK(page_size >= 1, "--page-size must be >= 1 (got {})", page_size);
  AttnPolicy policy;
  policy.kind = parse_attn_kind(attn);
  policy.topk_pages = topk_pages;
  policy.local_pages = local_pages;
  attn::check_policy(policy);

  if (blas && cpu_weights == "auto") cpu_weights = "f32";  // sgemm takes F32 weights
  dist::PlacementFlags pf;
  pf.device = device;
  pf.devices = devices;
  pf.tp = tp;
  pf.threads = threads;
  dist::Placement placement = dist::make_placement(pf, cuda_device_count(), cuda_tp_available());
  KF_CHECK(placement.replicas() == 1, "bench decode runs one replica: --devices must name exactly --tp ({}) GPUs", tp);
  placement.cpu_blas = blas;
  placement.weight_format = parse_weight_format(cpu_weights);
  std::vector<dist::Replica> replicas = dist::load_replicas(placement, model_spec);
  Backend* be = &replicas[0].backend();  // rank 0's
  be->bind_thread();
  if (copy_gbps <= 0 && be->device() == Device::CUDA) copy_gbps = measure_copy_gbps(*be);
  const Model& model = replicas[0].model();
  const ModelConfig& cfg = model.config();  // a shard's with --tp: heads, KV and weights per GPU
  const int start_ctx = context > 0 ? context : prompt_len;
  const int max_ctx = start_ctx + warmup + tokens + 6;  // + the profiled steps
  const int pages_per_seq = (max_ctx + page_size - 1) / page_size;
  ExecutorConfig ec;
  ec.page_size = page_size;
  ec.kv_pages = batch * pages_per_seq;
  ec.max_step_tokens = std::max(batch, std::min(prompt_len, 512));
  ec.max_seqs = batch;
  ec.graphs = !no_graphs && be->device() == Device::CUDA;
  ec.policy = policy;
  ec.dense_layers = parse_layer_list(dense_layers);
  ec.i8_summaries = summary_dtype == "int8";
  ExecutorGroup exec(replicas[0].ranks(), ec);
  // Pages reversed and interleaved across sequences: real, scattered page tables.
  std::vector<std::vector<int>> pages(batch);
  for (int s = 0; s < batch; ++s)
    for (int p = 0; p < pages_per_seq; ++p) pages[s].push_back((pages_per_seq - 1 - p) * batch + s);
  std::vector<int> ctx(batch, 0);
  std::vector<std::vector<int32_t>> slots(batch);
  auto slots_for = [&](int s, int n) -> std::span<const int32_t> {
    slots[s].clear();
    for (int i = 0; i < n; ++i) {
      const int p = ctx[s] + i;
      slots[s].push_back(pages[s][p / page_size] * page_size + p % page_size);
    }
    return slots[s];
  };

  // Deterministic pseudo-text: the token ids do not change the work done.
  auto token_at = [&](int seq, int pos) {
    return static_cast<int32_t>((int64_t{seq} * 7919 + int64_t{pos} * 104729) % cfg.vocab_size);
  };
  double prefill_s = 0;
  if (context > 0) {
    exec.on_ranks([](int, StepExecutor& e) { e.fill_synthetic(); });
    std::fill(ctx.begin(), ctx.end(), context);
  } else {
    // Every sequence's prompt in chunks of max_step_tokens, the last chunk
    // with its last row's logits (what a real prefill computes). With
    // --warmup > 0 a first untimed pass writes the same slots: the timed one
    // then runs warm, as llama-bench's pp does.
    auto prefill = [&] {
      for (int s = 0; s < batch; ++s)
        for (int done = 0; done < prompt_len;) {
          const int n = std::min(prompt_len - done, ec.max_step_tokens);
          std::vector<int32_t> chunk(n);
          for (int i = 0; i < n; ++i) chunk[i] = token_at(s, done + i);
          exec.begin();
          const int seq = exec.add_seq(pages[s], ctx[s], chunk, slots_for(s, n));
          if (done + n == prompt_len) exec.add_logits(seq);
          exec.collect(exec.launch());
          ctx[s] += n;
          done += n;
        }
      exec.synchronize();
    };
    if (warmup > 0) {
      prefill();
      std::fill(ctx.begin(), ctx.end(), 0);
    }
    const auto t_prefill = std::chrono::steady_clock::now();
    prefill();
    prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_prefill).count();
  }
  // Each step samples on the device with Qwen3's thinking defaults (T 0.6,
  // top-k 20, top-p 0.95) and the next step reads those tokens there: the
  // real decode loop, with one step in flight.
  std::optional<StepHandle> in_flight;
  auto do_step = [&](int step) {
    exec.begin();
    for (int s = 0; s < batch; ++s) {
      const int32_t tok = step == 0 ? token_at(s, start_ctx) : StepExecutor::from_previous(s);
      const int seq = exec.add_seq(pages[s], ctx[s], std::span<const int32_t>(&tok, 1), slots_for(s, 1));
      ++ctx[s];
      SampleRow sr;
      sr.temperature = 0.6f;
      sr.top_k = 20;
      sr.top_p = 0.95f;
      sr.uniform = static_cast<float>(philox_uniform(1, s, 0, step)) * 0.999f;
      exec.add_sample(exec.add_logits(seq), sr);
    }
    const StepHandle h = exec.launch();
    if (in_flight) exec.collect(*in_flight);
    in_flight = h;
  };
  auto drain = [&] {
    if (in_flight) exec.collect(*in_flight);
    in_flight.reset();
  };
  int step = 0;
  for (int i = 0; i < warmup; ++i) do_step(step++);
  drain();
  const auto t0 = std::chrono::steady_clock::now();
  const double cpu0 = process_cpu_seconds();
  for (int i = 0; i < tokens; ++i) do_step(step++);
  drain();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu_secs = process_cpu_seconds() - cpu0;

  // Tensor parallelism: the all-reduce time of one step, measured alone as
  // the step has them (2 per layer, [batch, hidden], in a graph) on every rank.
  double allreduce_ms = 0;
  if (exec.size() > 1) {
    constexpr int kIters = 20;
    exec.on_ranks([&](int r, StepExecutor& e) {
      Backend& b = e.backend();
      Buffer x(b.act_dtype(), {int64_t(batch), int64_t(cfg.hidden_size)}, b);
      b.fill_uniform(x, 3, -1.f, 1.f);
      const std::unique_ptr<Graph> g = b.record([&] {
        for (int l = 0; l < 2 * cfg.n_layers; ++l) b.all_reduce(x);
      });
      const auto start = b.make_event(), end = b.make_event();
      b.replay(*g);  // warm-up
      b.record(*start);
      for (int i = 0; i < kIters; ++i) b.replay(*g);
      b.record(*end);
      b.wait(*end);
      if (r == 0) allreduce_ms = b.ms_between(*start, *end) / kIters;
    });
  }

  nlohmann::json prof, sparse_phases;
  if (profile) {
#ifdef KINFER_HAVE_CUDA
    KF_CHECK(be->device() == Device::CUDA, "--profile needs --device cuda");
    for (int r = 0; r < exec.size(); ++r) exec.rank(r).set_graphs(false);
    cuda_profile(*be, true);
    for (int i = 0; i < 5; ++i) do_step(step++);
    drain();
    prof = nlohmann::json::parse(cuda_profile_json(*be));
    cuda_profile(*be, false);
    for (auto& [name, v] : prof.items()) v["ms_per_step"] = v["ms"].get<double>() / 5;
#ifdef KINFER_ATTN_PHASES  // the last layer's fused sparse kernel, in a real step (phases.cuh)
    if (policy.kind != AttnKind::Dense)
      sparse_phases = nlohmann::json::parse(cuda::attention_phases_json(batch * cfg.n_kv_heads));
#endif
#else
    fail("--profile needs a CUDA build");
#endif
  }

  // Bytes one step reads at the timed steps' mean context (the step's own token included).
  const int mean_ctx = start_ctx + warmup + (tokens + 1) / 2 + 1;
  const attn::Reads r = attn::reads_per_head(mean_ctx, page_size, policy);
  const attn::Reads rd = attn::reads_per_head(mean_ctx, page_size, AttnPolicy{});
  const int64_t elem = dtype_bytes(be->act_dtype(), 1);
  const int64_t summary_bytes =
      attn::summary_bytes(attn::summary_kind_for(static_cast<int>(elem), ec.i8_summaries), cfg.head_dim);
  const int64_t per_head = attn::read_bytes(r, cfg.head_dim, elem, summary_bytes);
  const int64_t per_dense_head = attn::read_bytes(rd, cfg.head_dim, elem, summary_bytes);
  const int64_t n_dense = static_cast<int64_t>(ec.dense_layers.size());
  const int64_t kv_bytes = (per_head * (cfg.n_layers - n_dense) + per_dense_head * n_dense) * cfg.n_kv_heads * batch;
  const int64_t weight_bytes = model.weights().bytes_per_step();
  const int64_t bytes = kv_bytes + weight_bytes;
  const double step_s = secs / tokens;
  const double roofline_s = copy_gbps > 0 ? bytes / (copy_gbps * 1e9) : 0.0;
  nlohmann::json j = {
      {"bench", "decode"},
      {"model", model.source()},
      {"model_name", cfg.name},
      {"backend", be->name()},
      {"dtype", dtype_name(be->act_dtype())},
      {"weights", model.weights().matrix_dtypes()},
      {"batch", batch},
      {"context", start_ctx},
      {"context_kind", context > 0 ? "synthetic" : "prefill"},
      {"attn", {{"kind", attn_kind_name(policy.kind)}, {"page_size", page_size}, {"topk_pages", topk_pages},
                {"local_pages", local_pages}, {"dense_layers", ec.dense_layers}, {"summary_dtype", summary_dtype}}},
      {"graphs", !no_graphs && be->device() == Device::CUDA},
      {"tp", exec.size()},
      {"gpus", placement.gpus},
      {"tokens", tokens},
      {"step_ms", step_s * 1e3},
      // CPU time of the whole process per step (all threads, spinning included):
      // on a shared machine a steadier measure of the work than wall time.
      {"cpu_ms_per_step", cpu_secs / tokens * 1e3},
      {"tokens_per_s", batch / step_s},
      {"prefill_tok_s", prefill_s > 0 ? static_cast<double>(batch) * prompt_len / prefill_s : 0.0},
      {"weight_bytes_per_step", weight_bytes},
      {"kv_bytes_per_step", kv_bytes},
      {"bytes_per_step", bytes},
      {"gb_per_s", bytes / step_s / 1e9},
      {"copy_gbps", copy_gbps},
      {"roofline_ms", roofline_s * 1e3},
      {"roofline_fraction", roofline_s > 0 ? roofline_s / step_s : 0.0},
  };
  if (profile) j["profile"] = prof;
  if (!sparse_phases.is_null()) j["sparse_kernel_phases"] = sparse_phases;
  if (exec.size() > 1) {  // bytes and the roofline above are per GPU
    j["allreduce_ms_per_step"] = allreduce_ms;
    j["allreduce_fraction"] = allreduce_ms / (step_s * 1e3);
  }
  if (json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s (%s weights) on %s, %s attention: batch %d at context %d (%s), %.3f ms/step, %.1f tokens/s\n",
                model.source().c_str(), model.weights().matrix_dtypes().c_str(), be->name().c_str(),
                attn_kind_name(policy.kind), batch, start_ctx, context > 0 ? "synthetic" : "prefilled", step_s * 1e3,
                batch / step_s);
    if (prefill_s > 0)
      std::printf("prefill: %d x %d tokens in %.3f s, %.1f tokens/s\n", batch, prompt_len, prefill_s,
                  static_cast<double>(batch) * prompt_len / prefill_s);
    std::printf("reads %.1f MB/step (weights %.1f, KV %.1f): %.1f GB/s", bytes / 1e6, weight_bytes / 1e6,
                kv_bytes / 1e6, bytes / step_s / 1e9);
    if (roofline_s > 0)
      std::printf(", roofline %.3f ms at %.0f GB/s copy = %.2f of it", roofline_s * 1e3, copy_gbps,
                  roofline_s / step_s);
    if (exec.size() > 1)
      std::printf("\ntp %d (per GPU above): all-reduces %.3f ms/step (%.0f%% of the step)", exec.size(), allreduce_ms,
                  100 * allreduce_ms / (step_s * 1e3));
    std::printf("\n");
  }
  return 0;
}

}  // namespace kf::cli

// `kinfer bench decode`: decode speed of B sequences stepping together after a
// P-token prefill each. Reports tokens/s (B tokens per step) and the effective
// weight bandwidth: bytes of every weight a step reads (layers, norms, lm_head;
// in the backend's dtype, F32 on CPU) divided by the step time.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "bench.h"
#include "model/model.h"
#include "model/runner.h"

namespace kf::cli {

int bench_decode(int argc, char** argv) {
  CLI::App app{"Decode throughput: tokens/s and effective GB/s of weight traffic", "kinfer bench decode"};
  std::string model_spec = "default", device = "cpu";
  int batch = 1, tokens = 32, prompt_len = 32, threads = 0, warmup = 2;
  bool blas = false, json = false;
  app.add_option("--model", model_spec, "GGUF file, HF directory, 'default' or random:PRESET")
      ->capture_default_str();
  app.add_option("--batch", batch, "sequences decoding together")->capture_default_str();
  app.add_option("--tokens", tokens, "timed decode steps")->capture_default_str();
  app.add_option("--prompt-len", prompt_len, "tokens prefilled per sequence first")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed decode steps first")->capture_default_str();
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->capture_default_str();
  app.add_flag("--blas", blas, "CPU: OpenBLAS sgemm matmul (not batch-invariant; for comparison)");
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  KF_CHECK(batch >= 1 && tokens >= 1 && prompt_len >= 1 && warmup >= 0,
           "--batch, --tokens and --prompt-len must be positive, --warmup >= 0");
  KF_CHECK(device == "cpu" || device == "cuda", "--device must be cpu or cuda (got '{}')", device);

  std::unique_ptr<Backend> be;
  if (device == "cuda") {
    be = make_cuda_backend(0);
  } else {
    CpuOptions opt;
    opt.n_threads = threads;
    opt.use_blas = blas;
    be = make_cpu_backend(opt);
  }
  const Model model = Model::load(model_spec, *be);
  const ModelConfig& cfg = model.config();
  const int max_ctx = prompt_len + warmup + tokens + 1;
  Runner run(model, *be, batch, max_ctx, 16, std::max(batch, std::min(prompt_len, 512)));

  // Deterministic pseudo-text: the token ids do not change the work done.
  auto token_at = [&](int seq, int pos) { return static_cast<int32_t>((seq * 7919 + pos * 104729) % cfg.vocab_size); };
  for (int s = 0; s < batch; ++s) {
    std::vector<int32_t> prompt(prompt_len);
    for (int p = 0; p < prompt_len; ++p) prompt[p] = token_at(s, p);
    run.prefill(s, prompt, false);
  }
  std::vector<int32_t> step_tokens(batch);
  auto do_step = [&](int step) {
    for (int s = 0; s < batch; ++s) step_tokens[s] = token_at(s, prompt_len + step);
    run.decode(step_tokens);
  };
  for (int i = 0; i < warmup; ++i) do_step(i);
  be->synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < tokens; ++i) do_step(warmup + i);
  be->synchronize();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const double step_s = secs / tokens;
  const int64_t weight_bytes = model.weights().bytes_per_step();
  nlohmann::json j = {
      {"bench", "decode"},
      {"model", model.source()},
      {"model_name", cfg.name},
      {"backend", be->name()},
      {"weight_dtype", dtype_name(be->act_dtype())},
      {"batch", batch},
      {"prompt_len", prompt_len},
      {"tokens", tokens},
      {"step_ms", step_s * 1e3},
      {"tokens_per_s", batch / step_s},
      {"weight_bytes_per_step", weight_bytes},
      {"weight_gb_per_s", weight_bytes / step_s / 1e9},
  };
  if (json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s on %s: batch %d, %.2f ms/step, %.1f tokens/s, %.2f GB/s of %s weights (%.1f MB/step)\n",
                model.source().c_str(), be->name().c_str(), batch, step_s * 1e3, batch / step_s,
                weight_bytes / step_s / 1e9, dtype_name(be->act_dtype()), weight_bytes / 1e6);
  }
  return 0;
}

}  // namespace kf::cli

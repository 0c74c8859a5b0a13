// `kinfer bench sample`: Backend::sample on the CUDA backend, one decode
// step's sampling of --batch rows over a --vocab logits row each (random bf16
// logits, normal with std --std), every row with the same temperature /
// top-k / top-p / min-p. Reports microseconds per step (CUDA events, median
// of --reps repetitions of --iters steps). Issue 13's target: <= 30 us at
// batch 32, vocab 151936, T 0.6, top-k 20, top-p 0.95.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/format.h>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "bench.h"
#include "util/error.h"
#ifdef KINFER_HAVE_CUDA
#include "backend/cuda/cuda_util.h"
#endif

namespace kf::cli {

int bench_sample(int argc, char** argv) {
  CLI::App app{"Token sampling on the GPU: microseconds per decode step", "kinfer bench sample"};
  int batch = 32, vocab = 151936, top_k = 20, iters = 50, reps = 7, warmup = 5;
  float temp = 0.6f, top_p = 0.95f, min_p = 0.f, stddev = 3.f;
  bool json = false;
  app.add_option("--batch", batch, "sampled rows")->capture_default_str();
  app.add_option("--vocab", vocab, "logits per row")->capture_default_str();
  app.add_option("--temp", temp, "temperature (0 = greedy)")->capture_default_str();
  app.add_option("--top-k", top_k, "top-k (0 = off)")->capture_default_str();
  app.add_option("--top-p", top_p, "top-p (1 = off)")->capture_default_str();
  app.add_option("--min-p", min_p, "min-p (0 = off)")->capture_default_str();
  app.add_option("--std", stddev, "standard deviation of the random logits")->capture_default_str();
  app.add_option("--iters", iters, "steps per timed repetition")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions (median reported)")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  KF_CHECK(batch >= 1 && vocab >= 1 && iters >= 1 && reps >= 1 && warmup >= 0, "bad shape: batch {}, vocab {}",
           batch, vocab);
#ifdef KINFER_HAVE_CUDA
  auto be = make_cuda_backend(0);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, stddev);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  std::vector<uint16_t> h(static_cast<size_t>(batch) * vocab);
  for (uint16_t& x : h) x = f32_to_bf16(nd(rng));
  Buffer logits(DType::BF16, {batch, vocab}, *be);
  be->upload(logits, h.data());
  std::vector<int32_t> row(batch), forced(batch, -1), k(batch, top_k);
  std::vector<float> t(batch, temp), p(batch, top_p), mp(batch, min_p), u(batch);
  for (int r = 0; r < batch; ++r) row[r] = r, u[r] = uni(rng);
  auto f32 = [&](const std::vector<float>& v) {
    Buffer b(DType::F32, {batch}, *be);
    be->upload(b, v.data());
    return b;
  };
  auto i32 = [&](const std::vector<int32_t>& v) {
    Buffer b(DType::I32, {batch}, *be);
    be->upload(b, v.data());
    return b;
  };
  const Buffer brow = i32(row), bforced = i32(forced), bk = i32(k), bt = f32(t), bp = f32(p), bm = f32(mp),
               bu = f32(u);
  Buffer tokens(DType::I32, {batch}, *be);
  const SampleArgs a{brow.view(), bt.view(), bk.view(), bp.view(), bm.view(), bu.view(), bforced.view()};

  std::vector<double> us = time_step_ms(*be, [&] { be->sample(logits, a, tokens); }, warmup, reps, iters);
  for (double& t : us) t *= 1e3;
  const double med = us[us.size() / 2];
  if (json) {
    std::printf("%s\n", fmt::format(R"({{"bench": "sample", "device": "{}", "batch": {}, "vocab": {}, "temp": {}, )"
                                    R"("top_k": {}, "top_p": {}, "min_p": {}, "std": {}, "iters": {}, "reps": {}, )"
                                    R"("us_per_step": {:.2f}, "us_min": {:.2f}, "us_max": {:.2f}}})",
                                    cuda_device_name(), batch, vocab, temp, top_k, top_p, min_p, stddev, iters, reps,
                                    med, us.front(), us.back())
                            .c_str());
  } else {
    std::printf("sample  B%d x V%d  T %g top-k %d top-p %g min-p %g  %.2f us/step (min %.2f, max %.2f)\n", batch,
                vocab, temp, top_k, top_p, min_p, med, us.front(), us.back());
  }
  return 0;
#else
  (void)json;
  fail("kinfer bench sample needs a CUDA build (configure with -DKINFER_CUDA=ON)");
#endif
}

}  // namespace kf::cli

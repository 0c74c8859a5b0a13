// `kinfer bench copy`: device-to-device copy bandwidth, the ceiling the
// attention kernels are measured against. GB/s counts bytes read plus bytes
// written (2 x buffer size per copy), as copy-bandwidth figures usually do.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fmt/format.h>
#include <vector>

#include "bench.h"
#include "util/error.h"
#ifdef KINFER_HAVE_CUDA
#include "backend/cuda/cuda_util.h"
#endif

namespace kf::cli {

double measure_copy_gbps(Backend& be) {
#ifdef KINFER_HAVE_CUDA
  KF_CHECK(be.device() == Device::CUDA, "copy bandwidth is measured on a GPU, not {}", be.name());
  const int64_t n = int64_t(512) << 19;  // bf16 elements
  Buffer src(DType::BF16, {n}, be), dst(DType::BF16, {n}, be);
  cuda_fill_uniform(src, 1, -1.f, 1.f);
  std::vector<double> ms;
  for (int r = 0; r < 5; ++r) ms.push_back(cuda_copy_ms(dst, src, 10));
  std::sort(ms.begin(), ms.end());
  return 2.0 * double(src.view().nbytes()) / (ms[ms.size() / 2] * 1e-3) / 1e9;
#else
  (void)be;
  fail("copy bandwidth needs a CUDA build (configure with -DKINFER_CUDA=ON)");
#endif
}

std::vector<double> time_step_ms(Backend& be, const std::function<void()>& step, int warmup, int reps, int iters) {
#ifdef KINFER_HAVE_CUDA
  for (int i = 0; i < warmup; ++i) step();
  be.synchronize();
  CudaTimer timer;
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    timer.start(be);
    for (int i = 0; i < iters; ++i) step();
    ms.push_back(timer.stop_ms(be) / iters);
  }
  std::sort(ms.begin(), ms.end());
  return ms;
#else
  (void)be, (void)step, (void)warmup, (void)reps, (void)iters;
  fail("GPU step timing needs a CUDA build (configure with -DKINFER_CUDA=ON)");
#endif
}

int bench_copy(int argc, char** argv) {
  CLI::App app{"Device-to-device copy bandwidth (read + write) on the GPU", "kinfer bench copy"};
  int mib = 2048, iters = 10, reps = 7;
  bool json = false;
  app.add_option("--mib", mib, "MiB per buffer")->capture_default_str();
  app.add_option("--iters", iters, "copies per timed repetition")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions (the median is reported)")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  KF_CHECK(mib >= 1 && iters >= 1 && reps >= 1, "--mib, --iters and --reps must be positive");
#ifdef KINFER_HAVE_CUDA
  auto be = make_cuda_backend(0);
  const int64_t n = int64_t(mib) << 19;  // bf16 elements
  Buffer src(DType::BF16, {n}, *be), dst(DType::BF16, {n}, *be);
  cuda_fill_uniform(src, 1, -1.f, 1.f);
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) ms.push_back(cuda_copy_ms(dst, src, iters));
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  const double bytes = 2.0 * double(src.view().nbytes());
  const double gbps = bytes / (med * 1e-3) / 1e9;
  if (json) {
    std::printf("%s\n", fmt::format(R"({{"bench": "copy", "device": "{}", "buffer_bytes": {}, "ms": {:.4f}, )"
                                    R"("ms_min": {:.4f}, "copy_gbps": {:.1f}, "iters": {}, "reps": {}}})",
                                    cuda_device_name(), src.view().nbytes(), med, ms.front(), gbps, iters, reps)
                            .c_str());
  } else {
    std::printf("device   %s\nbuffer   %d MiB\ncopy     %.3f ms  -> %.1f GB/s (read + write)\n",
                cuda_device_name().c_str(), mib, med, gbps);
  }
  return 0;
#else
  (void)json;
  fail("kinfer bench copy needs a CUDA build (configure with -DKINFER_CUDA=ON)");
#endif
}

}  // namespace kf::cli

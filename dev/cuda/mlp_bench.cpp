// Sandbox for the fused decode MLP (backend/cuda/mlp.cu) against the three
// ops it replaces (cuBLASLt gate|up, silu_mul, cuBLASLt down), through the
// Backend interface: a graph of R MLP calls over R copies of the weights
// (more than L2 holds, as in a real step), µs per call, best of REPS replays;
// then the same with the add_rmsnorm before each call (the step's pattern,
// programmatic dependent launch included). Built by dev/cuda/CMakeLists.txt:
//   ninja -C /tmp/kdev mlp_bench && /tmp/kdev/mlp_bench [REPS [SHAPE]]
#include <algorithm>
#include <cstdio>
#include <functional>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/kernels.h"

using namespace kf;

namespace {

struct Shape {
  const char* name;
  int d, f, n;
};

double time_graph(Backend& be, const std::function<void()>& ops, int reps) {
  std::unique_ptr<Graph> g = be.record(ops);
  be.replay(*g);
  auto a = be.make_event(), b = be.make_event();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    be.record(*a);
    be.replay(*g);
    be.record(*b);
    be.wait(*b);
    best = std::min(best, be.ms_between(*a, *b));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  const int only = argc > 2 ? std::atoi(argv[2]) : -1;  // one shape (an index into the table), e.g. for ncu
  setenv("KINFER_MLP_FUSED", "1", 1);  // the fused kernel is opt-in; Backend::mlp is the separate ops
  std::unique_ptr<Backend> be = make_cuda_backend(0);
  const Shape shapes[] = {{"qwen3-0.6b", 1024, 3072, 1},  {"qwen3-0.6b", 1024, 3072, 8},
                          {"qwen3-0.6b", 1024, 3072, 16}, {"qwen3-0.6b", 1024, 3072, 32},
                          {"qwen3-0.6b", 1024, 3072, 64}, {"smollm2-135m", 576, 1536, 32}};
  std::printf("%-13s %3s %9s | %9s %9s %6s | %14s %14s %6s\n", "model", "n", "MB", "sep us", "fused us", "x",
              "norm+sep us", "norm+fused us", "x");
  for (const Shape& s : shapes) {
    if (only >= 0 && &s != &shapes[only]) continue;
    const double mb = (3.0 * s.d * s.f * 2) / 1e6;
    const int R = std::max(4, std::min(64, int(400.0 / mb)));
    std::vector<Buffer> wgu, wd;
    for (int r = 0; r < R; ++r) {
      wgu.emplace_back(DType::BF16, std::initializer_list<int64_t>{2 * s.f, s.d}, *be);
      wd.emplace_back(DType::BF16, std::initializer_list<int64_t>{s.d, s.f}, *be);
      be->fill_uniform(wgu.back(), 1 + r, -0.03f, 0.03f);
      be->fill_uniform(wd.back(), 1000 + r, -0.03f, 0.03f);
    }
    Buffer x(DType::BF16, {s.n, s.d}, *be), h(DType::BF16, {s.n, s.d}, *be), norm(DType::BF16, {s.d}, *be),
        gu(DType::BF16, {s.n, 2 * s.f}, *be), ffn(DType::BF16, {s.n, s.f}, *be);
    be->fill_uniform(x, 7, -1.f, 1.f);
    be->fill_uniform(h, 8, -1.f, 1.f);
    be->fill_uniform(norm, 9, 0.9f, 1.1f);
    auto sep = [&](bool with_norm) {
      return [&, with_norm] {
        for (int r = 0; r < R; ++r) {
          if (with_norm) be->add_rmsnorm(x, h, norm, 1e-6f, h);
          be->Backend::mlp(h, wgu[r], wd[r], gu, ffn, x, nullptr, 1e-6f, h);
        }
      };
    };
    auto fused = [&](bool with_norm) {
      return [&, with_norm] {
        for (int r = 0; r < R; ++r) {
          if (with_norm) be->add_rmsnorm(x, h, norm, 1e-6f, h);
          be->mlp(h, wgu[r], wd[r], gu, ffn, x, nullptr, 1e-6f, h);
        }
      };
    };
    const double us = 1e3 / R;
    const double t_sep = time_graph(*be, sep(false), reps) * us, t_fused = time_graph(*be, fused(false), reps) * us;
    const double n_sep = time_graph(*be, sep(true), reps) * us, n_fused = time_graph(*be, fused(true), reps) * us;
    std::printf("%-13s %3d %9.2f | %9.2f %9.2f %5.2fx | %14.2f %14.2f %5.2fx\n", s.name, s.n, mb, t_sep, t_fused,
                t_sep / t_fused, n_sep, n_fused, n_sep / n_fused);
#ifdef KINFER_MLP_PHASES
    // One launch on cold weights right after an add_rmsnorm, as in a step.
    be->add_rmsnorm(x, h, norm, 1e-6f, h);
    be->mlp(h, wgu[R / 2], wd[R / 2], gu, ffn, x, nullptr, 1e-6f, h);
    be->synchronize();
    int sms = 0, smem = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    std::printf("  phases: %s\n", cuda::mlp_phases_report(cuda::mlp_decode_plan(s.n, s.d, s.f, sms, smem).grid).c_str());
#endif
    std::fflush(stdout);
  }
  return 0;
}

// Sandbox (llm.c style) for the decode GEMM: y[n, m] = x[n, k] · w[m, k]ᵀ with
// few rows (n <= 64, a decode batch), bf16 in, fp32 accumulate, bf16 out.
// Versions:
//   1  cuBLASLt, the heuristic's first algorithm (what gemm.cpp runs)
//   2  cuBLASLt, the fastest of the heuristic's top 32 (cold weights)
//   3  gemm_rows_kernel.cuh: swap-AB mma.sync, batch rows in shared memory,
//      split-K over a thread-block cluster; every (MT, WM, S) configuration
// Result on the H200 (2026-11-30, docs/cuda-experiments.md "Decode GEMMs"): version 3 is
// slower than cuBLASLt at every Qwen3 shape with 8-64 rows (0.6B q|k|v at 32
// rows 8.5 vs 4.9 us a launch) and faster only at 1 row; in the decode step
// (commit 91fa916, KINFER_GEMM_ROWS=1 for the o and down GEMMs) 3.5% slower.
// Build and run on the GPU machine:
//   nvcc -O3 -std=c++17 -arch=sm_90a -Isrc -o /tmp/gemm_rows dev/cuda/gemm_rows.cu -lcublasLt
//   /tmp/gemm_rows [REPS]              validate every version, then time them: a graph of R
//                                      launches over R distinct weight copies (> L2), us each
//   /tmp/gemm_rows 1 SHAPE MT WM S     one shape and configuration, plus phase probes
//                                      (mean SM-clock us since block entry at each boundary)
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gemm_rows_kernel.cuh"
#include "lt_candidates.cuh"
#include "check.cuh"

using kf::cuda::bf16_t;

static float h2f(bf16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static bf16_t f2h(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return bf16_t(u >> 16);
}

struct Shape {
  const char* name;
  int n, m, k;
};

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  // `gemm_rows REPS SHAPE MT WM SPLITS`: that shape and configuration only
  // (and cuBLASLt's pick), a few plain launches: for ncu.
  const int only_shape = argc > 5 ? std::atoi(argv[2]) : -1;
  std::vector<Shape> shapes = {
      {"0.6b qkv", 32, 4096, 1024},  {"0.6b o", 32, 1024, 2048},    {"0.6b gate|up", 32, 6144, 1024},
      {"0.6b down", 32, 1024, 3072}, {"0.6b qkv", 64, 4096, 1024},  {"0.6b o", 64, 1024, 2048},
      {"0.6b gate|up", 64, 6144, 1024}, {"0.6b down", 64, 1024, 3072}, {"0.6b qkv", 8, 4096, 1024},
      {"0.6b down", 1, 1024, 3072},  {"8b qkv", 32, 6144, 4096},    {"8b o", 32, 4096, 4096},
      {"8b gate|up", 32, 24576, 4096}, {"8b down", 32, 4096, 12288}, {"32b qkv", 16, 10240, 5120},
      {"32b o", 16, 5120, 8192},     {"32b gate|up", 16, 51200, 5120}, {"32b down", 16, 5120, 25600},
      {"odd", 5, 1000, 96},
  };
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> U(-1.f, 1.f);
  std::printf("%-14s %3s %6s %6s %8s | %8s %8s | %s\n", "shape", "n", "m", "k", "MB", "lt1 us", "lt32 us",
              "rows versions (cfg: us, max rel err)");
  for (size_t si = 0; si < shapes.size(); ++si) {
    const Shape& s = shapes[si];
    if (only_shape >= 0 && int(si) != only_shape) continue;
    const size_t wn = size_t(s.m) * s.k, xn = size_t(s.n) * s.k, yn = size_t(s.n) * s.m;
    const size_t wbytes = wn * 2;
    const int R = int(std::max<size_t>(4, std::min<size_t>(64, (size_t(400) << 20) / wbytes)));  // > L2
    std::vector<bf16_t> hw(wn), hx(xn);
    for (auto& v : hw) v = f2h(U(rng) * 0.05f);
    for (auto& v : hx) v = f2h(U(rng));
    bf16_t *dw, *dx, *dy, *dy2;
    CK(cudaMalloc(&dw, wbytes * R));
    CK(cudaMalloc(&dx, xn * 2));
    CK(cudaMalloc(&dy, yn * 2));
    CK(cudaMalloc(&dy2, yn * 2));
    for (int r = 0; r < R; ++r) CK(cudaMemcpy(dw + size_t(r) * wn, hw.data(), wbytes, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dx, hx.data(), xn * 2, cudaMemcpyHostToDevice));
    // Reference on a sample of outputs, double precision.
    std::vector<int> sample_rows, sample_cols;
    for (int i = 0; i < 4096; ++i) {
      sample_rows.push_back(int(rng() % s.n));
      sample_cols.push_back(int(rng() % s.m));
    }
    std::vector<double> ref(sample_rows.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      double acc = 0;
      for (int kk = 0; kk < s.k; ++kk)
        acc += double(h2f(hx[size_t(sample_rows[i]) * s.k + kk])) * h2f(hw[size_t(sample_cols[i]) * s.k + kk]);
      ref[i] = acc;
    }
    std::vector<bf16_t> hy(yn);
    auto max_err = [&](const bf16_t* d) {
      CK(cudaMemcpy(hy.data(), d, yn * 2, cudaMemcpyDeviceToHost));
      double worst = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        const double got = h2f(hy[size_t(sample_rows[i]) * s.m + sample_cols[i]]);
        worst = std::max(worst, std::fabs(got - ref[i]) / (std::fabs(ref[i]) + 0.05));
      }
      return worst;
    };
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    // Times a graph of R launches (one per weight copy); us per launch.
    auto time_graph = [&](auto&& launch) {
      cudaGraph_t g;
      cudaGraphExec_t ge;
      CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
      for (int r = 0; r < R; ++r) launch(dw + size_t(r) * wn, dy);
      CK(cudaStreamEndCapture(st, &g));
      CK(cudaGraphInstantiate(&ge, g, 0));
      CK(cudaGraphLaunch(ge, st));
      CK(cudaStreamSynchronize(st));
      float best = 1e30f;
      for (int i = 0; i < reps; ++i) {
        CK(cudaEventRecord(e0, st));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        best = std::min(best, ms);
      }
      cudaGraphExecDestroy(ge);
      cudaGraphDestroy(g);
      return best * 1000.f / R;
    };
    LtCandidates lt(s.n, s.m, s.k);  // versions 1 and 2
    if (only_shape >= 0) {
      const kf::cuda::GemmRowsConfig cfg{std::atoi(argv[3]), std::atoi(argv[4]), std::atoi(argv[5])};
      if (!kf::cuda::gemm_rows_valid(cfg, s.n, s.m, s.k)) return 2;
      for (int r = 0; r < 4; ++r) {
        CL(lt.run(0, dx, dw + size_t(r % R) * wn, dy2, st));
        CK(kf::cuda::gemm_rows(cfg, dx, dw + size_t((r + 1) % R) * wn, nullptr, dy, false, s.n, s.m, s.k, st));
      }
      CK(cudaStreamSynchronize(st));
      std::printf("%s: lt err %.1e, rows err %.1e\n", s.name, max_err(dy2), max_err(dy));
      // Phase probes of one more launch (cold weights: the next copy).
      const int blocks = kf::cuda::gemm_rows_tiles(cfg, s.m) * cfg.splits;
      constexpr int P = kf::cuda::kGemmRowsProbes;
      unsigned long long* dprobe;
      CK(cudaMalloc(&dprobe, size_t(blocks) * P * 8));
      CK(cudaMemset(dprobe, 0, size_t(blocks) * P * 8));
      CK(kf::cuda::gemm_rows(cfg, dx, dw + size_t(5 % R) * wn, nullptr, dy, false, s.n, s.m, s.k, st, dprobe));
      CK(cudaStreamSynchronize(st));
      std::vector<unsigned long long> hp(size_t(blocks) * P);
      CK(cudaMemcpy(hp.data(), dprobe, hp.size() * 8, cudaMemcpyDeviceToHost));
      cudaFree(dprobe);
      int clock_khz = 0;
      CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0));
      const double us_per_clk = 1e3 / clock_khz;  // nominal clock
      unsigned long long g0 = ~0ull, g1 = 0;
      double mean[P] = {};
      for (int b = 0; b < blocks; ++b) {
        g0 = std::min(g0, hp[b * P]);
        g1 = std::max(g1, hp[b * P]);
        for (int i = 1; i < P; ++i) mean[i] += hp[b * P + i] * us_per_clk / blocks;
      }
      const char* names[P] = {"", "w issued", "griddep", "x staged", "1st multiply", "loop done",
                              "cluster runs", "pushed+synced", "reduced+stored"};
      std::printf("%d blocks, entry spread %.2f us (globaltimer); mean us since entry at (nominal %d MHz):\n",
                  blocks, (g1 - g0) / 1e3, clock_khz / 1000);
      for (int i = 1; i < P; ++i) std::printf("  %-16s %7.2f\n", names[i], mean[i]);
      return 0;
    }
    float lt1 = time_graph([&](const bf16_t* w, bf16_t* y) { CL(lt.run(0, dx, w, y, st)); });
    CL(lt.run(0, dx, dw, dy2, st));
    CK(cudaStreamSynchronize(st));
    const double lt_err = max_err(dy2);
    float lt_best = lt1;
    for (int a = 1; a < int(lt.algos.size()); ++a) {
      if (lt.run(a, dx, dw, dy, st) != CUBLAS_STATUS_SUCCESS) continue;
      lt_best = std::min(lt_best, time_graph([&](const bf16_t* w, bf16_t* y) { lt.run(a, dx, w, y, st); }));
    }
    std::printf("%-14s %3d %6d %6d %8.1f | %8.2f %8.2f | lt err %.1e |", s.name, s.n, s.m, s.k, wbytes / 1e6, lt1,
                lt_best, lt_err);
    // Version 3 over its configurations; the heuristic's pick marked with *.
    const kf::cuda::GemmRowsConfig pick = kf::cuda::gemm_rows_config(s.n, s.m, s.k, 132);
    float best = 1e30f;
    std::string best_name, all;
    for (int mt : {1, 2})
      for (int wk : {4, 8})
        for (int sp : {1, 2, 4, 8}) {
          kf::cuda::GemmRowsConfig cfg{mt, wk, sp};
          if (!kf::cuda::gemm_rows_valid(cfg, s.n, s.m, s.k)) continue;
          CK(cudaMemset(dy, 0, yn * 2));
          CK(kf::cuda::gemm_rows(cfg, dx, dw, nullptr, dy, false, s.n, s.m, s.k, st));
          CK(cudaStreamSynchronize(st));
          const double err = max_err(dy);
          const float us = time_graph([&](const bf16_t* w, bf16_t* y) {
            kf::cuda::gemm_rows(cfg, dx, w, nullptr, y, false, s.n, s.m, s.k, st);
          });
          const bool is_pick = cfg.mt == pick.mt && cfg.wm == pick.wm && cfg.splits == pick.splits;
          if (err > 2e-2) std::printf(" BAD[%d/%d/%d err %.2e]", mt, wk, sp, err);
          if (is_pick) std::printf(" pick %d/%d/%d %.2f", mt, wk, sp, us);
          all += " " + std::to_string(mt) + "/" + std::to_string(wk) + "/" + std::to_string(sp) + ":" +
                 std::to_string(us).substr(0, 5);
          if (us < best) {
            best = us;
            best_name = std::to_string(mt) + "/" + std::to_string(wk) + "/" + std::to_string(sp);
          }
        }
    std::printf(" | best %s %.2f us (%.2f TB/s) vs lt1 %.2fx\n   all:%s\n", best_name.c_str(), best,
                wbytes / best / 1e6, lt1 / best, all.c_str());
    std::fflush(stdout);
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dy2);
  }
  return 0;
}

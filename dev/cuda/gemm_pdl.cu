// Sandbox: can the decode step's cuBLASLt GEMMs start before their producer
// ends? Three questions, on the GEMM shapes of a qwen3-0.6b decode step at 32
// rows (the kernels cuBLASLt picks for kinfer: kf::cuda::Gemm, tuned):
//  1. wait    — does the GEMM kernel hold its reads until its producer is done
//               (griddepcontrol.wait)? The producer lets dependents launch at
//               once, spins 30 us, then writes x; the GEMM's edge from it is
//               made programmatic (cudaGraphDependencyTypeProgrammatic). A GEMM
//               that waits gives the reference y; one that does not reads the
//               stale x (zeros).
//  2. trigger — does the GEMM let its dependents launch before it ends
//               (griddepcontrol.launch_dependents)? A launch_pdl consumer
//               stamps each block's start and the end of its wait: the mean gap
//               is how long its blocks were resident before the GEMM ended.
//  3. chain   — the step's pattern: 28 layers x (norm-like kernel, launch_pdl,
//               → GEMM) x 4 projections over distinct weights (cold L2), one
//               graph, best of REPS replays. Variants: plain edges; the same
//               weights in every layer (hot L2: the bound an L2 prefetch could
//               reach); the norm kernel prefetching the next GEMM's weights
//               (or the one after) into L2 at its entry; programmatic edges
//               with an early trigger (only valid for a GEMM that waits: the
//               overlap a waiting GEMM would get). Each valid variant's final y
//               must equal the plain one bitwise.
//  4. candidates — for each shape, each of cuBLASLt's heuristic candidates,
//               then every algorithm id x tile x stages that
//               cublasLtMatmulAlgoCheck accepts: does it wait (question 1),
//               and µs per (fold, GEMM) pair in a chain of 28 over distinct
//               weights, plain, and for one that waits also with programmatic
//               edges and the fold triggering at entry.
//  5. a GEMM that waits — dev/cuda/gemm_rows_kernel.cuh (launch_pdl, weights
//               read before its griddep_wait) in the same chains, every valid
//               configuration, the fold triggering at its end or its entry,
//               against the cuBLASLt chain (µs per pair, max |diff| of y).
// Built by dev/cuda/CMakeLists.txt (gpu.sh gemm_pdl):
//   ninja -C /tmp/kdev gemm_pdl && /tmp/kdev/gemm_pdl [REPS]
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "chain.cuh"
#include "gemm_rows_kernel.cuh"
#include "lt_candidates.cuh"

using namespace kf;
using kf::cuda::check;

namespace {

using namespace chain;

// A launch_pdl consumer: block start and end of its wait, in ns.
__global__ void stamp_wait(unsigned long long* t) {
  const unsigned long long start = global_ns();
  kf::cuda::griddep_wait();
  if (threadIdx.x == 0) {
    t[2 * blockIdx.x] = start;
    t[2 * blockIdx.x + 1] = global_ns();
  }
}

}  // namespace

int main(int argc, char** argv) {
  Setup setup(argc, argv);
  const int reps = setup.reps;
  Backend* be = setup.be.get();
  cudaStream_t st = setup.st;
  kf::cuda::Gemm& gemm = *setup.lt;
  bool chain_ok = true;
  std::printf("cuBLASLt %zu\n", cublasLtGetVersion());

  // 1 and 2, per projection.
  for (const Proj& p : kProj) {
    Buffer w(DType::BF16, {p.m, p.k}, *be), src(DType::BF16, {kRows, p.k}, *be), x(DType::BF16, {kRows, p.k}, *be);
    Buffer y(DType::BF16, {kRows, p.m}, *be), y_ref(DType::BF16, {kRows, p.m}, *be);
    Buffer stamps(DType::U8, {8 * 2 * 1024}, *be);
    fill(*be, w, 1);
    fill(*be, src, 2);
    KF_CUDA(cudaMemcpyAsync(x.view().data, src.view().data, src.view().nbytes(), cudaMemcpyDeviceToDevice, st));
    gemm.run(t2(x, kRows, p.k), t2(w, p.m, p.k), nullptr, t2(y_ref, kRows, p.m), false);  // plans (tunes) too
    KF_CUDA(cudaStreamSynchronize(st));
    const std::vector<uint16_t> ref = host(y_ref);
    const int n = kRows * p.k;
    auto* srcp = static_cast<const __nv_bfloat16*>(src.view().data);
    auto* xp = static_cast<__nv_bfloat16*>(x.view().data);
    for (int programmatic = 0; programmatic < 2; ++programmatic) {
      cudaGraphExec_t g = capture(st, [&] {
        late_writer<<<32, 256, 0, st>>>(srcp, xp, n, kSpinUs);
        if (programmatic) programmatic_into_next(st);
        gemm.run(t2(x, kRows, p.k), t2(w, p.m, p.k), nullptr, t2(y, kRows, p.m), true);
      });
      KF_CUDA(cudaMemsetAsync(x.view().data, 0, x.view().nbytes(), st));
      KF_CUDA(cudaMemsetAsync(y.view().data, 0, y.view().nbytes(), st));
      KF_CUDA(cudaGraphLaunch(g, st));
      KF_CUDA(cudaStreamSynchronize(st));
      const bool same = host(y) == ref;
      std::printf("%-8s edge %-12s y %s\n", p.name, programmatic ? "programmatic" : "plain",
                  same ? "== reference (waits for its producer)" : "!= reference (read x before its producer wrote it)");
      cudaGraphExecDestroy(g);
    }
    // 2: a launch_pdl consumer after the GEMM.
    auto* tp = static_cast<unsigned long long*>(stamps.view().data);
    const int blocks = 132;
    cudaGraphExec_t g = capture(st, [&] {
      gemm.run(t2(x, kRows, p.k), t2(w, p.m, p.k), nullptr, t2(y, kRows, p.m), true);
      kf::cuda::launch_pdl("stamp_wait", stamp_wait, blocks, 32, st, tp);
    });
    double gap = 0;
    for (int r = 0; r < 5; ++r) {
      KF_CUDA(cudaGraphLaunch(g, st));
      KF_CUDA(cudaStreamSynchronize(st));
      std::vector<unsigned long long> t(2 * blocks);
      KF_CUDA(cudaMemcpy(t.data(), tp, t.size() * 8, cudaMemcpyDeviceToHost));
      double sum = 0;
      for (int b = 0; b < blocks; ++b) sum += double(t[2 * b + 1] - t[2 * b]);
      gap = r == 0 ? sum / blocks : std::min(gap, sum / blocks);
    }
    std::printf("%-8s consumer blocks resident before the GEMM ended: %.2f us (mean over blocks, best of 5)\n",
                p.name, gap / 1000);
    cudaGraphExecDestroy(g);
  }

  // 3: the chain.
  constexpr int kLayers = 28;
  std::vector<Buffer> ws;
  for (int l = 0; l < kLayers; ++l)
    for (const Proj& p : kProj) {
      ws.emplace_back(DType::BF16, std::initializer_list<int64_t>{p.m, p.k}, *be);
      fill(*be, ws.back(), 10 + l);
    }
  Buffer xa(DType::BF16, {kRows, 3072}, *be), ya(DType::BF16, {kRows, 6144}, *be);
  fill(*be, ya, 3);
  Buffer y0(DType::BF16, {kRows, 6144}, *be);
  KF_CUDA(cudaMemcpyAsync(y0.view().data, ya.view().data, ya.view().nbytes(), cudaMemcpyDeviceToDevice, st));
  auto* xap = static_cast<__nv_bfloat16*>(xa.view().data);
  auto* yap = static_cast<__nv_bfloat16*>(ya.view().data);
  std::vector<uint16_t> first;
  double base_ms = 0;
  enum Variant { kPlain, kHot, kPrefetchNext, kPrefetchAfterNext, kProgrammaticEarly, kVariants };
  const char* names[] = {"plain edges, cold weights", "plain edges, hot weights (one layer's, in L2)",
                         "plain, fold prefetches the next GEMM's weights", "plain, fold prefetches the GEMM after",
                         "programmatic edges, fold triggers at entry"};
  std::printf("chain: %d layers x 4 GEMMs at %d rows, best of %d replays\n", kLayers, kRows, reps);
  for (int v = 0; v < kVariants; ++v) {
    auto weight = [&](int gemm_index) -> Buffer& {  // gemm_index over the whole chain
      const int l = (gemm_index / 4) % kLayers, j = gemm_index % 4;
      return ws[(v == kHot ? 0 : l) * 4 + j];
    };
    cudaGraphExec_t g = capture(st, [&] {
      int prev_m = 6144;
      for (int i = 0; i < kLayers * 4; ++i) {
        const Proj& p = kProj[i % 4];
        const void* pre = nullptr;
        size_t pre_bytes = 0;
        if (v == kPrefetchNext || v == kPrefetchAfterNext) {
          const int ahead = i + (v == kPrefetchNext ? 0 : 1);
          if (ahead < kLayers * 4) {
            pre = weight(ahead).view().data;
            pre_bytes = weight(ahead).view().nbytes();
          }
        }
        kf::cuda::launch_pdl("fold", fold, kRows, 128, st, yap, prev_m, xap, p.k, int(v == kProgrammaticEarly), pre,
                         pre_bytes);
        if (v == kProgrammaticEarly) programmatic_into_next(st);
        gemm.run(t2(xa, kRows, p.k), t2(weight(i), p.m, p.k), nullptr, t2(ya, kRows, p.m), true);
        prev_m = p.m;
      }
    });
    KF_CUDA(cudaMemcpyAsync(ya.view().data, y0.view().data, ya.view().nbytes(), cudaMemcpyDeviceToDevice, st));
    KF_CUDA(cudaGraphLaunch(g, st));
    KF_CUDA(cudaStreamSynchronize(st));
    const std::vector<uint16_t> out = host(ya);
    if (v == kPlain) first = out;
    const double ms = replay_ms(g, st, reps);
    if (v == kPlain) base_ms = ms;
    const bool same = out == first;
    const char* verdict = v == kHot ? "(other weights)" : same ? "y == plain" : "y != plain";
    std::printf("  %-48s %8.1f us/step  %+6.2f us/GEMM  %s\n", names[v], ms * 1000,
                (ms - base_ms) * 1000 / (kLayers * 4), verdict);
    if (v != kHot && v != kProgrammaticEarly) chain_ok = chain_ok && same;
    cudaGraphExecDestroy(g);
  }
  // 4: the heuristic's candidates, then every algorithm, of every shape.
  for (int all = 0; all < 2; ++all)
    for (int j = 0; j < 4; ++j) {
      const Proj& p = kProj[j];
      const LtCandidates cand(kRows, p.m, p.k, all, 160);
      Buffer src(DType::BF16, {kRows, p.k}, *be), x(DType::BF16, {kRows, p.k}, *be);
      Buffer y(DType::BF16, {kRows, p.m}, *be), y_ref(DType::BF16, {kRows, p.m}, *be);
      fill(*be, src, 2);
      const void* w0 = ws[j].view().data;
      std::printf("%s [%d x %d] at %d rows: %zu %s (algo id, tile id, stages id)%s\n", p.name, p.m, p.k, kRows,
                  cand.algos.size(), all ? "algorithms" : "heuristic candidates", all ? ", those that wait:" : "");
      if (all) {
        std::printf("  algorithm ids:");
        for (int i = 0, last = -1; i < int(cand.algos.size()); ++i)
          if (cand.config(i, CUBLASLT_ALGO_CONFIG_ID) != last)
            std::printf(" %d", last = cand.config(i, CUBLASLT_ALGO_CONFIG_ID));
        std::printf("\n");
      }
      int no_wait = 0, failed = 0;
      double best_plain = 1e30, best_prog = 1e30;
      for (int i = 0; i < int(cand.algos.size()); ++i) {
        KF_CUDA(cudaMemcpyAsync(x.view().data, src.view().data, src.view().nbytes(), cudaMemcpyDeviceToDevice, st));
        if (cand.run(i, x.view().data, w0, y_ref.view().data, st) != CUBLAS_STATUS_SUCCESS) {
          ++failed;
          continue;
        }
        KF_CUDA(cudaStreamSynchronize(st));
        const std::vector<uint16_t> ref = host(y_ref);
        bool waits = true;
        for (int probe = 0; probe < 2 && waits; ++probe) {
          cudaGraphExec_t g = capture(st, [&] {
            late_writer<<<32, 256, 0, st>>>(static_cast<const __nv_bfloat16*>(src.view().data),
                                            static_cast<__nv_bfloat16*>(x.view().data), kRows * p.k, kSpinUs);
            programmatic_into_next(st);
            CL(cand.run(i, x.view().data, w0, y.view().data, st));
          });
          KF_CUDA(cudaMemsetAsync(x.view().data, 0, x.view().nbytes(), st));
          KF_CUDA(cudaGraphLaunch(g, st));
          KF_CUDA(cudaStreamSynchronize(st));
          cudaGraphExecDestroy(g);
          waits = host(y) == ref;
        }
        no_wait += !waits;
        if (all && !waits) continue;
        double us[2] = {0, 0};
        for (int programmatic = 0; programmatic < (waits ? 2 : 1); ++programmatic) {
          cudaGraphExec_t c = capture(st, [&] {
            for (int l = 0; l < kLayers; ++l) {
              kf::cuda::launch_pdl("fold", fold, kRows, 128, st, yap, p.m, xap, p.k, programmatic, nullptr, size_t(0));
              if (programmatic) programmatic_into_next(st);
              CL(cand.run(i, xap, ws[l * 4 + j].view().data, yap, st));
            }
          });
          us[programmatic] = replay_ms(c, st, reps) * 1000 / kLayers;
          cudaGraphExecDestroy(c);
        }
        best_plain = std::min(best_plain, us[0]);
        if (waits) best_prog = std::min(best_prog, us[1]);
        std::printf("  #%-3d algo %3d tile %3d stages %3d  %-9s plain %6.2f us/pair", i,
                    cand.config(i, CUBLASLT_ALGO_CONFIG_ID), cand.config(i, CUBLASLT_ALGO_CONFIG_TILE_ID),
                    cand.config(i, CUBLASLT_ALGO_CONFIG_STAGES_ID), waits ? "waits" : "no wait", us[0]);
        if (waits) std::printf("  programmatic %6.2f us/pair", us[1]);
        std::printf("\n");
      }
      std::printf("  %s: %d of %zu do not wait, %d failed to run", p.name, no_wait, cand.algos.size(), failed);
      if (best_plain < 1e29) std::printf("; best plain %.2f us/pair", best_plain);
      if (best_prog < 1e29) std::printf(", best programmatic %.2f", best_prog);
      std::printf("\n");
    }

  // 5: gemm_rows (waits) in the same chains.
  int sms = 0;
  KF_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  for (int j = 0; j < 4; ++j) {
    const Proj& p = kProj[j];
    auto chain = [&](const std::function<void(int)>& gemm_l, int trigger, std::vector<uint16_t>* out) {
      cudaGraphExec_t c = capture(st, [&] {
        for (int l = 0; l < kLayers; ++l) {
          kf::cuda::launch_pdl("fold", fold, kRows, 128, st, yap, p.m, xap, p.k, trigger, nullptr, size_t(0));
          gemm_l(l);
        }
      });
      KF_CUDA(cudaMemcpyAsync(ya.view().data, y0.view().data, ya.view().nbytes(), cudaMemcpyDeviceToDevice, st));
      KF_CUDA(cudaGraphLaunch(c, st));
      KF_CUDA(cudaStreamSynchronize(st));
      if (out) *out = host(ya);
      const double us = replay_ms(c, st, reps) * 1000 / kLayers;
      cudaGraphExecDestroy(c);
      return us;
    };
    std::vector<uint16_t> ref, got;
    const double cublas_us = chain(
        [&](int l) { gemm.run(t2(xa, kRows, p.k), t2(ws[l * 4 + j], p.m, p.k), nullptr, t2(ya, kRows, p.m), true); },
        0, &ref);
    const kf::cuda::GemmRowsConfig auto_cfg = kf::cuda::gemm_rows_config(kRows, p.m, p.k, sms);
    std::printf("%s: cuBLASLt chain %.2f us/pair; gemm_rows (mt wm splits): fold triggers at end / at entry\n",
                p.name, cublas_us);
    for (int mt : {1, 2})
      for (int wm : {4, 8})
        for (int splits : {1, 2, 4, 8}) {
          const kf::cuda::GemmRowsConfig cfg{mt, wm, splits};
          if (!kf::cuda::gemm_rows_valid(cfg, kRows, p.m, p.k)) continue;
          double us[2];
          float max_diff = 0, max_ref = 0;
          for (int trigger = 0; trigger < 2; ++trigger)
            us[trigger] = chain(
                [&](int l) {
                  using kf::cuda::bf16_t;
                  KF_CUDA(kf::cuda::gemm_rows(cfg, reinterpret_cast<const bf16_t*>(xap),
                                              static_cast<const bf16_t*>(ws[l * 4 + j].view().data), nullptr, yap,
                                              false, kRows, p.m, p.k, st));
                },
                trigger, trigger ? nullptr : &got);
          for (int i = 0; i < kRows * p.m; ++i) {
            max_diff = std::max(max_diff, std::fabs(bf16_to_f32(got[i]) - bf16_to_f32(ref[i])));
            max_ref = std::max(max_ref, std::fabs(bf16_to_f32(ref[i])));
          }
          const bool is_auto = cfg.mt == auto_cfg.mt && cfg.wm == auto_cfg.wm && cfg.splits == auto_cfg.splits;
          std::printf("  %d %d %d%s  %6.2f / %6.2f us/pair (%+.2f vs cuBLASLt)  max|diff| %.3g of max|y| %.3g\n", mt,
                      wm, splits, is_auto ? "*" : " ", us[0], us[1], std::min(us[0], us[1]) - cublas_us, max_diff,
                      max_ref);
        }
  }

  std::printf("%s\n", chain_ok ? "chain variants with plain edges agree" : "FAIL: a plain-edge variant differs");
  return chain_ok ? 0 : 1;
}

// Sandbox: a decode GEMM that waits for its producer under programmatic
// dependent launch, from CUTLASS's Hopper kernels (TMA loads, warp-specialized
// wgmma; headers from the PyPI wheel nvidia-cutlass, built with
// CUTLASS_ENABLE_GDC_FOR_SM90 so that the mainloop's producer warp executes
// griddepcontrol.wait before its first load and the last tile triggers the
// dependents), against cuBLASLt, whose decode GEMMs neither wait nor trigger
// (gemm_pdl.cu). The question for the decode step's non-attention part
// (docs/cuda-experiments.md, "Can the GEMMs start before their producer
// ends?"): does a GEMM that waits, with its launch and prologue overlapped with
// the kernel before it, beat cuBLASLt by the ~3 µs a GEMM that overlap is worth?
// For each Qwen3-0.6B projection at 32 rows (chain.cuh) and each version:
//   0  cuBLASLt (kf::cuda::Gemm, tuned: what the step runs)
//   1  CUTLASS, tile 64 x 32 x 128 (weight rows x batch rows x K), the
//      builder's schedule, persistent tiles
//   2  CUTLASS, tile 64 x 32 x 128, ping-pong warp groups, persistent tiles
//   3  CUTLASS, tile 64 x 16 x 128, ping-pong, persistent: twice the tiles
//      (each weight tile read by two, the second mostly from L2), as
//      cuBLASLt's own pick for the o projection (64 x 8 tiles) does
// (Stream-K, CUTLASS's split-K for sm90, does not compile with
// CUTLASS_ENABLE_GDC_FOR_SM90 in 4.2.0: sm90_tile_scheduler_stream_k.hpp:337
// binds a const member to a non-const reference in is_last_tile.)
// and, for the o and down projections, which the step splits over K (4 slices
// of fp32 partials that the norm kernel adds, kf::cuda::Gemm::run_split_k):
//   4  cuBLASLt split-K 4 (what the step runs for them)
//   5  CUTLASS 64 x 32 x 128 ping-pong, the 4 slices as a batched GEMM
// it checks the output against cuBLASLt's (max |diff|, bf16 rounding apart),
// whether a version launched with PDL waits for a producer that writes its
// input 30 µs late (y equal to its own plain-launch y), and times chains of 28
// layers x (norm-like kernel -> GEMM) over distinct weights: plain edges,
// programmatic edges with the norm kernel triggering at entry, and the same
// with the norm kernel also prefetching the GEMM's weights into L2 before its
// own wait (a GEMM that waits then finds them there: hot weights were worth
// 0.7-0.8 µs a GEMM in gemm_pdl.cu, prefetches before cuBLASLt cost 0.6).
// Swap-AB: the
// weights are CUTLASS's A (M = output features), the batch its B (N = rows).
// Built by dev/cuda/CMakeLists.txt when KINFER_CUTLASS_INCLUDE is given
// (gpu.sh cutlass; CUTLASS_MODEL=qwen3-8b for that model's projections):
//   ninja -C /tmp/kdev gemm_cutlass && /tmp/kdev/gemm_cutlass [REPS] [qwen3-8b]
#include <cuda_bf16.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <iterator>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "chain.cuh"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/version.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

using namespace kf;
using namespace chain;

namespace {

// y [n, k-rows] = x [n, k] w [m, k]^T as CUTLASS's D [m, n] = A [m, k] B [k, n]:
// A = w row-major, B = x^T (x row-major: K-major), D column-major = y row-major.
// With slices > 1, K is cut into that many equal parts, one batch entry each:
// D [slices][n][m] holds fp32 partial products (ElementD float).
template <class TileShape, class MainloopSchedule, class EpilogueSchedule, class Scheduler, class ElementD = cutlass::bfloat16_t>
struct CutlassGemm {
  using Element = cutlass::bfloat16_t;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::ColumnMajor,
      16 / sizeof(ElementD), ElementD, cutlass::layout::ColumnMajor, 16 / sizeof(ElementD), EpilogueSchedule>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, 8, Element,
      cutlass::layout::ColumnMajor, 8, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue, Scheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  struct CudaFree {
    void operator()(void* p) const { cudaFree(p); }
  };
  Gemm gemm;
  std::unique_ptr<void, CudaFree> workspace;  // the scheduler's, if it needs one

  // Plans the GEMM of one weight matrix (TMA descriptors hold its address).
  CutlassGemm(const void* x, const void* w, void* y, int n, int m, int k, int sms, cudaStream_t st, int slices = 1) {
    const int ks = k / slices;
    // Row strides k (w [m, k] and x [n, k] row-major), batch entry s starts s * ks columns in.
    typename Kernel::StrideA sa{};
    cute::get<0>(sa) = k;
    cute::get<2>(sa) = ks;
    typename Kernel::StrideB sb{};
    cute::get<0>(sb) = k;
    cute::get<2>(sb) = ks;
    // D column-major [m, n] per entry = y row-major [n, m]; entries n * m apart.
    typename Kernel::StrideC sc{};
    cute::get<1>(sc) = m;
    cute::get<2>(sc) = int64_t(n) * m;
    typename Kernel::StrideD sd{};
    cute::get<1>(sd) = m;
    cute::get<2>(sd) = int64_t(n) * m;
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = sms;
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                  {m, n, ks, slices},
                                  {static_cast<const Element*>(w), sa, static_cast<const Element*>(x), sb},
                                  {{1.f, 0.f}, nullptr, sc, static_cast<ElementD*>(y), sd},
                                  hw};
    KF_CHECK(Gemm::can_implement(args) == cutlass::Status::kSuccess, "CUTLASS cannot run [{} x {}] x [{} x {}]", m, k,
             k, n);
    if (const size_t bytes = Gemm::get_workspace_size(args)) {
      void* p = nullptr;
      KF_CUDA(cudaMalloc(&p, bytes));
      workspace.reset(p);
    }
    KF_CHECK(gemm.initialize(args, workspace.get(), st) == cutlass::Status::kSuccess, "CUTLASS initialize failed");
  }
  void run(cudaStream_t st, bool pdl) {
    KF_CHECK(gemm.run(st, nullptr, pdl) == cutlass::Status::kSuccess, "CUTLASS run failed");
  }
};

using Tile64 = cute::Shape<cute::_64, cute::_32, cute::_128>;
using Tile64n16 = cute::Shape<cute::_64, cute::_16, cute::_128>;
using V1 = CutlassGemm<Tile64, cutlass::gemm::collective::KernelScheduleAuto,
                       cutlass::epilogue::collective::EpilogueScheduleAuto, void>;
using V2 = CutlassGemm<Tile64, cutlass::gemm::KernelTmaWarpSpecializedPingpong, cutlass::epilogue::TmaWarpSpecialized,
                       void>;
using V3 = CutlassGemm<Tile64n16, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                       cutlass::epilogue::TmaWarpSpecialized, void>;
using V5 = CutlassGemm<Tile64, cutlass::gemm::KernelTmaWarpSpecializedPingpong, cutlass::epilogue::TmaWarpSpecialized,
                       void, float>;
constexpr int kSlices = 4;  // the step's K slices for the o and down projections

// One version's GEMMs over a list of weight matrices (the chain's layers).
struct Version {
  std::string name;
  std::function<void(int, cudaStream_t, bool)> run;  // (weights index, stream, launch with PDL)
  int slices = 0;  // 0: writes y bf16 [n, m]; S: fp32 partials [S, n, m]
};

template <class V>
Version make_version(const char* name, const std::vector<const void*>& ws, const void* x, void* y, int m, int k,
                     int sms, cudaStream_t st, int slices = 0) {
  auto plans = std::make_shared<std::vector<std::unique_ptr<V>>>();
  for (const void* w : ws) plans->push_back(std::make_unique<V>(x, w, y, kRows, m, k, sms, st, std::max(slices, 1)));
  return {name, [plans](int i, cudaStream_t s, bool pdl) { (*plans)[i]->run(s, pdl); }, slices};
}

// The norm-like kernel of a split projection: x[r, j] = sum over slices of
// parts[s][r][j % m], halved (as fold, which reads y).
__global__ void fold_partials(const float* parts, int slices, int m, __nv_bfloat16* x, int k, int trigger,
                              const void* pre, size_t pre_bytes) {
  if (pre) prefetch_l2(pre, pre_bytes);
  kf::cuda::griddep_wait();
  if (trigger) asm volatile("griddepcontrol.launch_dependents;");
  const int r = blockIdx.x;
  for (int j = threadIdx.x; j < k; j += blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < slices; ++s) sum += parts[(size_t(s) * gridDim.x + r) * m + j % m];
    x[size_t(r) * k + j] = __float2bfloat16(0.5f * sum);
  }
}

// A version's output as y [n * m] floats: y itself, or its partials summed.
std::vector<float> output(const Buffer& y, const Buffer& parts, int slices, int64_t nm) {
  std::vector<float> out(nm, 0.f);
  if (slices == 0) {
    const std::vector<uint16_t> h = host(y);
    for (int64_t i = 0; i < nm; ++i) out[i] = bf16_to_f32(h[i]);
    return out;
  }
  std::vector<float> h(slices * nm);
  KF_CUDA(cudaMemcpy(h.data(), parts.view().data, h.size() * 4, cudaMemcpyDeviceToHost));
  for (int s = 0; s < slices; ++s)
    for (int64_t i = 0; i < nm; ++i) out[i] += h[s * nm + i];
  return out;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b, float* max_ref) {
  float d = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::fabs(a[i] - b[i]));
    r = std::max(r, std::fabs(b[i]));
  }
  *max_ref = r;
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  Setup setup(argc, argv);
  const int reps = setup.reps;
  Backend* be = setup.be.get();
  cudaStream_t st = setup.st;
  kf::cuda::Gemm& lt = *setup.lt;
  int sms = 0;
  KF_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  constexpr int kLayers = 28;
  bool ok = true;
  std::printf("CUTLASS %d.%d.%d, cuBLASLt %zu; %d layers x (norm-like kernel -> GEMM), %d rows, best of %d\n",
              CUTLASS_MAJOR, CUTLASS_MINOR, CUTLASS_PATCH, cublasLtGetVersion(), kLayers, kRows, reps);
  // argv[2] qwen3-8b: that model's projections (default Qwen3-0.6B's).
  const bool qwen3_8b = argc > 2 && std::string(argv[2]) == "qwen3-8b";
  std::vector<Proj> projections(std::begin(kProj), std::end(kProj));
  if (qwen3_8b) projections.assign(std::begin(kProj8b), std::end(kProj8b));
  std::printf("%s projections\n", qwen3_8b ? "Qwen3-8B" : "Qwen3-0.6B");
  for (const Proj& p : projections) {
    std::vector<Buffer> ws;
    std::vector<const void*> wp;
    for (int l = 0; l < kLayers; ++l) {
      ws.emplace_back(DType::BF16, std::initializer_list<int64_t>{p.m, p.k}, *be);
      fill(*be, ws.back(), 10 + l);
      wp.push_back(ws.back().view().data);
    }
    Buffer src(DType::BF16, {kRows, p.k}, *be), x(DType::BF16, {kRows, p.k}, *be), y(DType::BF16, {kRows, p.m}, *be);
    Buffer y0(DType::BF16, {kRows, p.m}, *be), parts(DType::F32, {kSlices, kRows, p.m}, *be);
    fill(*be, src, 2);
    fill(*be, y0, 3);
    auto* xp = static_cast<__nv_bfloat16*>(x.view().data);
    auto* yp = static_cast<__nv_bfloat16*>(y.view().data);
    const auto* srcp = static_cast<const __nv_bfloat16*>(src.view().data);
    const auto* y0p = static_cast<const __nv_bfloat16*>(y0.view().data);
    auto* partsp = static_cast<float*>(parts.view().data);
    const int64_t nm = int64_t(kRows) * p.m;

    std::vector<Version> versions;
    versions.push_back({"cuBLASLt", [&](int i, cudaStream_t s, bool) {
                          (void)s;
                          lt.run(t2(x, kRows, p.k), t2(ws[i], p.m, p.k), nullptr, t2(y, kRows, p.m), true);
                        }});
    versions.push_back(make_version<V1>("CUTLASS 64x32x128 auto", wp, xp, yp, p.m, p.k, sms, st));
    versions.push_back(make_version<V2>("CUTLASS 64x32x128 ping-pong", wp, xp, yp, p.m, p.k, sms, st));
    versions.push_back(make_version<V3>("CUTLASS 64x16x128 ping-pong", wp, xp, yp, p.m, p.k, sms, st));
    if (std::string(p.name) == "o" || std::string(p.name) == "down") {  // the step may split them over K
      versions.push_back({"cuBLASLt split-K 4",
                          [&](int i, cudaStream_t s, bool) {
                            (void)s;
                            lt.run_split_k(t2(x, kRows, p.k), t2(ws[i], p.m, p.k), kSlices,
                                           Tensor(partsp, DType::F32, {kSlices, kRows, p.m}, Device::CUDA), true);
                          },
                          kSlices});
      versions.push_back(
          make_version<V5>("CUTLASS 64x32x128 ping-pong split-K 4", wp, xp, partsp, p.m, p.k, sms, st, kSlices));
    }

    // The reference: cuBLASLt on layer 0's weights, x = src.
    KF_CUDA(cudaMemcpyAsync(xp, srcp, src.view().nbytes(), cudaMemcpyDeviceToDevice, st));
    lt.run(t2(x, kRows, p.k), t2(ws[0], p.m, p.k), nullptr, t2(y, kRows, p.m), false);  // plans (tunes) too
    KF_CUDA(cudaStreamSynchronize(st));
    const std::vector<float> ref = output(y, parts, 0, nm);
    std::printf("%s [%d x %d]:\n", p.name, p.m, p.k);
    double lt_plain[2] = {0, 0};  // cuBLASLt's chain, unsplit and split
    for (size_t v = 0; v < versions.size(); ++v) {
      const Version& ver = versions[v];
      const bool cutlass = ver.name.rfind("CUTLASS", 0) == 0;
      const int split = ver.slices > 0;
      // Output against cuBLASLt's, launched plainly.
      KF_CUDA(cudaMemcpyAsync(xp, srcp, src.view().nbytes(), cudaMemcpyDeviceToDevice, st));
      ver.run(0, st, false);
      KF_CUDA(cudaStreamSynchronize(st));
      const std::vector<float> own = output(y, parts, ver.slices, nm);
      float max_ref = 0;
      const float diff = max_abs_diff(own, ref, &max_ref);
      const bool close = diff <= 0.02f * max_ref;
      // Does it wait? The producer triggers at once and writes x 30 us later.
      bool waits = false;
      if (cutlass) {
        cudaGraphExec_t g = capture(st, [&] {
          late_writer<<<32, 256, 0, st>>>(srcp, xp, kRows * p.k, kSpinUs);
          ver.run(0, st, true);
        });
        KF_CUDA(cudaMemsetAsync(xp, 0, x.view().nbytes(), st));
        KF_CUDA(cudaMemsetAsync(yp, 0, y.view().nbytes(), st));
        KF_CUDA(cudaMemsetAsync(partsp, 0, parts.view().nbytes(), st));
        KF_CUDA(cudaGraphLaunch(g, st));
        KF_CUDA(cudaStreamSynchronize(st));
        cudaGraphExecDestroy(g);
        waits = output(y, parts, ver.slices, nm) == own;
      }
      // The chains: y (or its partials) -> fold -> x -> GEMM, 28 times over
      // distinct weights; the first fold reads y0 (or zero partials).
      // mode 0: plain edges; 1: programmatic; 2: programmatic, weights prefetched by the fold.
      double us[3] = {0, 0, 0};
      std::vector<float> out[3];
      for (int mode = 0; mode < (cutlass && waits ? 3 : 1); ++mode) {
        const int programmatic = mode > 0;
        cudaGraphExec_t g = capture(st, [&] {
          for (int l = 0; l < kLayers; ++l) {
            const void* pre = mode == 2 ? wp[l] : nullptr;
            const size_t pre_bytes = mode == 2 ? ws[l].view().nbytes() : 0;
            if (split)
              kf::cuda::launch_pdl("fold_partials", fold_partials, kRows, 128, st, static_cast<const float*>(partsp),
                                   ver.slices, p.m, xp, p.k, programmatic, pre, pre_bytes);
            else
              kf::cuda::launch_pdl("fold", fold, kRows, 128, st, static_cast<const __nv_bfloat16*>(yp), p.m, xp, p.k,
                                   programmatic, pre, pre_bytes);
            ver.run(l, st, programmatic != 0);
          }
        });
        KF_CUDA(cudaMemcpyAsync(yp, y0p, y.view().nbytes(), cudaMemcpyDeviceToDevice, st));
        KF_CUDA(cudaMemsetAsync(partsp, 0, parts.view().nbytes(), st));
        KF_CUDA(cudaGraphLaunch(g, st));
        KF_CUDA(cudaStreamSynchronize(st));
        out[mode] = output(y, parts, ver.slices, nm);
        us[mode] = replay_ms(g, st, reps) * 1000 / kLayers;
        cudaGraphExecDestroy(g);
      }
      if (!cutlass) lt_plain[split] = us[0];
      const bool chains_agree = !(cutlass && waits) || (out[0] == out[1] && out[0] == out[2]);
      std::printf("  %-40s max|diff| %.3g of max|y| %.3g%s  %s  plain %6.2f us/pair", ver.name.c_str(), diff, max_ref,
                  close ? "" : " (FAIL)", cutlass ? (waits ? "waits  " : "NO WAIT") : "(ref)  ", us[0]);
      if (cutlass && waits)
        std::printf("  programmatic %6.2f (%+.2f vs cuBLASLt%s), + L2 prefetch %6.2f (%+.2f)%s", us[1],
                    us[1] - lt_plain[split], split ? " split-K" : "", us[2], us[2] - lt_plain[split],
                    chains_agree ? "" : " chains differ (FAIL)");
      std::printf("\n");
      ok = ok && close && chains_agree && (!cutlass || waits);
    }
  }
  std::printf("%s\n", ok ? "every CUTLASS version matches cuBLASLt and waits" : "FAIL");
  return ok ? 0 : 1;
}

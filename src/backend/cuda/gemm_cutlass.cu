// CUTLASS's sm90 GEMM for decode-sized batches (gemm_cutlass.h). Built only
// when CMake finds CUTLASS's headers (the PyPI wheel nvidia-cutlass), with
// CUTLASS_ENABLE_GDC_FOR_SM90 so the kernel waits for and triggers its
// programmatic neighbours. Chosen in dev/cuda/gemm_cutlass.cu against
// cuBLASLt and two other tilings (bench/results/h200_gemm_cutlass.txt).
#include "backend/cuda/gemm_cutlass.h"

#include "backend/cuda/kernels.h"

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace kf::cuda {

namespace {

// y [n, m] = x [n, k] · w [m, k]ᵀ as CUTLASS's D [m, n] = A [m, k] · B [k, n]
// (swap AB: the weights' rows fill the 64-row side of the tile, the batch's
// few rows its 32- or 64-column side): A = w row-major, B = xᵀ (x is K-major),
// D column-major [m, n] = y row-major [n, m]. Split K: batch entry s of L is
// the s-th k / L columns of w and x (both keep their row stride k) and its
// own fp32 D [n, m], n · m apart (Gemm::run_split_k's partials).
using Element = cutlass::bfloat16_t;
using Bf16 = cutlass::bfloat16_t;
using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
constexpr int kAlign = 8;  // bf16 elements: 16-byte TMA rows

// Tiles of 64 weight rows x kRows batch rows x 128 of K: 32 batch rows up to
// 32 rows, 64 above (each weight tile is then read once, not twice).
template <class ElementD, int kRows>
struct Decode {
  using TileShape = cute::Shape<cute::_64, cute::Int<kRows>, cute::_128>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::ColumnMajor,
      16 / sizeof(ElementD), ElementD, cutlass::layout::ColumnMajor, 16 / sizeof(ElementD),
      cutlass::epilogue::TmaWarpSpecialized>::CollectiveOp;
  // Ping-pong: two consumer warp groups take alternate tiles, so one's
  // epilogue overlaps the other's mainloop; the stages fill what the
  // epilogue leaves of shared memory.
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Element, cutlass::layout::RowMajor, kAlign, Element,
      cutlass::layout::ColumnMajor, kAlign, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedPingpong>::CollectiveOp;
  // Persistent tiles (one CTA per SM at most, looping over the output tiles).
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue, void>;
  using Adapter = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static cudaError_t prepare() {
    constexpr int smem = Kernel::SharedStorageSize;
    if (smem < (48 << 10)) return cudaSuccess;
    return cudaFuncSetAttribute(cutlass::device_kernel<Kernel>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  }

  static const char* run(const void* x, const void* w, void* y, int n, int m, int k, int slices, int num_sms,
                         cudaStream_t st) {
    const int ks = k / slices;
    typename Kernel::StrideA sa{};  // w [m, k]: row stride k; entry s starts s * ks in
    cute::get<0>(sa) = k;
    cute::get<2>(sa) = ks;
    typename Kernel::StrideB sb{};  // x [n, k]: the same
    cute::get<0>(sb) = k;
    cute::get<2>(sb) = ks;
    typename Kernel::StrideD sd{};  // D column-major [m, n]: column stride m; entries n * m apart
    cute::get<1>(sd) = m;
    cute::get<2>(sd) = int64_t(n) * m;
    cutlass::KernelHardwareInfo hw;  // device_id is read only when sm_count is not given
    hw.sm_count = num_sms;
    const typename Adapter::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {m, n, ks, slices},
        {static_cast<const Element*>(w), sa, static_cast<const Element*>(x), sb},
        {{1.f, 0.f}, nullptr, sd, static_cast<ElementD*>(y), sd},
        hw};
    if (Adapter::can_implement(args) != cutlass::Status::kSuccess) return "CUTLASS cannot implement the shape";
    // No workspace: the persistent scheduler without stream-K needs none.
    // The TMA descriptors are built here, so each launch carries its own
    // pointers (a graph records them by value).
    if (Adapter::get_workspace_size(args) != 0) return "CUTLASS asked for a workspace";
    typename Kernel::Params params = Kernel::to_underlying_arguments(args, nullptr);
    if (Adapter::run(params, st, nullptr, /*launch_with_pdl=*/true) != cutlass::Status::kSuccess) {
      const cudaError_t e = cudaGetLastError();
      return e != cudaSuccess ? cudaGetErrorString(e) : "the CUTLASS launch failed";
    }
    return nullptr;
  }
};

}  // namespace

bool cutlass_gemm_built() { return true; }

bool cutlass_gemm_supported(int64_t m, int64_t n, int64_t k, int slices, const void* x, const void* w,
                            const void* y) {
  return n >= 1 && n <= kCutlassMaxRows && slices >= 1 && m % kAlign == 0 && k % (kAlign * slices) == 0 &&
         m < (int64_t(1) << 31) && k < (int64_t(1) << 31) && aligned16({x, w, y});
}

cudaError_t cutlass_gemm_prepare() {
  for (cudaError_t e : {Decode<Bf16, 32>::prepare(), Decode<float, 32>::prepare(), Decode<Bf16, 64>::prepare(),
                        Decode<float, 64>::prepare()})
    if (e != cudaSuccess) return e;
  return cudaSuccess;
}

const char* cutlass_gemm(const void* x, const void* w, void* y, int64_t n, int64_t m, int64_t k, int num_sms,
                         cudaStream_t st) {
  auto run = n <= 32 ? Decode<Bf16, 32>::run : Decode<Bf16, 64>::run;
  return run(x, w, y, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), 1, num_sms, st);
}

const char* cutlass_gemm_split_k(const void* x, const void* w, float* partials, int64_t n, int64_t m, int64_t k,
                                 int slices, int num_sms, cudaStream_t st) {
  auto run = n <= 32 ? Decode<float, 32>::run : Decode<float, 64>::run;
  return run(x, w, partials, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), slices, num_sms, st);
}

}  // namespace kf::cuda

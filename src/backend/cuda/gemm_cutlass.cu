// CUTLASS's sm90 GEMM for decode-sized batches (gemm_cutlass.h). Built only
// when CMake finds CUTLASS's headers (the PyPI wheel nvidia-cutlass), with
// CUTLASS_ENABLE_GDC_FOR_SM90 so the kernel waits for and triggers its
// programmatic neighbours. Chosen in dev/cuda/gemm_cutlass.cu against
// cuBLASLt and two other tilings (bench/results/h200_gemm_cutlass.txt).
#include "backend/cuda/gemm_cutlass.h"

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/detail.hpp"
#include "cutlass/epilogue/thread/linear_combination.h"
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

// silu(gate) · up as the epilogue of the gate|up GEMM, whose weight rows
// are interleaved by 8 (interleave_gate_up): rows 16t .. 16t+7 are the gate
// rows of features 8t .. 8t+7, rows 16t+8 .. 16t+15 their up rows. A
// Hopper warp-group MMA gives each thread, for each column it holds, rows r
// and r + 8 of a 16-row band (values (2 columns, 2 row halves, N / 8), the
// middle mode the half), so one thread holds a feature's gate and up values
// and writes y [n, m / 2] itself: no shared memory, no second kernel. Each
// value is rounded to bf16 first, as the GEMM's bf16 output is before
// silu_mul reads it, so the two paths give the same bits. The interface is
// DefaultEpilogue's, wrapped below for the warp-specialized kernel; the types
// only GemmUniversalAdapter reads (C, the thread op) are placeholders.
struct SiluMulEpilogue {
  using ElementC = Bf16;
  using ElementD = Bf16;
  using StrideC = cutlass::gemm::TagToStrideC_t<cutlass::layout::ColumnMajor>;
  using StrideD = StrideC;
  using ThreadEpilogueOp = cutlass::epilogue::thread::LinearCombination<Bf16, 1, float, float>;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;
  struct SharedStorage {};
  struct Arguments {
    Bf16* y = nullptr;  // [n, ldy]: the first m / 2 columns of each row
    int64_t ldy = 0;
  };
  using Params = Arguments;

  template <class Problem>
  static constexpr Params to_underlying_arguments(Problem const&, Arguments const& args, void*) {
    return args;
  }
  template <class Problem>
  static size_t get_workspace_size(Problem const&, Arguments const&) {
    return 0;
  }
  template <class Problem>
  static cutlass::Status initialize_workspace(Problem const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  template <class Problem>
  static bool can_implement(Problem const& problem, Arguments const& args) {
    return cute::get<0>(problem) % 16 == 0 && cute::get<3>(problem) == 1 && args.ldy >= cute::get<0>(problem) / 2;
  }

  CUTLASS_HOST_DEVICE SiluMulEpilogue(Params const& params, SharedStorage const& = SharedStorage()) : params_(params) {}

  template <class ProblemMNKL, class TileMNK, class TileCoordMNKL, class AccEngine, class AccLayout, class TiledMma,
            class Residue>
  CUTLASS_DEVICE void operator()(ProblemMNKL problem, TileMNK tile, TileCoordMNKL tile_coord,
                                 cute::Tensor<AccEngine, AccLayout> const& acc,  // ((2, 2, N/8), MMA_M, MMA_N)
                                 TiledMma tiled_mma, Residue, int thread_idx, char*) {
    using namespace cute;
    static_assert(rank<0>(AccLayout{}) == 3 && size<0, 1>(AccLayout{}) == 2, "not a Hopper MMA accumulator");
    static_assert(size<0>(TileMNK{}) % 16 == 0, "the tile must hold whole 16-row bands");
    // (row, column) within the tile of each accumulator the thread holds
    Tensor at = tiled_mma.get_thread_slice(thread_idx)
                    .partition_C(make_identity_tensor(make_shape(size<0>(tile), size<1>(tile))));
    const int row0 = static_cast<int>(get<0>(tile_coord)) * size<0>(tile);
    const int col0 = static_cast<int>(get<1>(tile_coord)) * size<1>(tile);
    const int n = static_cast<int>(get<1>(problem));
    CUTLASS_PRAGMA_UNROLL
    for (int mm = 0; mm < size<1>(acc); ++mm) {
      CUTLASS_PRAGMA_UNROLL
      for (int nn = 0; nn < size<2>(acc); ++nn) {
        CUTLASS_PRAGMA_UNROLL
        for (int v2 = 0; v2 < size<0, 2>(acc); ++v2) {
          CUTLASS_PRAGMA_UNROLL
          for (int v0 = 0; v0 < size<0, 0>(acc); ++v0) {
            const auto gate_at = make_coord(make_coord(v0, 0, v2), mm, nn);
            const auto up_at = make_coord(make_coord(v0, 1, v2), mm, nn);
            const int r = row0 + static_cast<int>(get<0>(at(gate_at)));
            const int c = col0 + static_cast<int>(get<1>(at(gate_at)));
            if (c >= n) continue;
            const float g = bf(to_bf(acc(gate_at))), u = bf(to_bf(acc(up_at)));
            const bf16_t out = to_bf(silu(g) * u);
            reinterpret_cast<bf16_t*>(params_.y)[int64_t(c) * params_.ldy + (r >> 4) * 8 + (r & 7)] = out;
          }
        }
      }
    }
  }

 private:
  Params params_;
};

// Tiles of 64 weight rows x kRows batch rows x 128 of K: 32 batch rows up to
// 32 rows, 64 above (each weight tile is then read once, not twice).
template <int kRows>
using DecodeTile = cute::Shape<cute::_64, cute::Int<kRows>, cute::_128>;
// The plain epilogue: D through shared memory by TMA stores.
template <class ElementD, int kRows>
using TmaEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, DecodeTile<kRows>, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, cutlass::layout::ColumnMajor,
    16 / sizeof(ElementD), ElementD, cutlass::layout::ColumnMajor, 16 / sizeof(ElementD),
    cutlass::epilogue::TmaWarpSpecialized>::CollectiveOp;
using SiluMul = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<SiluMulEpilogue>;

template <class Epilogue, int kRows>
struct Decode {
  using TileShape = DecodeTile<kRows>;
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

  static const char* run(const void* x, const void* w, int n, int m, int k, int slices, int num_sms,
                         typename Epilogue::Arguments epilogue, cudaStream_t st) {
    const int ks = k / slices;
    typename Kernel::StrideA sa{};  // w [m, k]: row stride k; entry s starts s * ks in
    cute::get<0>(sa) = k;
    cute::get<2>(sa) = ks;
    typename Kernel::StrideB sb{};  // x [n, k]: the same
    cute::get<0>(sb) = k;
    cute::get<2>(sb) = ks;
    cutlass::KernelHardwareInfo hw;  // device_id is read only when sm_count is not given
    hw.sm_count = num_sms;
    const typename Adapter::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                           {m, n, ks, slices},
                                           {static_cast<const Element*>(w), sa, static_cast<const Element*>(x), sb},
                                           epilogue,
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

// y (bf16 [n, m], or fp32 partials [slices, n, m]) through the TMA epilogue:
// D column-major [m, n] is y row-major [n, m]; entries n · m apart.
template <class ElementD, int kRows>
const char* run_plain(const void* x, const void* w, void* y, int n, int m, int k, int slices, int num_sms,
                      cudaStream_t st) {
  using Epi = TmaEpilogue<ElementD, kRows>;
  typename Epi::StrideD sd{};  // column stride m; entries n * m apart
  cute::get<1>(sd) = m;
  cute::get<2>(sd) = int64_t(n) * m;
  return Decode<Epi, kRows>::run(x, w, n, m, k, slices, num_sms,
                                 {{1.f, 0.f}, nullptr, sd, static_cast<ElementD*>(y), sd}, st);
}

}  // namespace

bool cutlass_gemm_built() { return true; }

bool cutlass_gemm_supported(int64_t m, int64_t n, int64_t k, int slices, const void* x, const void* w,
                            const void* y) {
  return n >= 1 && n <= kCutlassMaxRows && slices >= 1 && m % kAlign == 0 && k % (kAlign * slices) == 0 &&
         m < (int64_t(1) << 31) && k < (int64_t(1) << 31) && aligned16({x, w, y});
}

cudaError_t cutlass_gemm_prepare() {
  for (cudaError_t e : {Decode<TmaEpilogue<Bf16, 32>, 32>::prepare(), Decode<TmaEpilogue<float, 32>, 32>::prepare(),
                        Decode<TmaEpilogue<Bf16, 64>, 64>::prepare(), Decode<TmaEpilogue<float, 64>, 64>::prepare(),
                        Decode<SiluMul, 32>::prepare(), Decode<SiluMul, 64>::prepare()})
    if (e != cudaSuccess) return e;
  return cudaSuccess;
}

const char* cutlass_gemm(const void* x, const void* w, void* y, int64_t n, int64_t m, int64_t k, int num_sms,
                         cudaStream_t st) {
  auto run = n <= 32 ? run_plain<Bf16, 32> : run_plain<Bf16, 64>;
  return run(x, w, y, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), 1, num_sms, st);
}

const char* cutlass_gemm_split_k(const void* x, const void* w, float* partials, int64_t n, int64_t m, int64_t k,
                                 int slices, int num_sms, cudaStream_t st) {
  auto run = n <= 32 ? run_plain<float, 32> : run_plain<float, 64>;
  return run(x, w, partials, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), slices, num_sms, st);
}

const char* cutlass_gemm_silu_mul(const void* x, const void* w, void* y, int64_t n, int64_t m, int64_t k,
                                  int num_sms, cudaStream_t st) {
  const SiluMulEpilogue::Arguments epilogue{static_cast<Bf16*>(y), m / 2};
  auto run = n <= 32 ? Decode<SiluMul, 32>::run : Decode<SiluMul, 64>::run;
  return run(x, w, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), 1, num_sms, epilogue, st);
}

}  // namespace kf::cuda

#include "backend/cpu/matmul_kernels.h"

#include <cstdlib>
#include <string>

#include "util/error.h"

namespace kf::cpu {

ActFormat act_format(DType weight) {
  switch (weight) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q8_0x4:
    case DType::Q4_0x4:
    case DType::Q4_1x4: return ActFormat::Q8_32;
    case DType::Q4_K:
    case DType::Q6_K: return ActFormat::Q8_256;
    default: return ActFormat::F32;
  }
}

int64_t act_scale_floats(ActFormat f, int64_t k) {
  switch (f) {
    case ActFormat::Q8_32: return 2 * (k / kQ8Block32);
    case ActFormat::Q8_256: return k / kQ8Block256;
    default: return 0;
  }
}

int64_t act_sum_count(ActFormat f, int64_t k) {
  switch (f) {
    case ActFormat::Q8_32: return k / kQ8Block32;
    case ActFormat::Q8_256: return k / 16;
    default: return 0;
  }
}

TileFn MatmulKernels::tile(DType weight) const {
  switch (weight) {
    case DType::F32: return f32;
    case DType::F16: return f16;
    case DType::BF16: return bf16;
    case DType::Q8_0: return q8_0;
    case DType::Q4_0: return q4_0;
    case DType::Q4_1: return q4_1;
    case DType::Q4_K: return q4_k;
    case DType::Q6_K: return q6_k;
    case DType::Q8_0x4: return q8_0x4;
    case DType::Q4_0x4: return q4_0x4;
    case DType::Q4_1x4: return q4_1x4;
    default: return nullptr;
  }
}

const MatmulKernels& best_kernels() {
  // A pointer, not a reference: GCC 14 flags a reference bound to a lambda's result as dangling.
  static const MatmulKernels* const best = []() -> const MatmulKernels* {
    const char* env = std::getenv("KINFER_CPU_ISA");
    const std::string want = env ? env : "";
    KF_CHECK(want.empty() || want == "portable" || want == "avx2",
             "KINFER_CPU_ISA={}: expected 'portable' or 'avx2'", want);
    const MatmulKernels* avx2 = avx2_kernels();
    KF_CHECK(want != "avx2" || avx2, "KINFER_CPU_ISA=avx2, but this CPU lacks AVX2, FMA or F16C");
    if (avx2 && want != "portable") return avx2;
    return &portable_kernels();
  }();
  return *best;
}

bool has_matmul_kernel(DType t) { return best_kernels().tile(t) != nullptr; }

}  // namespace kf::cpu

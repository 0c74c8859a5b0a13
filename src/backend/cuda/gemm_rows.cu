// The backend's entry to the decode-batch GEMM of gemm_rows.cuh.
#include "backend/cuda/gemm_rows.cuh"

#include "util/error.h"

namespace kf::cuda {

bool gemm_rows_fits(int n, int m, int k) {
  return n >= 1 && n <= kGemmRowsMaxRows && m <= 2048 && k % 32 == 0 && k >= 32 * 64;
}

void gemm_rows_decode(const bf16_t* x, const bf16_t* w, const bf16_t* bias, void* y, bool y_f32, int n, int m, int k,
                      cudaStream_t st) {
  const GemmRowsConfig cfg{1, 8, 8};
  KF_CHECK(gemm_rows_valid(cfg, n, m, k), "gemm_rows: {} rows x [{}, {}] not supported", n, m, k);
  check(gemm_rows(cfg, x, w, bias, y, y_f32, n, m, k, st), "gemm_rows");
}

}  // namespace kf::cuda

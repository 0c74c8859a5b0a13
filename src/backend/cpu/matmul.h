// The CPU backend's matmul: y = x w^T (+ bias) for a weight in any format that
// has kernels (matmul_kernels.h). It quantises the rows of x once per call into
// a grow-only workspace (the activation format of w's dtype), then splits the
// output into tiles of rows x columns that the thread pool hands out on
// demand. Every y[r, c] is computed by the same kernel arithmetic whatever the
// batch, the tile or the thread: batch-invariant.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/cpu/matmul_kernels.h"
#include "util/tensor.h"
#include "util/thread_pool.h"

namespace kf::cpu {

class Matmul {
 public:
  Matmul(ThreadPool& pool, const MatmulKernels& kernels) : pool_(pool), kernels_(kernels) {}
  const MatmulKernels& kernels() const { return kernels_; }

  // x [n, k] F32, w [out, k] (w.dtype), bias [out] F32 or null, y [n, out] F32:
  // contiguous CPU tensors whose shapes the caller has checked.
  void run(const Tensor& x, const Tensor& w, const float* bias, const Tensor& y);

 private:
  // with_pieces: also the pieces interleaved weights read (ActRows::pieces).
  ActRows quantize(const float* x, int64_t n, int64_t k, ActFormat f, bool with_pieces);

  ThreadPool& pool_;
  const MatmulKernels& kernels_;
  // Quantised activations (grow-only, so steady-state steps do not allocate).
  std::vector<int8_t> q_;
  std::vector<float> scale_;
  std::vector<int16_t> sums_;
  std::vector<int8_t> pieces_;
};

}  // namespace kf::cpu

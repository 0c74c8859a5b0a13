// CpuBackend: the F32 reference implementation of Backend (backend/backend.h).
//
// Batch invariance (needed so a sample's text does not depend on batch size or
// preemption, issue 5): every op computes each output row with an arithmetic
// sequence that depends only on that row's inputs, never on how many rows are
// in the call or how they are split over threads. In particular matmul's dot
// products use 4 fixed lanes over `in` (lane l sums the products with index
// = l mod 4, in increasing order), then ((l0 + l1) + (l2 + l3)), then the
// tail, then the bias: a row gives the same bits alone (decode), inside any
// decode batch, or inside any prefill chunk.
//
// The OpenBLAS sgemm path (CpuOptions::use_blas, or env KINFER_CPU_BLAS=1) is
// only for speed comparison: its reduction order depends on the matrix sizes,
// so it is NOT batch-invariant.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace kf {

struct CpuOptions {
  int n_threads = 0;      // 0 = all cores
  bool use_blas = false;  // OpenBLAS sgemm for matmul (fast for prefill, not batch-invariant)
};

// Reads KINFER_CPU_BLAS=1 into use_blas when the option is not set.
std::unique_ptr<Backend> make_cpu_backend(const CpuOptions& opt);

}  // namespace kf

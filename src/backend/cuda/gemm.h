// GEMMs for CudaBackend: y[n, m] = x[n, k] · w[m, k]ᵀ (+ bias), bf16
// operands, fp32 accumulation, y bf16 or f32. Decode-sized batches without a
// bias (bf16 y, or fp32 split-K partials) run CUTLASS's kernel
// (gemm_cutlass.h), which waits under programmatic launch; the rest run
// cuBLASLt's, with one cached plan per shape (descriptors and the chosen
// algorithm), so a decode step replays the same kernels, also inside CUDA
// graphs.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <tuple>

#include "backend/backend.h"

namespace kf::cuda {

struct GemmPlan;

class Gemm {
 public:
  // tune: the first call of a shape times cuBLASLt's top candidates (cold L2,
  // as in a real step) and keeps the fastest; otherwise the first candidate.
  // cutlass: use CUTLASS's kernel where it applies (when this build has it);
  // its persistent grid takes at most num_sms CTAs (the stream's device's).
  Gemm(Allocator& device_memory, cudaStream_t stream, int num_sms, bool tune, bool cutlass);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Shapes are checked by the caller. capturing: a graph is being recorded
  // (a new shape is then planned without timing).
  void run(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y, bool capturing);
  // The K dimension in `slices` equal parts, one batch entry each (a strided
  // batched GEMM): partials[s] = x[:, ks] · w[:, ks]ᵀ for the s-th part ks,
  // partials F32 [slices, n, m]; their sum is x · wᵀ. Needs k % (8 · slices) == 0.
  void run_split_k(const Tensor& x, const Tensor& w, int slices, const Tensor& partials, bool capturing);
  // An MLP's gate|up GEMM with silu_mul in its epilogue (CUTLASS's kernel):
  // w [2f, k] holds the gate and up rows interleaved by 8
  // (interleave_gate_up), ffn [n, f] = silu(gate) · up. Only where
  // runs_silu_mul(); elsewhere the caller runs run() and silu_mul_interleaved.
  bool runs_silu_mul(const Tensor& x, const Tensor& w, const Tensor& ffn) const;
  void run_silu_mul(const Tensor& x, const Tensor& w, const Tensor& ffn);

 private:
  // Whether run() (slices 1) or run_split_k() takes CUTLASS's kernel for these operands.
  bool runs_cutlass(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y, int slices) const;
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, int, bool, int>;
  // run() and run_split_k(): plan (cached) and launch, or fail naming the shape.
  void execute(const Tensor& x, const Tensor& w, const Tensor* bias, int slices, const Tensor& y, bool capturing);
  GemmPlan& plan(int64_t m, int64_t n, int64_t k, const Tensor* bias, int align, int slices, const Tensor& x,
                 const Tensor& w, const Tensor& y, bool capturing);
  cublasStatus_t launch(GemmPlan& p, const Tensor* bias, const Tensor& x, const Tensor& w, const Tensor& y,
                        const cublasLtMatmulAlgo_t& algo);
  void time_candidates(GemmPlan& p, const cublasLtMatmulHeuristicResult_t* res, int found, const Tensor* bias,
                       const Tensor& x, const Tensor& w, const Tensor& y);

  Allocator& mem_;
  cudaStream_t stream_;
  bool tune_;
  bool cutlass_;  // CUTLASS's kernel is built, prepared on this device, and wanted
  int num_sms_;
  cublasLtHandle_t lt_ = nullptr;
  Buffer workspace_;
  std::map<Key, std::unique_ptr<GemmPlan>> plans_;
};

}  // namespace kf::cuda

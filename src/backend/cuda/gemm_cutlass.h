// Decode-sized GEMMs from CUTLASS's Hopper kernels (gemm_cutlass.cu), for
// kf::cuda::Gemm: y [n, m] = x [n, k] · w [m, k]ᵀ, bf16 in and out (or fp32
// split-K partials), fp32 accumulation. Unlike cuBLASLt's kernels, these wait for their producer
// (griddepcontrol.wait in the load warp, before the first load) and trigger
// their dependents at their last tile, so they are launched with programmatic
// dependent launch: the launch and prologue of each GEMM in a decode step
// overlap the kernel before it (docs/cuda.md, "Decode GEMMs from CUTLASS").
// Plain C++ here so gemm.cpp does not see CUTLASS's headers. Built when
// CMake finds CUTLASS (KINFER_HAVE_CUTLASS); otherwise cutlass_gemm_built()
// is false and every GEMM is cuBLASLt's.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace kf::cuda {

// Whether this build has the kernel.
bool cutlass_gemm_built();
// Rows (n) up to which Gemm runs CUTLASS's kernel (tiles of 32 batch rows up
// to 32 rows, of 64 above).
constexpr int64_t kCutlassMaxRows = 64;
// Whether the kernel takes the shape: m and k / slices multiples of 8 (TMA
// rows of 16 bytes), every pointer 16-byte aligned, n in [1, kCutlassMaxRows].
bool cutlass_gemm_supported(int64_t m, int64_t n, int64_t k, int slices, const void* x, const void* w,
                            const void* y);
// Once per device, outside graph capture: lets the kernel use its shared
// memory (the 48 KB default is too small).
cudaError_t cutlass_gemm_prepare();
// Launches with programmatic dependent launch on st. Returns null, or what
// failed (the caller names the shape).
const char* cutlass_gemm(const void* x, const void* w, void* y, int64_t n, int64_t m, int64_t k, int num_sms,
                         cudaStream_t st);
// The K dimension in `slices` equal parts, one batch entry each: partials
// [slices, n, m] fp32 (Gemm::run_split_k), launched the same way.
const char* cutlass_gemm_split_k(const void* x, const void* w, float* partials, int64_t n, int64_t m, int64_t k,
                                 int slices, int num_sms, cudaStream_t st);

// The gate|up GEMM of an MLP with silu_mul in its epilogue: w [m, k] holds
// the gate and up rows interleaved by 8 (interleave_gate_up), y [n, m / 2] =
// silu(gate) · up, the same bits as this GEMM's bf16 output followed by
// silu_mul_interleaved. Needs m % 16 == 0 (and what cutlass_gemm_supported
// asks); launched the same way.
const char* cutlass_gemm_silu_mul(const void* x, const void* w, void* y, int64_t n, int64_t m, int64_t k,
                                  int num_sms, cudaStream_t st);

}  // namespace kf::cuda

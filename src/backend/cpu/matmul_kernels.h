// The CPU matmul kernels: y = x w^T for weights in their own storage format
// (F32, F16, BF16, and the GGUF block formats Q8_0, Q4_0, Q4_1, Q4_K, Q6_K),
// one set of kernels per instruction-set level, picked at run time.
//
// Activations. Float weights read x as F32. Block-quantised weights read x
// quantised per row, block by block, as the format's reference dot product
// does (ggml's vec_dot_type):
//   Q8_32  (for Q8_0, Q4_0, Q4_1): blocks of 32; d = amax/127 rounded to f16,
//          q = round-half-even(x * 127/amax), s = d·Σq rounded to f16 (Q8_1's s)
//   Q8_256 (for Q4_K, Q6_K): blocks of 256; the value of largest magnitude
//          maps to -127, d = 1/scale in f32, plus the sum of q per 16 (Q8_K)
// so a block's dot is an exact integer sum times the two scales.
//
// Batch invariance. A kernel computes every y[r, c] with one fixed sequence of
// operations over the blocks of row r of x and row c of w, whatever tile,
// batch or thread it is computed in. (The AVX2 and portable levels differ
// from each other in the last bits: the float sums are grouped differently.)
#pragma once
#include <cstddef>
#include <cstdint>

#include "util/tensor.h"

namespace kf::cpu {

// Elements per activation block of each activation format.
constexpr int kQ8Block32 = 32;
constexpr int kQ8Block256 = 256;

enum class ActFormat : uint8_t { F32, Q8_32, Q8_256 };
// The activation format a weight dtype's kernel reads (F32 for float weights).
ActFormat act_format(DType weight);

// n rows of x [n, k] as a kernel reads them: the F32 rows, or their quantised form.
struct ActRows {
  int64_t k = 0;              // elements per row
  const float* f32 = nullptr;  // [n, k]                              ActFormat::F32
  const int8_t* q = nullptr;   // [n, k]                              quantised values
  const float* scale = nullptr;  // Q8_32: [n, k/32, 2] (d, s); Q8_256: [n, k/256] d
  const int16_t* sums = nullptr;  // Q8_32: [n, k/32] Σq per block; Q8_256: [n, k/16] Σq per 16
  // For interleaved weights (packed_weights.h): [n, k/4, 16] piece p of a row
  // is q[4p .. 4p+3] repeated 4 times.
  const int8_t* pieces = nullptr;
};

// Floats and int16s of quantisation data per row of k elements in format f.
int64_t act_scale_floats(ActFormat f, int64_t k);
int64_t act_sum_count(ActFormat f, int64_t k);

// Weight rows [c0, c1) of w (row c at w + c * row_bytes, dtype's layout, k elements).
struct WeightRows {
  const uint8_t* data = nullptr;
  size_t row_bytes = 0;
  int64_t k = 0;
};

// y[r * ldy + c] = x_r . w_c (+ bias[c]) for rows r in [r0, r1) of x and c in [c0, c1).
using TileFn = void (*)(const ActRows& x, int64_t r0, int64_t r1, const WeightRows& w, int64_t c0,
                        int64_t c1, const float* bias, float* y, int64_t ldy);
// Quantises one row x[k] into q[k], scale and sums (the layouts of ActRows).
using QuantizeFn = void (*)(const float* x, int64_t k, int8_t* q, float* scale, int16_t* sums);
// One row's quantised values q[k] -> its pieces [k/4, 16] (ActRows::pieces).
using SpreadFn = void (*)(const int8_t* q, int64_t k, int8_t* pieces);

struct MatmulKernels {
  const char* isa = "";                // "avx2" or "portable"
  QuantizeFn quantize_q8_32 = nullptr;
  QuantizeFn quantize_q8_256 = nullptr;
  TileFn f32 = nullptr, f16 = nullptr, bf16 = nullptr;
  TileFn q8_0 = nullptr, q4_0 = nullptr, q4_1 = nullptr, q4_k = nullptr, q6_k = nullptr;
  // Interleaved weights (packed_weights.h), with pieces of x: AVX2 only.
  SpreadFn spread = nullptr;
  TileFn q8_0x4 = nullptr, q4_0x4 = nullptr, q4_1x4 = nullptr;

  TileFn tile(DType weight) const;  // null when the dtype has no kernel
  QuantizeFn quantize(ActFormat f) const { return f == ActFormat::Q8_32 ? quantize_q8_32 : quantize_q8_256; }
};

const MatmulKernels& portable_kernels();
// The AVX2+FMA+F16C kernels, or null when this CPU (or this build) lacks them.
const MatmulKernels* avx2_kernels();
// The best level this CPU runs; KINFER_CPU_ISA=portable forces the portable one.
const MatmulKernels& best_kernels();

// Whether the best kernels multiply weights of dtype t.
bool has_matmul_kernel(DType t);

}  // namespace kf::cpu

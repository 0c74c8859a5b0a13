// Dequantisation of the GGUF storage types to f32 (and bf16), following the
// block layouts of the GGUF/ggml format definition:
//   Q8_0 (32): f16 d, i8 q[32]                      x = d·q
//   Q4_0 (32): f16 d, u8 qs[16]                     x = d·(nibble − 8)
//   Q4_1 (32): f16 d, f16 m, u8 qs[16]              x = d·nibble + m
//   (low nibbles are elements 0..15, high nibbles 16..31)
//   Q4_K (256): f16 d, f16 dmin, u8 scales[12] (8 × 6-bit scale + 6-bit min),
//               u8 qs[128]                          x = d·sc·nibble − dmin·m
//   Q6_K (256): u8 ql[128], u8 qh[64], i8 scales[16], f16 d
//                                                   x = d·scale·(q6 − 32)
// In util so that the loader (io) and the CPU backend (embedding rows of a
// quantised table) share it; it is also the reference the CPU backend's
// quantised matmul kernels are tested against.
#pragma once
#include <cstdint>

#include "util/tensor.h"

namespace kf {

// n elements of type t at src -> f32 at dst. n must be a multiple of
// dtype_block(t). Supports F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K.
void dequantize(DType t, const void* src, float* dst, int64_t n);
// Same, rounded to bf16 (round to nearest even); BF16 input is copied as is.
void dequantize_bf16(DType t, const void* src, uint16_t* dst, int64_t n);
// Whether dequantize() handles t.
bool can_dequantize(DType t);

}  // namespace kf

// Vector loops of the CPU backend besides matmul: the inner loops of paged
// attention (attention.cpp) over one chunk of keys of one page (query-key
// logits, value accumulation) and SiLU-gated products, at the best
// instruction-set level this CPU runs (AVX2+FMA, else portable; the same
// choice as the matmul kernels, KINFER_CPU_ISA=portable forces portable).
// Each output depends only on its inputs, in a fixed order: batch-invariant.
#pragma once
#include <cstdint>

namespace kf::cpu {

struct VectorKernels {
  const char* isa = "";
  // Query-key logits of one query-head group against n keys:
  // out[g * ld + j] = scale * (q_g . k_j) for heads g < heads, keys j < n,
  // q_g = q + g * d, k_j = k + j * d.
  void (*logits)(const float* q, int heads, const float* k, int n, int d, float scale, float* out, int ld) = nullptr;
  // Value accumulation of the group: acc_g[i] = acc_g[i] * rescale[g] +
  // sum_j w[g * ld + j] * v_j[i] for i < d, keys j < n in order, acc_g = acc + g * d, v_j = v + j * d.
  void (*accumulate)(float* acc, int heads, const float* rescale, const float* w, int ld, const float* v, int n,
                     int d) = nullptr;
  // out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for i < n.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n) = nullptr;
};

const VectorKernels& portable_vector_kernels();
const VectorKernels* avx2_vector_kernels();  // null without AVX2/FMA
const VectorKernels& best_vector_kernels();

}  // namespace kf::cpu

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
  // out[j] = scale * (q . k_j) for keys j < n, k_j = k + j * d.
  void (*logits)(const float* q, const float* k, int n, int d, float scale, float* out) = nullptr;
  // acc[i] = acc[i] * rescale + sum_j w[j] * v_j[i] for i < d, keys j < n in
  // order, v_j = v + j * d.
  void (*accumulate)(float* acc, float rescale, const float* w, const float* v, int n, int d) = nullptr;
  // out[i] = silu(gate[i]) * up[i] = gate[i] / (1 + exp(-gate[i])) * up[i] for i < n.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n) = nullptr;
};

const VectorKernels& portable_vector_kernels();
const VectorKernels* avx2_vector_kernels();  // null without AVX2/FMA
const VectorKernels& best_vector_kernels();

}  // namespace kf::cpu

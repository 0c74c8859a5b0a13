// The inner loops of CPU paged attention (attention.cpp) over one chunk of
// keys of one page: query-key logits and the value accumulation, at the best
// instruction-set level this CPU runs (AVX2+FMA, else portable; the same
// choice as the matmul kernels, KINFER_CPU_ISA=portable forces portable).
// Each output depends only on its inputs, in a fixed order: batch-invariant.
#pragma once

namespace kf::cpu {

struct AttnKernels {
  const char* isa = "";
  // out[j] = scale * (q . k_j) for keys j < n, k_j = k + j * d.
  void (*logits)(const float* q, const float* k, int n, int d, float scale, float* out) = nullptr;
  // acc[i] = acc[i] * rescale + sum_j w[j] * v_j[i] for i < d, keys j < n in
  // order, v_j = v + j * d.
  void (*accumulate)(float* acc, float rescale, const float* w, const float* v, int n, int d) = nullptr;
};

const AttnKernels& portable_attn_kernels();
const AttnKernels* avx2_attn_kernels();  // null without AVX2/FMA
const AttnKernels& best_attn_kernels();

}  // namespace kf::cpu

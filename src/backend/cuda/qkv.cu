// Backend::qkv_rope_write on the GPU: the attention block's input stage in
// one launch (plus the page summaries, unless the fused sparse attention
// kernel writes them: QkvArgs::summaries), from the merged q|k|v projection.
// One warp per (row, head), the work of qkv.cuh's qkv_head.
#include <cstring>

#include "backend/cuda/qkv.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void qkv_rope_write_kernel(QkvParams p, RopeFreqs fr) {
  griddep_wait();
  __shared__ float buf[kWarpsPerBlock][kQkvMaxHeadDim];
  const int warp = threadIdx.x / 32;
  const int head = blockIdx.y * kWarpsPerBlock + warp;  // 0..Hq-1 q, then Hkv k, then Hkv v
  if (head >= p.n_heads + 2 * p.kv.n_kv_heads) return;
  qkv_head(p, fr, blockIdx.x, head, buf[warp]);
}

}  // namespace

QkvParams qkv_params(const QkvArgs& a, RopeFreqs* freqs) {
  const int half = a.rotary_dim / 2;
  KF_CHECK(a.kv.head_dim <= kQkvMaxHeadDim, "qkv_rope_write: head_dim {} above {}", a.kv.head_dim, kQkvMaxHeadDim);
  KF_CHECK(half >= 1 && half <= kMaxRopeHalf && a.rotary_dim % 2 == 0 && a.rotary_dim <= a.kv.head_dim,
           "qkv_rope_write: rotary_dim {} unsupported for head_dim {}", a.rotary_dim, a.kv.head_dim);
  KF_CHECK(a.inv_freq_host != nullptr, "qkv_rope_write: RopeParams.inv_freq is null");
  *freqs = RopeFreqs{};
  std::memcpy(freqs->f, a.inv_freq_host, sizeof(float) * half);
  return QkvParams{a.qkv, a.q_norm, a.k_norm, a.pos, a.slots, a.q_out, a.kv, a.eps, a.n, a.n_heads, a.kv.head_dim,
                   half};
}

void qkv_rope_write(const QkvArgs& a, cudaStream_t st) {
  RopeFreqs fr;
  const QkvParams p = qkv_params(a, &fr);
  if (a.n == 0) return;
  const int heads = a.n_heads + 2 * a.kv.n_kv_heads;
  const dim3 grid(a.n, (heads + kWarpsPerBlock - 1) / kWarpsPerBlock);
  launch_pdl("qkv_rope_write", qkv_rope_write_kernel, grid, kWarpsPerBlock * 32, st, p, fr);
  if (a.summaries) kv_summaries(a.kv, a.slots, a.n, st);
}

}  // namespace kf::cuda

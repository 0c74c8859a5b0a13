// Backend::qkv_rope_write on the GPU: the attention block's input stage in
// one launch (plus the page summaries), from the merged q|k|v projection.
// One warp per (row, head), qkv_head (qkv.cuh).
#include "backend/cuda/qkv.cuh"

#include <cstring>

#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__global__ void qkv_rope_write_kernel(QkvParams p, Freqs fr) {
  griddep_wait();
  __shared__ float buf[kWarpsPerBlock][kQkvMaxHeadDim];
  const int warp = threadIdx.x / 32;
  const int head = blockIdx.y * kWarpsPerBlock + warp;  // 0..Hq-1 q, then Hkv k, then Hkv v
  if (head >= p.n_heads + 2 * p.kv.n_kv_heads) return;
  qkv_head(p, fr, blockIdx.x, head, buf[warp]);
}

}  // namespace

void qkv_launch_params(const QkvArgs& a, QkvParams& p, Freqs& fr) {
  const int half = a.rotary_dim / 2;
  KF_CHECK(a.kv.head_dim <= kQkvMaxHeadDim, "qkv_rope_write: head_dim {} above {}", a.kv.head_dim, kQkvMaxHeadDim);
  KF_CHECK(half >= 1 && half <= kMaxRopeHalf && a.rotary_dim % 2 == 0 && a.rotary_dim <= a.kv.head_dim,
           "qkv_rope_write: rotary_dim {} unsupported for head_dim {}", a.rotary_dim, a.kv.head_dim);
  KF_CHECK(a.inv_freq_host != nullptr, "qkv_rope_write: RopeParams.inv_freq is null");
  fr = Freqs{};
  std::memcpy(fr.f, a.inv_freq_host, sizeof(float) * half);
  p = QkvParams{a.qkv, a.q_norm, a.k_norm, a.pos, a.slots, a.q_out, a.kv, a.eps, a.n, a.n_heads, a.kv.head_dim, half};
}

void qkv_rope_write(const QkvArgs& a, cudaStream_t st) {
  QkvParams p;
  Freqs fr;
  qkv_launch_params(a, p, fr);
  if (a.n == 0) return;
  const int heads = a.n_heads + 2 * a.kv.n_kv_heads;
  const dim3 grid(a.n, (heads + kWarpsPerBlock - 1) / kWarpsPerBlock);
  launch_pdl("qkv_rope_write", qkv_rope_write_kernel, grid, kWarpsPerBlock * 32, st, p, fr);
  kv_summaries(a.kv, a.slots, a.n, st);
}

}  // namespace kf::cuda

// Backend::qkv_rope_write on the GPU: the attention block's input stage in
// one launch (plus the page summaries, unless the fused sparse attention
// kernel writes them: QkvArgs::summaries), from the merged q|k|v projection.
// One warp per (row, head): q and k heads get the optional per-head RMSNorm
// and RoPE, each step rounded to bf16 as the separate rmsnorm and rope
// kernels round; q lands in q_out, k and v in their KV slots.
#include <cstring>

#include "backend/cuda/common.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxHeadDim = 256;

struct Freqs {  // by value in the launch, as rope does
  float f[kMaxRopeHalf];
};

struct QkvParams {
  const bf16_t* qkv;
  const bf16_t* q_norm;
  const bf16_t* k_norm;
  const int32_t* pos;
  const int32_t* slots;
  bf16_t* q_out;
  KvPool kv;
  float eps;
  int n, n_heads, head_dim, half;  // half = rotary_dim / 2
};

__global__ void qkv_rope_write_kernel(QkvParams p, Freqs fr) {
  griddep_wait();
  __shared__ float buf[kWarpsPerBlock][kMaxHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = blockIdx.x;
  const int head = blockIdx.y * kWarpsPerBlock + warp;  // 0..Hq-1 q, then Hkv k, then Hkv v
  const int hkv = p.kv.n_kv_heads, D = p.head_dim;
  if (head >= p.n_heads + 2 * hkv) return;
  const int64_t width = static_cast<int64_t>(p.n_heads + 2 * hkv) * D;
  const bf16_t* src = p.qkv + row * width + static_cast<int64_t>(head) * D;
  float* v = buf[warp];
  for (int i = lane; i < D; i += 32) v[i] = bf(src[i]);
  __syncwarp();
  const bool is_q = head < p.n_heads, is_k = !is_q && head < p.n_heads + hkv;
  if (is_q || is_k) {
    const bf16_t* w = is_q ? p.q_norm : p.k_norm;
    if (w) {
      float ss = 0.f;
      for (int i = lane; i < D; i += 32) ss += v[i] * v[i];
      ss = warp_sum(ss);
      const float inv = rsqrtf(ss / static_cast<float>(D) + p.eps);
      for (int i = lane; i < D; i += 32) v[i] = bf(to_bf(v[i] * inv * bf(w[i])));
      __syncwarp();
    }
    const float pos = static_cast<float>(p.pos[row]);
    for (int i = lane; i < p.half; i += 32) {  // HF rotate_half: pairs (i, i + half)
      float s, c;
      sincosf(pos * fr.f[i], &s, &c);
      const float a = v[i], b = v[i + p.half];
      v[i] = bf(to_bf(a * c - b * s));
      v[i + p.half] = bf(to_bf(b * c + a * s));
    }
    __syncwarp();
  }
  bf16_t* dst;
  if (is_q) {
    dst = p.q_out + (static_cast<int64_t>(row) * p.n_heads + head) * D;
  } else {
    const int slot = p.slots[row];
    if (slot < 0 || slot >= p.kv.n_pages * p.kv.page_size) return;  // as kv_write: bad slots write nothing
    const int page = slot / p.kv.page_size, off = slot % p.kv.page_size;
    const int h = is_k ? head - p.n_heads : head - p.n_heads - hkv;
    dst = (is_k ? p.kv.k : p.kv.v) + ((static_cast<int64_t>(page) * hkv + h) * p.kv.page_size + off) * D;
  }
  for (int i = lane; i < D; i += 32) dst[i] = to_bf(v[i]);
}

}  // namespace

void qkv_rope_write(const QkvArgs& a, cudaStream_t st) {
  const int half = a.rotary_dim / 2;
  KF_CHECK(a.kv.head_dim <= kMaxHeadDim, "qkv_rope_write: head_dim {} above {}", a.kv.head_dim, kMaxHeadDim);
  KF_CHECK(half >= 1 && half <= kMaxRopeHalf && a.rotary_dim % 2 == 0 && a.rotary_dim <= a.kv.head_dim,
           "qkv_rope_write: rotary_dim {} unsupported for head_dim {}", a.rotary_dim, a.kv.head_dim);
  KF_CHECK(a.inv_freq_host != nullptr, "qkv_rope_write: RopeParams.inv_freq is null");
  if (a.n == 0) return;
  Freqs fr{};
  std::memcpy(fr.f, a.inv_freq_host, sizeof(float) * half);
  QkvParams p{a.qkv, a.q_norm, a.k_norm, a.pos, a.slots, a.q_out, a.kv, a.eps, a.n, a.n_heads, a.kv.head_dim, half};
  const int heads = a.n_heads + 2 * a.kv.n_kv_heads;
  const dim3 grid(a.n, (heads + kWarpsPerBlock - 1) / kWarpsPerBlock);
  launch_pdl("qkv_rope_write", qkv_rope_write_kernel, grid, kWarpsPerBlock * 32, st, p, fr);
  if (a.summaries) kv_summaries(a.kv, a.slots, a.n, st);
}

}  // namespace kf::cuda

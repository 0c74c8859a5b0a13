// qkv_rope_write's work for one (row, head), shared by its own kernel (qkv.cu)
// and the fused sparse attention kernel (attention.cu), whose block does it
// for its (sequence, KV head) before it selects: one launch fewer a layer.
// A q or k head gets the optional per-head RMSNorm and RoPE, each step
// rounded to bf16 as the separate rmsnorm and rope kernels round; q lands in
// q_out, k and v in their KV slots.
#pragma once
#include "backend/cuda/common.cuh"

namespace kf::cuda {

constexpr int kQkvMaxHeadDim = 256;

struct QkvParams {
  const bf16_t* qkv;  // [n, (Hq + 2 * Hkv) * head_dim]
  const bf16_t* q_norm;
  const bf16_t* k_norm;
  const int32_t* pos;
  const int32_t* slots;
  bf16_t* q_out;  // [n, Hq, head_dim]
  KvPool kv;
  float eps;
  int n, n_heads, head_dim, half;  // half = rotary_dim / 2
};

// Checks a (naming the op) and fills the kernel parameters and frequencies.
QkvParams qkv_params(const QkvArgs& a, RopeFreqs* freqs);

// One warp: head `head` of row `row` (0..Hq-1 a query head, then Hkv key
// heads, then Hkv value heads). v: the warp's head_dim floats of shared memory.
// Returns after the warp's stores are issued.
__device__ __forceinline__ void qkv_head(const QkvParams& p, const RopeFreqs& fr, int row, int head, float* v) {
  const int lane = threadIdx.x & 31;
  const int hkv = p.kv.n_kv_heads, D = p.head_dim;
  const int64_t width = static_cast<int64_t>(p.n_heads + 2 * hkv) * D;
  const bf16_t* src = p.qkv + row * width + static_cast<int64_t>(head) * D;
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

}  // namespace kf::cuda

// The attention input stage of one (row, head) — Backend::qkv_rope_write's
// work — as a warp-level device routine, shared by its own kernel (qkv.cu)
// and the fused sparse decode kernel (attention.cu), which runs it for its
// sequence's rows before selecting pages.
#pragma once
#include "backend/cuda/common.cuh"

namespace kf::cuda {

constexpr int kQkvMaxHeadDim = 256;

struct Freqs {  // by value in the launch, as rope does
  float f[kMaxRopeHalf];
};

struct QkvParams {
  const bf16_t* qkv;     // [n, (n_heads + 2 * n_kv_heads) * head_dim]
  const bf16_t* q_norm;  // [head_dim] or null
  const bf16_t* k_norm;
  const int32_t* pos;    // [n]
  const int32_t* slots;  // [n]
  bf16_t* q_out;         // [n, n_heads, head_dim]
  KvPool kv;
  float eps;
  int n, n_heads, head_dim, half;  // half = rotary_dim / 2
};

// One warp: head `head` of row `row` (0..Hq-1 q, then Hkv k, then Hkv v):
// q and k heads get the optional per-head RMSNorm and RoPE, each step
// rounded to bf16 as the separate rmsnorm and rope kernels round; q lands
// in q_out, k and v in their KV slot (a bad slot writes nothing, as
// kv_write). v: head_dim floats of this warp's shared memory.
__device__ inline void qkv_head(const QkvParams& p, const Freqs& fr, int row, int head, float* v) {
  const int lane = threadIdx.x % 32;
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
    if (slot < 0 || slot >= p.kv.n_pages * p.kv.page_size) return;
    const int page = slot / p.kv.page_size, off = slot % p.kv.page_size;
    const int h = is_k ? head - p.n_heads : head - p.n_heads - hkv;
    dst = (is_k ? p.kv.k : p.kv.v) + ((static_cast<int64_t>(page) * hkv + h) * p.kv.page_size + off) * D;
  }
  for (int i = lane; i < D; i += 32) dst[i] = to_bf(v[i]);
  __syncwarp();  // v is this warp's again
}

// Checks a's shapes (naming the value) and fills the launch parameters.
void qkv_launch_params(const QkvArgs& a, QkvParams& p, Freqs& fr);

}  // namespace kf::cuda

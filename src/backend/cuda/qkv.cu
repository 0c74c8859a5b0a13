// Backend::qkv_rope_write on the GPU: the attention block's input stage in
// one launch (plus the page summaries, unless the fused sparse attention
// kernel writes them: QkvArgs::summaries), from the merged q|k|v projection.
// q and k heads get the optional per-head RMSNorm and RoPE, each step rounded
// to bf16 as the separate rmsnorm and rope kernels round; q lands in q_out,
// k and v in their KV slots. Two kernels: qkv_rope_write_vec_kernel, a thread
// per 16-byte chunk of a row, where the head's chunks fit in a warp and RoPE
// pairs whole chunks (every model we load); else a warp per (row, head).
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

// Where head `head` (q heads, then k, then v) of row `row` goes: q_out, or
// its KV slot; null for a slot outside the pool (as kv_write: bad slots
// write nothing).
__device__ __forceinline__ bf16_t* head_out(const QkvParams& p, int row, int head) {
  const int hkv = p.kv.n_kv_heads, D = p.head_dim;
  if (head < p.n_heads) return p.q_out + (static_cast<int64_t>(row) * p.n_heads + head) * D;
  const int slot = p.slots[row];
  if (slot < 0 || slot >= p.kv.n_pages * p.kv.page_size) return nullptr;
  const int page = slot / p.kv.page_size, off = slot % p.kv.page_size;
  const bool is_k = head < p.n_heads + hkv;
  const int h = is_k ? head - p.n_heads : head - p.n_heads - hkv;
  return (is_k ? p.kv.k : p.kv.v) + ((static_cast<int64_t>(page) * hkv + h) * p.kv.page_size + off) * D;
}

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
      float lo, hi;
      rope_rotate(v[i], v[i + p.half], c, s, lo, hi);
      v[i] = bf(to_bf(lo));
      v[i + p.half] = bf(to_bf(hi));
    }
    __syncwarp();
  }
  bf16_t* dst = head_out(p, row, head);
  if (!dst) return;
  for (int i = lane; i < D; i += 32) dst[i] = to_bf(v[i]);
}

// A thread per 8 dims (one 16-byte chunk) of row blockIdx.x: chunk ci of the
// row is dims [8c, 8c + 8) of head ci / CPH (c = ci % CPH, CPH = D / 8
// chunks a head, a power of two <= 32, so a head's chunks are CPH adjacent
// lanes of one warp). The head's sum of squares is a shuffle reduction over
// those lanes; RoPE's pair (i, i + half) is chunk c and its partner c ^ H8
// (H8 = half / 8, a power of two), one shuffle of 4 words. One load and one
// store a thread, against the warp kernel's 2-4 scalar loads a lane and
// 4,096 four-warp blocks for 1,024 rows (SmolLM2's eval step: 8.7 us a layer).
__global__ void __launch_bounds__(128) qkv_rope_write_vec_kernel(QkvParams p, Freqs fr) {
  griddep_wait();
  const int row = blockIdx.x;
  const int ci = blockIdx.y * blockDim.x + threadIdx.x;
  const int hkv = p.kv.n_kv_heads, D = p.head_dim, cph = D / 8, h8 = p.half / 8;
  const int heads = p.n_heads + 2 * hkv;
  const bool live = ci < heads * cph;  // whole heads: a head's lanes are all live or all not
  const int head = ci / cph, c = ci % cph;
  const bool is_q = head < p.n_heads, is_k = !is_q && head < p.n_heads + hkv;
  float v[8] = {};
  if (live) unpack8(reinterpret_cast<const uint4*>(p.qkv + static_cast<int64_t>(row) * heads * D)[ci], v);
  const bf16_t* w = is_q ? p.q_norm : is_k ? p.k_norm : nullptr;
  if (p.q_norm || p.k_norm) {  // kernel-uniform: every lane shuffles
    float ss = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) ss += v[e] * v[e];
    for (int o = cph / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (w && live) {
      const float inv = rsqrtf(ss / static_cast<float>(D) + p.eps);
      float wv[8];
      unpack8(reinterpret_cast<const uint4*>(w)[c], wv);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = bf(to_bf(v[e] * inv * wv[e]));
    }
  }
  // RoPE: chunks c < H8 hold a = dims i, chunks H8 <= c < 2 H8 the b = dims i + half.
  uint4 mine = pack8(v), other;
  other.x = __shfl_xor_sync(0xffffffffu, mine.x, h8);
  other.y = __shfl_xor_sync(0xffffffffu, mine.y, h8);
  other.z = __shfl_xor_sync(0xffffffffu, mine.z, h8);
  other.w = __shfl_xor_sync(0xffffffffu, mine.w, h8);
  if (!live) return;
  if ((is_q || is_k) && c < 2 * h8) {
    float o[8];
    unpack8(other, o);
    const bool low = c < h8;
    const int i0 = 8 * (low ? c : c - h8);
    const float pos = static_cast<float>(p.pos[row]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      float sn, cs;
      sincosf(pos * fr.f[i0 + e], &sn, &cs);
      float lo, hi;
      rope_rotate(low ? v[e] : o[e], low ? o[e] : v[e], cs, sn, lo, hi);
      v[e] = bf(to_bf(low ? lo : hi));
    }
  }
  bf16_t* dst = head_out(p, row, head);
  if (dst) reinterpret_cast<uint4*>(dst)[c] = pack8(v);
}

bool pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

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
  const int heads = a.n_heads + 2 * a.kv.n_kv_heads, D = a.kv.head_dim;
  const bool vec = D % 8 == 0 && pow2(D / 8) && D / 8 <= 32 && half % 8 == 0 && pow2(half / 8) &&
                   aligned16({a.qkv, a.q_out, a.kv.k, a.kv.v, a.q_norm, a.k_norm});
  if (vec) {
    const dim3 grid(a.n, (heads * D / 8 + 127) / 128);
    launch_pdl("qkv_rope_write", qkv_rope_write_vec_kernel, grid, 128, st, p, fr);
  } else {
    const dim3 grid(a.n, (heads + kWarpsPerBlock - 1) / kWarpsPerBlock);
    launch_pdl("qkv_rope_write", qkv_rope_write_kernel, grid, kWarpsPerBlock * 32, st, p, fr);
  }
  if (a.summaries) kv_summaries(a.kv, a.slots, a.n, st);
}

}  // namespace kf::cuda

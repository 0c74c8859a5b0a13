// Tensor-core causal attention for prefill chunks (sequences with more than
// one query row), FA2-style.
//
// Block = (query head, tile of kBM = 64 query rows of one sequence), 4 warps;
// warp w owns query rows [16w, 16w+16) of the tile. The block walks 64-token
// KV tiles of its KV head from position 0 up to its last row's position,
// gathering them through the page table with cp.async into shared memory
// (double buffered: tile t+1 loads while tile t computes). Per KV tile:
//   S = Q K^T  (mma.sync m16n8k16 bf16 -> fp32, 16 x 64 per warp)
//   causal mask, online softmax in fp32 (base 2, running max m and sum l per row)
//   O += P V   (P re-packed from the S accumulators as bf16 A fragments)
// Query row r of sequence s sits at position ctx_len[s] - n_q + (r - q_start[s])
// and sees KV positions <= its own; so prior context (chunked prefill) works.
//
// The grid is sized on the host without reading q_start: grid.y =
// ceil(n_rows / kBM) + n_seqs is an upper bound on the number of row tiles of
// all multi-row sequences; block y finds its (sequence, tile) by a warp scan
// over q_start and exits if it has none. Tiles are numbered heaviest first
// (the last tile of a sequence sees the most keys). grid.x = query heads, so
// the heads of a GQA group run side by side and share K/V through L2.

#include "backend/cuda/common.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kBM = 64;       // query rows per block
constexpr int kBN = 64;       // KV tokens per tile
constexpr int kThreads = 128;  // 4 warps x 16 rows

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

struct PrefillParams {
  const bf16_t* q;  // [n_rows, n_heads, D]
  bf16_t* out;      // [n_rows, n_heads, D]
  const bf16_t* k;  // [n_pages, n_kv_heads, P, D]
  const bf16_t* v;
  const int32_t* q_start;  // [n_seqs + 1]
  const int32_t* ctx_len;  // [n_seqs]
  const int32_t* table;    // [n_seqs, max_pages]
  int n_seqs, max_pages, n_heads, n_kv_heads, page_size;
  float scale_log2;  // softmax scale * log2(e)
};

// Shared memory: Q [kBM][D+8], then two buffers of K [kBN][D+8] and V [kBN][D+8]
// (8 bf16 of padding per row keep ldmatrix free of bank conflicts).
template <int D>
constexpr int kStride = D + 8;
template <int D>
constexpr int smem_bytes() {
  return (kBM + 4 * kBN) * kStride<D> * 2;
}

// Block's (sequence, row tile): block index y counts tiles of multi-row
// sequences, sequence by sequence, heaviest (last) tile first. False: no tile.
__device__ bool find_tile(const int32_t* q_start, int n_seqs, int y, int& s_out, int& tile_out) {
  const int lane = threadIdx.x & 31;
  int base = 0;  // tiles of the sequences before this chunk of 32
  for (int s0 = 0; s0 < n_seqs; s0 += 32) {
    const int s = s0 + lane;
    int n = 0;
    if (s < n_seqs) {
      const int rows = q_start[s + 1] - q_start[s];
      n = rows > 1 ? (rows + kBM - 1) / kBM : 0;
    }
    int incl = n;  // inclusive prefix sum over the warp
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int t = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += t;
    }
    const unsigned hit = __ballot_sync(0xffffffffu, y >= base + incl - n && y < base + incl);
    if (hit) {
      const int src = __ffs(hit) - 1;
      const int first = __shfl_sync(0xffffffffu, base + incl - n, src);
      const int cnt = __shfl_sync(0xffffffffu, n, src);
      s_out = s0 + src;
      tile_out = cnt - 1 - (y - first);
      return true;
    }
    base += __shfl_sync(0xffffffffu, incl, 31);
  }
  return false;
}

template <int D>
__global__ void __launch_bounds__(kThreads, 2) prefill_kernel(PrefillParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int S = kStride<D>;
  constexpr int KD = D / 16;  // k-steps of Q K^T
  constexpr int ND = D / 8;   // n-tiles of O
  constexpr int NN = kBN / 8;  // n-tiles of S
  bf16_t* sq = reinterpret_cast<bf16_t*>(smem_raw);  // [kBM][S]
  bf16_t* skv = sq + kBM * S;                          // [2][K, V][kBN][S]

  // Warp 0 finds the tile; the block shares it through shared memory.
  __shared__ int sh_tile[2];
  if (threadIdx.x < 32) {
    int s = -1, tile = 0;
    if (!find_tile(p.q_start, p.n_seqs, blockIdx.y, s, tile)) s = -1;
    if (threadIdx.x == 0) {
      sh_tile[0] = s;
      sh_tile[1] = tile;
    }
  }
  __syncthreads();
  const int s = sh_tile[0];
  if (s < 0) return;
  const int head = blockIdx.x, G = p.n_heads / p.n_kv_heads, hk = head / G;
  const int q0 = p.q_start[s], n_q = p.q_start[s + 1] - q0, ctx = p.ctx_len[s];
  const int r0 = sh_tile[1] * kBM;               // first row of the tile within the sequence
  const int nr = min(kBM, n_q - r0);             // valid rows in the tile
  const int pos0 = ctx - n_q + r0;               // position of the tile's first row
  const int n_kv_tiles = (pos0 + nr - 1) / kBN + 1;  // up to the last row's position
  const int P = p.page_size, Hkv = p.n_kv_heads;
  const int32_t* pt = p.table + static_cast<int64_t>(s) * p.max_pages;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  // Q tile: rows beyond the sequence read zeros.
  for (int i = tid; i < kBM * (D / 8); i += kThreads) {
    const int row = i / (D / 8), ch = i % (D / 8);
    const bool ok = row < nr;
    const bf16_t* src = p.q + (static_cast<int64_t>(q0 + (ok ? r0 + row : 0)) * p.n_heads + head) * D + ch * 8;
    cp_async16(sq + row * S + ch * 8, src, ok ? 16 : 0);
  }
  // KV tile t -> buffer b: token j = t*kBN + row at page pt[j / P], slot j % P.
  auto load_kv = [&](int t, int b) {
    bf16_t* sk = skv + b * 2 * kBN * S;
    bf16_t* sv = sk + kBN * S;
    for (int i = tid; i < kBN * (D / 8); i += kThreads) {
      const int row = i / (D / 8), ch = i % (D / 8);
      const int j = t * kBN + row;
      const bool ok = j < ctx;
      const int64_t off = ok ? ((static_cast<int64_t>(pt[j / P]) * Hkv + hk) * P + j % P) * D + ch * 8 : 0;
      cp_async16(sk + row * S + ch * 8, p.k + off, ok ? 16 : 0);
      cp_async16(sv + row * S + ch * 8, p.v + off, ok ? 16 : 0);
    }
  };
  load_kv(0, 0);
  cp_async_commit();

  // Thread's rows in the warp's 16: g and g + 8 (mma C layout); their positions.
  const int g = lane >> 2, t4 = lane & 3;
  const int rl0 = warp * 16 + g, rl1 = rl0 + 8;
  const int qpos0 = pos0 + min(rl0, nr - 1), qpos1 = pos0 + min(rl1, nr - 1);  // padding rows copy the last
  uint32_t qf[KD][4];
  float o[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[n][e] = 0.f;
  float m0 = kNegInf, m1 = kNegInf, l0 = 0.f, l1 = 0.f;

  for (int t = 0; t < n_kv_tiles; ++t) {
    if (t + 1 < n_kv_tiles) {
      load_kv(t + 1, (t + 1) & 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk)
        ldsm_x4(qf[kk], sq + (warp * 16 + (lane & 15)) * S + kk * 16 + (lane >> 4) * 8);
    }
    const bf16_t* sk = skv + (t & 1) * 2 * kBN * S;
    const bf16_t* sv = sk + kBN * S;

    // S = Q K^T: [16 rows][kBN] per warp as NN n-tiles of 8 keys.
    float sc[NN][4];
#pragma unroll
    for (int n = 0; n < NN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[n][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk)
#pragma unroll
      for (int n = 0; n < NN; n += 2) {
        uint32_t b[4];  // keys 8n..8n+15, dims 16kk..16kk+15
        ldsm_x4(b, sk + (n * 8 + (lane & 7) + (lane >> 4) * 8) * S + kk * 16 + ((lane >> 3) & 1) * 8);
        mma16816(sc[n], qf[kk], b[0], b[1]);
        mma16816(sc[n + 1], qf[kk], b[2], b[3]);
      }

    // Scale into base 2, mask keys after each row's position, online softmax.
    const int kv0 = t * kBN;
    const bool diag = kv0 + kBN - 1 > qpos0;
    float mx0 = kNegInf, mx1 = kNegInf;
#pragma unroll
    for (int n = 0; n < NN; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[n][e] * p.scale_log2;
        if (diag) {
          const int j = kv0 + n * 8 + 2 * t4 + (e & 1);
          if (j > (e < 2 ? qpos0 : qpos1)) x = kNegInf;
        }
        sc[n][e] = x;
        if (e < 2) mx0 = fmaxf(mx0, x);
        else mx1 = fmaxf(mx1, x);
      }
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    const float b0 = mn0 == kNegInf ? 0.f : mn0, b1 = mn1 == kNegInf ? 0.f : mn1;
    const float c0 = ex2(m0 - b0), c1 = ex2(m1 - b1);
    m0 = mn0;
    m1 = mn1;
    float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
    for (int n = 0; n < NN; ++n) {
      sc[n][0] = ex2(sc[n][0] - b0);
      sc[n][1] = ex2(sc[n][1] - b0);
      sc[n][2] = ex2(sc[n][2] - b1);
      sc[n][3] = ex2(sc[n][3] - b1);
      rs0 += sc[n][0] + sc[n][1];
      rs1 += sc[n][2] + sc[n][3];
    }
    l0 = l0 * c0 + rs0;  // per-thread partial sums; the quad is summed at the end
    l1 = l1 * c1 + rs1;
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      o[n][0] *= c0;
      o[n][1] *= c0;
      o[n][2] *= c1;
      o[n][3] *= c1;
    }

    // O += P V: P [16][kBN] as A fragments (two S n-tiles per k-step of 16 keys).
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t a[4];
      a[0] = pack_bf2(sc[2 * kk][0], sc[2 * kk][1]);
      a[1] = pack_bf2(sc[2 * kk][2], sc[2 * kk][3]);
      a[2] = pack_bf2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
      a[3] = pack_bf2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
      for (int n = 0; n < ND; n += 2) {
        uint32_t b[4];  // keys 16kk..16kk+15, dims 8n..8n+15 (transposed load of V [key][dim])
        ldsm_x4_t(b, sv + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + n * 8 + (lane >> 4) * 8);
        mma16816(o[n], a, b[0], b[1]);
        mma16816(o[n + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // buffer t & 1 is free for tile t + 2
  }

  // Normalise and write rows that exist: out [row][head][D], 2 dims per store.
#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  bf16_t* out0 = p.out + (static_cast<int64_t>(q0 + r0 + rl0) * p.n_heads + head) * D + 2 * t4;
  bf16_t* out1 = p.out + (static_cast<int64_t>(q0 + r0 + rl1) * p.n_heads + head) * D + 2 * t4;
#pragma unroll
  for (int n = 0; n < ND; ++n) {
    if (rl0 < nr) *reinterpret_cast<uint32_t*>(out0 + n * 8) = pack_bf2(o[n][0] * inv0, o[n][1] * inv0);
    if (rl1 < nr) *reinterpret_cast<uint32_t*>(out1 + n * 8) = pack_bf2(o[n][2] * inv1, o[n][3] * inv1);
  }
}

template <int D>
void launch_prefill(const PrefillParams& p, dim3 grid, cudaStream_t st) {
  // The attribute belongs to the current device, not the process: set it on
  // every launch (a host-side call of ~1 us, once per layer of a prefill
  // step) so a second GPU in the process gets it too.
  KF_CUDA(cudaFuncSetAttribute(prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<D>()));
  prefill_kernel<D><<<grid, kThreads, smem_bytes<D>(), st>>>(p);
}

}  // namespace

void prefill_attention(const AttnArgs& a, cudaStream_t st) {
  const int D = a.kv.head_dim;
  KF_CHECK(D == 64 || D == 128, "CUDA prefill attention: head_dim {} unsupported (64 or 128)", D);
  if (a.n_seqs == 0 || a.n_rows < 2) return;
  PrefillParams p{};
  p.q = a.q;
  p.out = a.out;
  p.k = a.kv.k;
  p.v = a.kv.v;
  p.q_start = a.q_start;
  p.ctx_len = a.ctx_len;
  p.table = a.page_table;
  p.n_seqs = a.n_seqs;
  p.max_pages = a.max_pages;
  p.n_heads = a.n_heads;
  p.n_kv_heads = a.kv.n_kv_heads;
  p.page_size = a.kv.page_size;
  p.scale_log2 = a.scale * kLog2e;
  // Upper bound on row tiles of multi-row sequences: sum ceil(rows/kBM) <= n_rows/kBM + n_seqs.
  const dim3 grid(a.n_heads, blocks_for(a.n_rows, kBM) + a.n_seqs);
  if (D == 64) launch_prefill<64>(p, grid, st);
  else launch_prefill<128>(p, grid, st);
  check_launch("attention prefill");
}

}  // namespace kf::cuda

// Paged attention on the GPU (DESIGN.md, Attention policies).
//
// Three kernels per call:
//  1. select_kernel (policies other than dense): per (sequence, KV head) of a
//     decode row, the logical pages the query reads. blocktopk scores the
//     candidate pages against their key summaries (q̄·k̄), finds the top-k by a
//     radix select on order-preserving integer keys (ties -> lower page), and
//     writes page 0, the chosen pages ascending, then the local pages. local is
//     the same with k = 0; topk (oracle) ranks tokens instead and also writes a
//     bit mask of the kept tokens of each listed page.
//  2. decode_kernel: split-K flash decoding. Block = (row, KV head, split), 4
//     warps; a warp takes 16 token slots of one page at a time (K and V loads
//     for all 16 issued before any math), and serves all G query heads of the
//     group from that one load. Rows of multi-row (prefill) sequences take the
//     same path over their causal prefix.
//  3. reduce_kernel: merges the splits' (max, sum, acc) partials.
#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <limits>

#include "backend/cuda/common.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kWarps = 4;        // warps per decode block
constexpr int kTile = 16;        // token slots a warp handles per step
constexpr int kSelThreads = 256;
constexpr int kSmemKeys = 4096;  // candidates ranked in shared memory (16 KB)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

__device__ __forceinline__ float ex2(float x) {  // 2^x, -inf -> 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Sequence of query row r: the last s with q_start[s] <= r.
__device__ __forceinline__ int seq_of_row(const int32_t* q_start, int n_seqs, int r) {
  int lo = 0, hi = n_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (q_start[mid] <= r) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

struct DecodeParams {
  const bf16_t* q;
  bf16_t* out;
  const bf16_t* k;
  const bf16_t* v;
  const int32_t* q_start;
  const int32_t* ctx_len;
  const int32_t* table;
  const int32_t* list;        // null: every page of the causal prefix
  const int32_t* list_count;
  const uint32_t* list_mask;  // null: whole pages
  float* part_acc;
  float* part_ml;
  int n_seqs, max_pages, n_heads, n_kv_heads, page_size, splits;
  float scale_log2;  // softmax scale * log2(e): logits live in base 2
};

template <int D, int G>
__global__ void __launch_bounds__(kWarps * 32) decode_kernel(DecodeParams p) {
  constexpr int LPR = D / 8;     // lanes per key row (16 bytes each)
  constexpr int RPR = 32 / LPR;  // key rows per warp load round
  constexpr int NI = kTile / RPR;  // key rows per lane per tile
  __shared__ float sm_acc[kWarps][G][D];
  __shared__ float sm_m[kWarps][G], sm_l[kWarps][G];

  const int r = blockIdx.x / p.splits, split = blockIdx.x % p.splits, h = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int c = lane % LPR, sub = lane / LPR;
  const int s = seq_of_row(p.q_start, p.n_seqs, r);
  const int q0 = p.q_start[s], rows = p.q_start[s + 1] - q0;
  const int T = p.ctx_len[s] - rows + (r - q0) + 1;  // causal length of this row
  const int P = p.page_size, Hkv = p.n_kv_heads;
  const int64_t pair = static_cast<int64_t>(s) * Hkv + h;
  const bool use_list = p.list != nullptr && rows == 1;
  const int n_items = use_list ? p.list_count[pair] : (T + P - 1) / P;
  const int tpp = (P + kTile - 1) / kTile;  // tiles per page
  const int n_tiles = n_items * tpp;
  const int per = (n_tiles + p.splits - 1) / p.splits;
  const int t0 = split * per, t1 = min(n_tiles, t0 + per);

  float qf[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const bf16_t* qp = p.q + (static_cast<int64_t>(r) * p.n_heads + h * G + g) * D + c * 8;
    unpack8(*reinterpret_cast<const uint4*>(qp), qf[g]);
#pragma unroll
    for (int e = 0; e < 8; ++e) qf[g][e] *= p.scale_log2;
  }
  float m[G], l[G], acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = kNegInf;
    l[g] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
  }
  const int32_t* pt = p.table + static_cast<int64_t>(s) * p.max_pages;
  const int32_t* lst = use_list ? p.list + pair * p.max_pages : nullptr;
  const uint32_t* lmask = use_list && p.list_mask ? p.list_mask + pair * p.max_pages : nullptr;

  for (int t = t0 + warp; t < t1; t += kWarps) {
    const int item = tpp == 1 ? t : t / tpp;
    const int tok0 = tpp == 1 ? 0 : (t % tpp) * kTile;
    const int logical = lst ? lst[item] : item;
    const uint32_t mask = lmask ? lmask[item] : 0xffffffffu;
    const int ntok = min(P, T - logical * P);
    const int64_t base = (static_cast<int64_t>(pt[logical]) * Hkv + h) * P * D + c * 8;
    uint4 kr[NI], vr[NI];
    bool ok[NI];
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int tok = tok0 + sub + i * RPR;
      ok[i] = tok < ntok && ((mask >> (tok & 31)) & 1u);
      kr[i] = make_uint4(0, 0, 0, 0);
      vr[i] = make_uint4(0, 0, 0, 0);
      if (ok[i]) {
        kr[i] = ld_stream(p.k + base + static_cast<int64_t>(tok) * D);
        vr[i] = ld_stream(p.v + base + static_cast<int64_t>(tok) * D);
      }
    }
    float sc[G][NI];
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      float kf[8];
      unpack8(kr[i], kf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d = fmaf(qf[g][e], kf[e], d);
        sc[g][i] = d;
      }
    }
#pragma unroll
    for (int o = LPR / 2; o > 0; o >>= 1)
#pragma unroll
      for (int g = 0; g < G; ++g)
#pragma unroll
        for (int i = 0; i < NI; ++i) sc[g][i] += __shfl_xor_sync(0xffffffffu, sc[g][i], o);
    float corr[G];
    bool any = false;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float mt = kNegInf;
#pragma unroll
      for (int i = 0; i < NI; ++i) {
        if (!ok[i]) sc[g][i] = kNegInf;
        mt = fmaxf(mt, sc[g][i]);
      }
#pragma unroll
      for (int o = LPR; o < 32; o <<= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
      any = mt != kNegInf;  // the same for every g: masking is per token
      const float mn = fmaxf(m[g], mt);
      corr[g] = any ? ex2(m[g] - mn) : 1.f;
      if (any) m[g] = mn;
    }
    if (!any) continue;  // warp-uniform: every slot of the tile was masked
#pragma unroll
    for (int g = 0; g < G; ++g) {
      l[g] *= corr[g];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] *= corr[g];
    }
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      float vf[8];
      unpack8(vr[i], vf);
#pragma unroll
      for (int g = 0; g < G; ++g) {
        const float w = ex2(sc[g][i] - m[g]);
        l[g] += w;
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[g][e] = fmaf(w, vf[e], acc[g][e]);
      }
    }
  }
  // Lanes holding the same dims (same c) saw different rows: add them up.
#pragma unroll
  for (int o = LPR; o < 32; o <<= 1)
#pragma unroll
    for (int g = 0; g < G; ++g) {
      l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
    }
  if (sub == 0)
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int e = 0; e < 8; ++e) sm_acc[warp][g][c * 8 + e] = acc[g][e];
  if (lane == 0)
#pragma unroll
    for (int g = 0; g < G; ++g) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D;
    float M = kNegInf;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sm_m[w][g]);
    float L = 0.f, A = 0.f;
    if (M != kNegInf)
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = ex2(sm_m[w][g] - M);
        L += sm_l[w][g] * f;
        A += sm_acc[w][g][d] * f;
      }
    const int64_t rh = static_cast<int64_t>(r) * p.n_heads + h * G + g;
    if (p.splits == 1) {
      p.out[rh * D + d] = to_bf(L > 0.f ? A / L : 0.f);
    } else {
      const int64_t pi = rh * p.splits + split;
      p.part_acc[pi * D + d] = A;
      if (d == 0) {
        p.part_ml[pi * 2] = M;
        p.part_ml[pi * 2 + 1] = L;
      }
    }
  }
}

// One block per (row, head): merge the splits' partials.
__global__ void reduce_kernel(const float* part_acc, const float* part_ml, bf16_t* out, int splits, int D) {
  const int64_t rh = blockIdx.x;
  const float* ml = part_ml + rh * splits * 2;
  const float* pa = part_acc + rh * splits * D;
  float M = kNegInf;
  for (int i = 0; i < splits; ++i) M = fmaxf(M, ml[2 * i]);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float L = 0.f, A = 0.f;
    if (M != kNegInf)
      for (int i = 0; i < splits; ++i) {
        const float f = ex2(ml[2 * i] - M);
        L += ml[2 * i + 1] * f;
        A += pa[static_cast<int64_t>(i) * D + d] * f;
      }
    out[rh * D + d] = to_bf(L > 0.f ? A / L : 0.f);
  }
}

struct SelectParams {
  const bf16_t* q;
  const bf16_t* k;
  const void* summary;
  bool summary_bf16;
  bool by_token;  // topk oracle: rank tokens, not pages
  const int32_t* q_start;
  const int32_t* ctx_len;
  const int32_t* table;
  int n_seqs, max_pages, n_heads, n_kv_heads, page_size, local_pages, topk_pages;
  uint32_t* keys;
  int64_t key_cap;
  int32_t* list;
  int32_t* list_count;
  uint32_t* list_mask;
};

// Order-preserving map float -> uint32 (larger float, larger key); NaN lowest, -0 == +0.
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return 0u;
  if (f == 0.f) f = 0.f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

template <int D>
__global__ void __launch_bounds__(kSelThreads) select_kernel(SelectParams p) {
  using Scan = cub::BlockScan<int, kSelThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ float qbar[D];
  __shared__ int hist[256];
  __shared__ uint32_t sh_prefix;
  __shared__ int sh_krem;
  __shared__ uint32_t sm_keys[kSmemKeys];  // the keys, when they fit (else global scratch)
  const int s = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  const int Hkv = p.n_kv_heads, P = p.page_size, G = p.n_heads / Hkv;
  const int64_t pair = static_cast<int64_t>(s) * Hkv + h;
  const int q0 = p.q_start[s], rows = p.q_start[s + 1] - q0;
  if (rows != 1) {  // prefill rows are dense; no list
    if (tid == 0) p.list_count[pair] = 0;
    return;
  }
  const int T = p.ctx_len[s];
  const int n = (T + P - 1) / P;
  const int first = 1, end = max(1, n - p.local_pages);
  const int m_pages = max(0, end - first);
  const int unit = p.by_token ? P : 1;  // ranked items per candidate page
  const int m = m_pages * unit, k = p.topk_pages * unit;
  int32_t* out = p.list + pair * p.max_pages;
  uint32_t* omask = p.by_token ? p.list_mask + pair * p.max_pages : nullptr;
  if (m <= k) {  // few candidates: every page (= dense)
    for (int i = tid; i < n; i += kSelThreads) {
      out[i] = i;
      if (omask) omask[i] = 0xffffffffu;
    }
    if (tid == 0) p.list_count[pair] = n;
    return;
  }
  const int32_t* pt = p.table + static_cast<int64_t>(s) * p.max_pages;
  uint32_t* keys = m <= kSmemKeys ? sm_keys : p.keys + pair * p.key_cap;
  uint32_t thr = 0xffffffffu;
  int need_eq = 0;
  if (k > 0) {
    for (int d = tid; d < D; d += kSelThreads) {  // q̄: mean of the group's queries, g order
      float a = 0.f;
      for (int g = 0; g < G; ++g) a += bf(p.q[(static_cast<int64_t>(q0) * p.n_heads + h * G + g) * D + d]);
      qbar[d] = a / static_cast<float>(G);
    }
    __syncthreads();
    // Scores: LPR lanes per item, 8 dims each; kUnroll items per lane in
    // flight so the loop is not one memory round trip per item.
    constexpr int LPR = D / 8, RPR = 32 / LPR, kUnroll = 8;
    constexpr int kStride = (kSelThreads / 32) * RPR;  // items per block round
    const int lane = tid & 31, c = lane % LPR, sub = lane / LPR;
    float qv[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) qv[e] = qbar[c * 8 + e];
    for (int j0 = (tid >> 5) * RPR + sub;; j0 += kStride * kUnroll) {
      if (j0 - sub >= m) break;  // warp-uniform
      float f[kUnroll][8];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * kStride;
#pragma unroll
        for (int e = 0; e < 8; ++e) f[u][e] = 0.f;
        if (j >= m) continue;
        if (p.by_token) {
          const int page = first + j / P, tok = j % P;
          const int64_t o = ((static_cast<int64_t>(pt[page]) * Hkv + h) * P + tok) * D + c * 8;
          unpack8(*reinterpret_cast<const uint4*>(p.k + o), f[u]);
        } else {
          const int64_t o = (static_cast<int64_t>(pt[first + j]) * Hkv + h) * D + c * 8;
          if (p.summary_bf16) {
            unpack8(*reinterpret_cast<const uint4*>(static_cast<const bf16_t*>(p.summary) + o), f[u]);
          } else {
            const float4* sp = reinterpret_cast<const float4*>(static_cast<const float*>(p.summary) + o);
            const float4 a = sp[0], b = sp[1];
            f[u][0] = a.x, f[u][1] = a.y, f[u][2] = a.z, f[u][3] = a.w;
            f[u][4] = b.x, f[u][5] = b.y, f[u][6] = b.z, f[u][7] = b.w;
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int j = j0 + u * kStride;
        float dsum = 0.f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dsum = fmaf(qv[e], f[u][e], dsum);
#pragma unroll
        for (int o = LPR / 2; o > 0; o >>= 1) dsum += __shfl_xor_sync(0xffffffffu, dsum, o);
        if (j < m && c == 0) keys[j] = order_key(dsum);
      }
    }
    __syncthreads();
    // Radix select, 8 bits at a time from the top: the k-th largest key `thr`,
    // and how many keys equal to it still belong to the top k (`need_eq`).
    uint32_t prefix = 0, pmask = 0;
    int krem = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += kSelThreads) hist[b] = 0;
      __syncthreads();
      for (int j = tid; j < m; j += kSelThreads) {
        const uint32_t key = keys[j];
        if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      if (tid == 0) {
        int cum = 0, b = 255;
        for (; b > 0; --b) {
          if (cum + hist[b] >= krem) break;
          cum += hist[b];
        }
        sh_prefix = prefix | (static_cast<uint32_t>(b) << shift);
        sh_krem = krem - cum;
      }
      __syncthreads();
      prefix = sh_prefix;
      krem = sh_krem;
      pmask |= 255u << shift;
      __syncthreads();
    }
    thr = prefix;
    need_eq = krem;
    // Mark the top k in index order: all keys > thr, and the first need_eq keys == thr.
    int run_eq = 0, run_sel = 0;
    for (int j0 = 0; j0 < m; j0 += kSelThreads) {
      const int j = j0 + tid;
      const uint32_t key = j < m ? keys[j] : 0u;
      const int gt = j < m && key > thr, eq = j < m && key == thr;
      int eq_rank, eq_tot, pos, tot;
      Scan(scan_tmp).ExclusiveSum(eq, eq_rank, eq_tot);
      __syncthreads();
      const int sel = gt || (eq && run_eq + eq_rank < need_eq);
      Scan(scan_tmp).ExclusiveSum(sel, pos, tot);
      __syncthreads();
      if (p.by_token) {
        if (j < m) keys[j] = static_cast<uint32_t>(sel);
      } else if (sel) {
        out[1 + run_sel + pos] = first + j;
      }
      run_eq += eq_tot;
      run_sel += tot;
    }
  }
  if (!p.by_token) {  // page 0, the k chosen pages (written above), the local pages
    if (tid == 0) out[0] = 0;
    for (int i = end + tid; i < n; i += kSelThreads) out[1 + k + (i - end)] = i;
    if (tid == 0) p.list_count[pair] = 1 + k + (n - end);
    return;
  }
  // topk: candidate pages that kept a token, with their token masks.
  __syncthreads();
  if (tid == 0) {
    out[0] = 0;
    omask[0] = 0xffffffffu;
  }
  int cnt = 0;
  for (int i0 = 0; i0 < m_pages; i0 += kSelThreads) {
    const int i = i0 + tid;
    uint32_t bits = 0;
    if (i < m_pages && k > 0)
      for (int t = 0; t < P; ++t) bits |= (keys[static_cast<int64_t>(i) * P + t] ? 1u : 0u) << t;
    const int has = bits != 0u;
    int pos, tot;
    Scan(scan_tmp).ExclusiveSum(has, pos, tot);
    __syncthreads();
    if (has) {
      out[1 + cnt + pos] = first + i;
      omask[1 + cnt + pos] = bits;
    }
    cnt += tot;
  }
  for (int i = end + tid; i < n; i += kSelThreads) {
    out[1 + cnt + (i - end)] = i;
    omask[1 + cnt + (i - end)] = 0xffffffffu;
  }
  if (tid == 0) p.list_count[pair] = 1 + cnt + (n - end);
}

// PageSelection output: physical pages each (sequence, KV head) read, -1 padded.
__global__ void write_selection_kernel(const int32_t* q_start, const int32_t* ctx_len, const int32_t* table,
                                       const int32_t* list, const int32_t* list_count, int max_pages,
                                       int n_kv_heads, int page_size, int32_t* sel_pages, int32_t* sel_counts) {
  const int s = blockIdx.x, h = blockIdx.y;
  const int64_t pair = static_cast<int64_t>(s) * n_kv_heads + h;
  const int rows = q_start[s + 1] - q_start[s];
  const bool use_list = list != nullptr && rows == 1;
  const int count = use_list ? list_count[pair] : rows > 0 ? (ctx_len[s] + page_size - 1) / page_size : 0;
  const int32_t* pt = table + static_cast<int64_t>(s) * max_pages;
  for (int i = threadIdx.x; i < max_pages; i += blockDim.x)
    sel_pages[pair * max_pages + i] = i < count ? pt[use_list ? list[pair * max_pages + i] : i] : -1;
  if (threadIdx.x == 0) sel_counts[pair] = count;
}

template <int D>
void launch_decode(int G, dim3 grid, const DecodeParams& p, cudaStream_t st) {
  switch (G) {
    case 1: decode_kernel<D, 1><<<grid, kWarps * 32, 0, st>>>(p); break;
    case 2: decode_kernel<D, 2><<<grid, kWarps * 32, 0, st>>>(p); break;
    case 3: decode_kernel<D, 3><<<grid, kWarps * 32, 0, st>>>(p); break;
    case 4: decode_kernel<D, 4><<<grid, kWarps * 32, 0, st>>>(p); break;
    case 5: decode_kernel<D, 5><<<grid, kWarps * 32, 0, st>>>(p); break;
    case 6: decode_kernel<D, 6><<<grid, kWarps * 32, 0, st>>>(p); break;
    case 7: decode_kernel<D, 7><<<grid, kWarps * 32, 0, st>>>(p); break;
    case 8: decode_kernel<D, 8><<<grid, kWarps * 32, 0, st>>>(p); break;
    default: fail("attention: no kernel for {} query heads per KV head", G);
  }
}

}  // namespace

void check_attention_shape(int head_dim, int group) {
  KF_CHECK(head_dim == 64 || head_dim == 128, "CUDA attention: head_dim {} unsupported (64 or 128)", head_dim);
  KF_CHECK(group >= 1 && group <= 8, "CUDA attention: {} query heads per KV head unsupported (1..8)", group);
}

ScratchSize attention_scratch(const AttnArgs& a, int num_sms) {
  ScratchSize z;
  const int Hkv = a.kv.n_kv_heads, P = a.kv.page_size, D = a.kv.head_dim;
  const bool selects = a.kind != 0, by_token = a.kind == 3;
  // Split count from the longest list a row can read: a selecting policy's
  // pages for a pure decode batch, else the whole table (prefill rows).
  int items = a.max_pages;
  if (selects && a.n_rows == a.n_seqs) {
    const int64_t chosen = by_token ? static_cast<int64_t>(a.topk_pages) * P : a.topk_pages;
    items = static_cast<int>(std::min<int64_t>(a.max_pages, 1 + chosen + a.local_pages));
  }
  const int tiles = items * ((P + kTile - 1) / kTile);
  const int64_t pairs = std::max<int64_t>(1, static_cast<int64_t>(a.n_rows) * Hkv);
  // Enough blocks for ~8 waves (short tail), at least 4 tiles per warp.
  const int64_t want = (static_cast<int64_t>(num_sms) * 32 + pairs - 1) / pairs;
  const int64_t most = std::max(1, tiles / (kWarps * 4));
  z.splits = static_cast<int>(std::clamp<int64_t>(std::min(want, most), 1, 128));
  if (z.splits > 1) {
    z.part_acc = static_cast<int64_t>(a.n_rows) * a.n_heads * z.splits * D;
    z.part_ml = static_cast<int64_t>(a.n_rows) * a.n_heads * z.splits * 2;
  }
  if (selects) {
    const int64_t n_pairs = static_cast<int64_t>(a.n_seqs) * Hkv;
    z.list = n_pairs * a.max_pages;
    z.list_count = n_pairs;
    z.list_mask = by_token ? n_pairs * a.max_pages : 0;
    z.keys = n_pairs * a.max_pages * (by_token ? P : 1);
  }
  return z;
}

void attention(const AttnArgs& a, const AttnScratch& s, int num_sms, cudaStream_t st) {
  const int Hkv = a.kv.n_kv_heads, P = a.kv.page_size, D = a.kv.head_dim;
  const int G = a.n_heads / Hkv;
  check_attention_shape(D, G);
  KF_CHECK(a.kind != 3 || P <= 32, "topk attention on CUDA needs page_size <= 32 (got {})", P);
  const ScratchSize z = attention_scratch(a, num_sms);
  const bool selects = a.kind != 0;
  if (a.n_seqs == 0) return;
  if (selects) {
    SelectParams sp{};
    sp.q = a.q;
    sp.k = a.kv.k;
    sp.summary = a.kv.summary;
    sp.summary_bf16 = a.kv.summary_bf16;
    sp.by_token = a.kind == 3;
    sp.q_start = a.q_start;
    sp.ctx_len = a.ctx_len;
    sp.table = a.page_table;
    sp.n_seqs = a.n_seqs;
    sp.max_pages = a.max_pages;
    sp.n_heads = a.n_heads;
    sp.n_kv_heads = Hkv;
    sp.page_size = P;
    sp.local_pages = a.local_pages;
    sp.topk_pages = a.kind == 1 ? 0 : a.topk_pages;  // local = blocktopk with k = 0
    sp.keys = s.keys;
    sp.key_cap = static_cast<int64_t>(a.max_pages) * (sp.by_token ? P : 1);
    sp.list = s.list;
    sp.list_count = s.list_count;
    sp.list_mask = s.list_mask;
    const dim3 grid(a.n_seqs, Hkv);
    if (D == 64) select_kernel<64><<<grid, kSelThreads, 0, st>>>(sp);
    else select_kernel<128><<<grid, kSelThreads, 0, st>>>(sp);
    check_launch("attention select");
  }
  if (a.n_rows > 0) {
    DecodeParams dp{};
    dp.q = a.q;
    dp.out = a.out;
    dp.k = a.kv.k;
    dp.v = a.kv.v;
    dp.q_start = a.q_start;
    dp.ctx_len = a.ctx_len;
    dp.table = a.page_table;
    dp.list = selects ? s.list : nullptr;
    dp.list_count = selects ? s.list_count : nullptr;
    dp.list_mask = a.kind == 3 ? s.list_mask : nullptr;
    dp.part_acc = s.part_acc;
    dp.part_ml = s.part_ml;
    dp.n_seqs = a.n_seqs;
    dp.max_pages = a.max_pages;
    dp.n_heads = a.n_heads;
    dp.n_kv_heads = Hkv;
    dp.page_size = P;
    dp.splits = z.splits;
    dp.scale_log2 = a.scale * kLog2e;
    const dim3 grid(static_cast<unsigned>(a.n_rows) * z.splits, Hkv);
    if (D == 64) launch_decode<64>(G, grid, dp, st);
    else launch_decode<128>(G, grid, dp, st);
    check_launch("attention decode");
    if (z.splits > 1) {
      reduce_kernel<<<static_cast<unsigned>(a.n_rows) * a.n_heads, D, 0, st>>>(s.part_acc, s.part_ml, a.out,
                                                                                z.splits, D);
      check_launch("attention reduce");
    }
  }
  if (a.sel_pages) {
    write_selection_kernel<<<dim3(a.n_seqs, Hkv), 128, 0, st>>>(a.q_start, a.ctx_len, a.page_table,
                                                               selects ? s.list : nullptr, s.list_count,
                                                               a.max_pages, Hkv, P, a.sel_pages, a.sel_counts);
    check_launch("attention selection output");
  }
}

}  // namespace kf::cuda

// Paged attention on the GPU (DESIGN.md, Attention policies).
//
// Kernels:
//  - decode_kernel: split-K flash decoding. Block = (row, KV head, split), 4
//    warps; a warp takes 16 token slots of one page at a time (K and V loads
//    for all 16 issued before any math) and serves all G query heads of the
//    group from that one load: with FMAs and shuffles for G = 1 (WarpState),
//    on tensor cores for larger groups (WarpStateMma). Page ids for the
//    next 32 tiles can be fetched by the warp's lanes at once (PREFETCH).
//    Decode rows of selecting policies read their page list. When the batch
//    has more rows than sequences (a prefill chunk is present) a block is
//    (sequence, KV head, split) and skips multi-row sequences, which
//    prefill.cu serves on tensor cores; otherwise a block is (row, KV head,
//    split) and rows of a multi-row sequence (possible only next to empty
//    sequences) take this path over their causal prefix.
//  - reduce_kernel: merges the splits' (max, sum, acc) partials.
//  - select_kernel (select.cuh): the page list of each (sequence, KV head),
//    for batches that mix prefill and decode rows.
//  - prefill_attention (prefill.cu): tensor-core causal attention for the
//    rows of multi-row sequences, launched when n_rows > n_seqs.
//  - sparse_decode_kernel: for a pure decode batch under blocktopk / local /
//    topk, one block per (sequence, KV head) selects its pages and attends to
//    them in the same launch: no list round trip, no splits, no reduction.
//    Page 0 and the local pages, which it reads whatever the scores say, go
//    to shared memory by bulk copies while it ranks the others (StagedPages).
//    Under Backend::qkv_attention it then writes the summary of the page its
//    row's new key completed, for its KV head (no summary kernel runs).
#include <algorithm>
#include <memory>
#include <type_traits>

#include "backend/cuda/decode_splits.h"
#include "backend/cuda/select.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kWarps = 4;        // warps per attention block
constexpr int kTile = 16;        // token slots a warp handles per step
constexpr int kSelThreads = 256;  // threads of the stand-alone select kernel
// The fused sparse kernel's staged known pages: at most this many bytes of
// shared memory (2 blocks of it per SM beside their static ~20-45 KB) and
// page slots (one bulk copy per K or V page by a lane of warp 0).
constexpr int64_t kStageBytes = 48 * 1024;
constexpr int64_t kMaxStaged = 16;
// The dense decode kernel takes the bulk-copy ring (visit_tiles_bulk) from
// this many tiles per warp up (AttnArgs::bulk_dense -1).
constexpr int kBulkMinTilesPerWarp = 8;

// Whether slot tok of a tile is read: inside the page's ntok filled slots
// and kept by the (topk oracle's) token mask.
__device__ __forceinline__ bool slot_read(int tok, int ntok, uint32_t mask) {
  return tok < ntok && ((mask >> (tok & 31)) & 1u);
}

// 16 bytes of K or V: streamed from the pool, or (SMEM) from the block's
// staged copy of a page in shared memory (the fused sparse kernel's known pages).
template <bool SMEM>
__device__ __forceinline__ uint4 ld_kv(const bf16_t* p) {
  if constexpr (SMEM) return *reinterpret_cast<const uint4*>(p);
  else return ld_stream(p);
}

// Sequence of query row r: the last s with q_start[s] <= r (fast path: one row per sequence).
__device__ __forceinline__ int seq_of_row(const int32_t* q_start, int n_seqs, int r) {
  if (r < n_seqs && q_start[r] == r && q_start[r + 1] == r + 1) return r;
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
  int n_seqs, max_pages, n_heads, n_kv_heads, page_size, splits, n_pages;
  int by_seq;        // 1: block slot = sequence, multi-row sequences skipped (prefill.cu)
  float scale_log2;  // softmax scale * log2(e): logits live in base 2
  // Per-sequence policies (AttnArgs::seq_policy) or null. skip_selecting: this
  // launch serves dense sequences only (the fused sparse kernel serves the others).
  const int32_t* seq_policy;
  int skip_selecting;
  // Fused sparse kernel only: slots [n_rows] of this step's new keys (or
  // null) whose completed pages' summaries it writes after attending.
  const int32_t* summary_slots;
  KvPool pool;  // where those summaries go
  // Fused sparse kernel only: page slots of its dynamic shared memory for the
  // known pages (StagedPages; 0: none staged).
  int stage_pages;
};

// Whether sequence s of a batch reads a page list (a selecting policy).
__device__ __forceinline__ bool selecting(const int32_t* seq_policy, int s, bool all_select) {
  return seq_policy ? seq_policy[3 * s] != static_cast<int>(AttnKind::Dense) : all_select;
}

// What one (row, KV head) reads: logical pages list[0..n_items) (or 0..n_items)
// of a sequence whose causal length is T.
struct RowPages {
  const int32_t* pt;     // the sequence's page table row
  const int32_t* list;   // null: pages 0..n_items-1
  const uint32_t* mask;  // null: every token of a page
  int T, n_items;
};

// One warp's online-softmax state for the G query heads of a group; lane
// (c, sub) holds dims [8c, 8c+8) and sees rows sub, sub+RPR, ... of each tile.
template <int D, int G>
struct WarpState {
  float qf[G][8], m[G], l[G], acc[G][8];

  __device__ void init(const bf16_t* q_group, float scale_log2, int c) {  // q_group: [G][D]
#pragma unroll
    for (int g = 0; g < G; ++g) {
      unpack8(*reinterpret_cast<const uint4*>(q_group + g * D + c * 8), qf[g]);
#pragma unroll
      for (int e = 0; e < 8; ++e) qf[g][e] *= scale_log2;
      m[g] = kNegInf;
      l[g] = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[g][e] = 0.f;
    }
  }

  // One tile: slots tok0.. of the page whose K/V for this KV head start at
  // base; slots >= ntok or outside mask are skipped.
  template <bool SMEM = false>
  __device__ __forceinline__ void tile(const bf16_t* kpool, const bf16_t* vpool, int64_t base, int tok0, int ntok,
                                       uint32_t mask) {
    constexpr int LPR = D / 8, RPR = 32 / LPR, NI = kTile / RPR;
    const int lane = threadIdx.x & 31, sub = lane / LPR;
    base += (lane % LPR) * 8;
    uint4 kr[NI], vr[NI];
    bool ok[NI];
#pragma unroll
    for (int i = 0; i < NI; ++i) {
      const int tok = tok0 + sub + i * RPR;
      ok[i] = slot_read(tok, ntok, mask);
      kr[i] = make_uint4(0, 0, 0, 0);
      vr[i] = make_uint4(0, 0, 0, 0);
      if (ok[i]) {
        kr[i] = ld_kv<SMEM>(kpool + base + static_cast<int64_t>(tok) * D);
        vr[i] = ld_kv<SMEM>(vpool + base + static_cast<int64_t>(tok) * D);
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
    if (!any) return;  // warp-uniform: every slot of the tile was masked
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

  // Lanes holding the same dims saw different rows: add them up, then stage
  // this warp's (m, l, acc) in shared memory for the block-level merge.
  __device__ void stage(float (*sm_acc)[G][D], float (*sm_m)[G], float (*sm_l)[G], int warp) {
    constexpr int LPR = D / 8;
    const int lane = threadIdx.x & 31, c = lane % LPR, sub = lane / LPR;
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
  }
};

// The same online softmax on tensor cores, for query groups of
// kMmaMinGroup..8: the scalar state's shuffles and FMAs grow with G and make
// it compute-bound at G >= 4 (0.75 of copy bandwidth at G 4, ~0.5 at G 8;
// on the H200 this state reads at 1.03 of copy at G 2 and 4 against 0.99 for
// the scalar one at G 2; at G 1 the scalar one is 2.5% faster),
// while an m16n8k16 serves up to 8 query heads for the same K/V bytes.
// Per tile of 16 slots, with lane = (g, t4) = (lane / 4, lane % 4):
//   S = Q K^T    rows = heads (G of 16, the rest zero), 2 n-tiles of 8 slots;
//                lane holds head g at slots 2t4, 2t4+1, 8+2t4, 9+2t4;
//   online softmax in fp32 per head (base 2);
//   O^T += V^T P^T   M = 16 dims per m-tile, N = 8 heads, K = the 16 slots:
//                P^T's B fragment is exactly what S left in the lane, and
//                the lane gets heads 2t4, 2t4+1 of its dims.
// No shared memory: fragments come straight from global memory, 16 bytes a
// load, by permuting the dimensions: Q K^T sums over dims in any order, so
// lane (g, t4) loads dims [32m + 8t4, +8) of slot g (and of Q row g) as its
// k-pairs of k-steps 2m and 2m+1; in V^T, m-tile mt's rows g and g+8 are dims
// DPG*g + 2mt and +1, so a lane loads dims [DPG*g, +DPG) of the four slots
// its P covers and pairs two slots' values per register with a byte permute.
// P is rounded to bf16 for the product, as in prefill.cu.
template <int D, int G>
struct WarpStateMma {
  static constexpr int KS = D / 16;   // k-steps of Q K^T = m-tiles of O^T
  static constexpr int DPG = D / 8;   // dims of O per lane group
  uint32_t qa[KS][2];  // Q row g as A fragments (a0, a2); rows 8..15 are zero
  float o[KS][4];      // O^T accumulators: heads 2t4, 2t4+1 of dims DPG*g + 2mt (+1)
  float m, l;          // head g's running max (base 2) and this lane's share of its sum
  float scale;

  __device__ void init(const bf16_t* q_group, float scale_log2, int) {  // q_group: [G][D]
    const int lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int mm = 0; mm < D / 32; ++mm) {
      const uint4 w =
          g < G ? *reinterpret_cast<const uint4*>(q_group + g * D + 32 * mm + 8 * t4) : make_uint4(0, 0, 0, 0);
      qa[2 * mm][0] = w.x;
      qa[2 * mm][1] = w.y;
      qa[2 * mm + 1][0] = w.z;
      qa[2 * mm + 1][1] = w.w;
    }
#pragma unroll
    for (int j = 0; j < KS; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[j][e] = 0.f;
    m = kNegInf;
    l = 0.f;
    scale = scale_log2;
  }

  static __device__ __forceinline__ uint32_t word(const uint4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
  }

  template <bool SMEM = false>
  __device__ __forceinline__ void tile(const bf16_t* kpool, const bf16_t* vpool, int64_t base, int tok0, int ntok,
                                       uint32_t mask) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    // K of slots g and 8 + g (the two n-tiles); V of the four slots this lane's P covers.
    uint4 kr[2][D / 32], vr[4][DPG / 8];
    bool vok[4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const int tok = tok0 + nt * 8 + g;
      const bool ok = slot_read(tok, ntok, mask);
#pragma unroll
      for (int mm = 0; mm < D / 32; ++mm)
        kr[nt][mm] = ok ? ld_kv<SMEM>(kpool + base + static_cast<int64_t>(tok) * D + 32 * mm + 8 * t4)
                        : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int tok = tok0 + 2 * t4 + (i & 1) + (i >> 1) * 8;
      vok[i] = slot_read(tok, ntok, mask);
#pragma unroll
      for (int u = 0; u < DPG / 8; ++u)
        vr[i][u] = vok[i] ? ld_kv<SMEM>(vpool + base + static_cast<int64_t>(tok) * D + DPG * g + 8 * u)
                          : make_uint4(0, 0, 0, 0);
    }
    float s[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; ++kk) {
      const uint32_t a[4] = {qa[kk][0], 0u, qa[kk][1], 0u};
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
        mma16816(s[nt], a, word(kr[nt][kk / 2], 2 * (kk & 1)), word(kr[nt][kk / 2], 2 * (kk & 1) + 1));
    }
    float x[4] = {s[0][0], s[0][1], s[1][0], s[1][1]};  // head g at the slots of vok
    float mt = kNegInf;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      x[i] = vok[i] ? x[i] * scale : kNegInf;
      mt = fmaxf(mt, x[i]);
    }
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
    mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
    if (mt == kNegInf) return;  // warp-uniform: masking is per slot, and a quad sees all 16
    const float mn = fmaxf(m, mt), corr = ex2(m - mn);
    m = mn;
    float pr[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) pr[i] = ex2(x[i] - mn);
    l = l * corr + (pr[0] + pr[1]) + (pr[2] + pr[3]);
    // This lane's O^T columns are heads 2t4 and 2t4+1: their corrections live in lanes 8t4 and 8t4+4.
    const float c0 = __shfl_sync(0xffffffffu, corr, 8 * t4), c1 = __shfl_sync(0xffffffffu, corr, 8 * t4 + 4);
    const uint32_t b0 = pack_bf2(pr[0], pr[1]), b1 = pack_bf2(pr[2], pr[3]);  // P^T: slots x head g
#pragma unroll
    for (int mm = 0; mm < KS; ++mm) {
      o[mm][0] *= c0;
      o[mm][1] *= c1;
      o[mm][2] *= c0;
      o[mm][3] *= c1;
      // V^T rows g, g+8 = dims DPG*g + 2mm, +1 = the low, high halves of word mm of the lane's dims.
      const uint32_t w0 = word(vr[0][mm / 4], mm % 4), w1 = word(vr[1][mm / 4], mm % 4);
      const uint32_t w2 = word(vr[2][mm / 4], mm % 4), w3 = word(vr[3][mm / 4], mm % 4);
      const uint32_t a[4] = {__byte_perm(w0, w1, 0x5410u), __byte_perm(w0, w1, 0x7632u),
                             __byte_perm(w2, w3, 0x5410u), __byte_perm(w2, w3, 0x7632u)};
      mma16816(o[mm], a, b0, b1);
    }
  }

  // Lane (g, t4) holds heads 2t4, 2t4+1 at dims DPG*g + 2mm (+1); the quad
  // of head g holds shares of its sum.
  __device__ void stage(float (*sm_acc)[G][D], float (*sm_m)[G], float (*sm_l)[G], int warp) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int head = 2 * t4 + hh;
      if (head < G)
#pragma unroll
        for (int mm = 0; mm < KS; ++mm) {
          sm_acc[warp][head][DPG * g + 2 * mm] = o[mm][hh];
          sm_acc[warp][head][DPG * g + 2 * mm + 1] = o[mm][2 + hh];
        }
    }
    if (g < G && t4 == 0) {
      sm_m[warp][g] = m;
      sm_l[warp][g] = l;
    }
  }
};

// Query groups from this size up take the tensor-core state (a build option
// so the crossover can be re-measured: `dev/cuda/gpu.sh mma_all`,
// bench/results/h200_attention.jsonl).
#ifndef KINFER_ATTN_MMA_MIN_GROUP
#define KINFER_ATTN_MMA_MIN_GROUP 2
#endif
constexpr int kMmaMinGroup = KINFER_ATTN_MMA_MIN_GROUP;
template <int D, int G>
using DecodeState = std::conditional_t<(G >= kMmaMinGroup), WarpStateMma<D, G>, WarpState<D, G>>;

// Pages of a (sequence, KV head) the fused sparse kernel copied to shared
// memory while it selected (it knows them before it scores: page 0 and the
// local window [end, n)). Slot i holds K [P][D] then V [P][D]: page 0 at
// slot 0, page end + i - 1 at slot i, for i < count (0: none staged).
struct StagedPages {
  const bf16_t* kv = nullptr;
  int end = 0, count = 0;
  __device__ int slot(int logical) const {
    if (count == 0) return -1;
    if (logical == 0) return 0;
    const int i = 1 + logical - end;
    return logical >= end && i < count ? i : -1;
  }
};

// Visits tiles t0, t0+step, ... < t1 of a row (tile = kTile slots of one
// page) and feeds each to the warp state. PREFETCH: the warp's lanes look up
// the next 32 tiles' pages at once, so a tile does not wait on a table
// lookup (and tiles of staged pages read shared memory); else each tile
// looks up its own.
template <bool PREFETCH, class State>
__device__ void visit_tiles(State& ws, const RowPages& rp, const bf16_t* kpool, const bf16_t* vpool, int Hkv, int h,
                            int P, int D, int t0, int t1, int step, const StagedPages& staged = StagedPages{}) {
  const int lane = threadIdx.x & 31;
  const int tpp = (P + kTile - 1) / kTile;
  if constexpr (!PREFETCH) {
    for (int t = t0; t < t1; t += step) {
      const int item = tpp == 1 ? t : t / tpp;
      const int logical = rp.list ? rp.list[item] : item;
      const uint32_t mask = rp.mask ? rp.mask[item] : 0xffffffffu;
      ws.tile(kpool, vpool, (static_cast<int64_t>(rp.pt[logical]) * Hkv + h) * P * D,
              tpp == 1 ? 0 : (t % tpp) * kTile, min(P, rp.T - logical * P), mask);
    }
  } else {
    for (int tb = t0; tb < t1; tb += 32 * step) {
      int my_page = 0, my_ntok = 0, my_tok0 = 0, my_slot = -1;
      uint32_t my_mask = 0;
      const int tj = tb + lane * step;
      if (tj < t1) {
        const int item = tpp == 1 ? tj : tj / tpp;
        const int logical = rp.list ? rp.list[item] : item;
        my_tok0 = tpp == 1 ? 0 : (tj % tpp) * kTile;
        my_mask = rp.mask ? rp.mask[item] : 0xffffffffu;
        my_page = rp.pt[logical];
        my_ntok = min(P, rp.T - logical * P);
        my_slot = staged.slot(logical);
      }
      const int nb = min(32, (t1 - tb + step - 1) / step);
      for (int j = 0; j < nb; ++j) {
        const int page = __shfl_sync(0xffffffffu, my_page, j);
        const int ntok = __shfl_sync(0xffffffffu, my_ntok, j);
        const int tok0 = __shfl_sync(0xffffffffu, my_tok0, j);
        const uint32_t mask = __shfl_sync(0xffffffffu, my_mask, j);
        const int slot = __shfl_sync(0xffffffffu, my_slot, j);
        if (slot >= 0)
          ws.template tile<true>(staged.kv, staged.kv + P * D, static_cast<int64_t>(slot) * 2 * P * D, tok0, ntok,
                                 mask);
        else
          ws.tile(kpool, vpool, (static_cast<int64_t>(page) * Hkv + h) * P * D, tok0, ntok, mask);
      }
    }
  }
}

// visit_tiles through a ring of kStages tiles in shared memory per warp
// (ring: [kStages][K, V][kTile][D], bars: kStages mbarriers): lane 0 issues
// each tile's K and V rows as two bulk copies kStages tiles ahead, so the
// warp always has bytes in flight, also while it computes (the register
// path has them only between a tile's loads and its math). Lane 0 looks up
// the next tile's page right after issuing one, so the lookup's latency
// passes while the warp computes.
constexpr int kStages = 2;  // 3 was 0.4-1% slower in the step (docs/cuda.md)
template <class State>
__device__ void visit_tiles_bulk(State& ws, const RowPages& rp, const bf16_t* kpool, const bf16_t* vpool, int Hkv,
                                 int h, int P, int D, int t0, int t1, int step, bf16_t* ring, uint64_t* bars) {
  const int lane = threadIdx.x & 31;
  const int tpp = (P + kTile - 1) / kTile;
  const int n = t0 < t1 ? (t1 - t0 + step - 1) / step : 0;  // this warp's tiles
  auto item_of = [&](int i) { return tpp == 1 ? t0 + i * step : (t0 + i * step) / tpp; };
  auto tok0_of = [&](int i) { return tpp == 1 ? 0 : ((t0 + i * step) % tpp) * kTile; };
  auto offset_of = [&](int i) {  // element offset of tile i's first slot (K and V alike)
    const int item = item_of(i), logical = rp.list ? rp.list[item] : item;
    return (static_cast<int64_t>(rp.pt[logical]) * Hkv + h) * P * D + static_cast<int64_t>(tok0_of(i)) * D;
  };
  int64_t next_off = lane == 0 && n > 0 ? offset_of(0) : 0;
  auto issue = [&](int i) {  // lane 0: tile i into stage i % kStages
    const int stage = i % kStages;
    const unsigned bytes = min(kTile, P - tok0_of(i)) * D * sizeof(bf16_t);
    mbar_expect_bytes(&bars[stage], 2 * bytes);
    bulk_copy_stream(ring + stage * 2 * kTile * D, kpool + next_off, bytes, &bars[stage]);
    bulk_copy_stream(ring + (stage * 2 + 1) * kTile * D, vpool + next_off, bytes, &bars[stage]);
    if (i + 1 < n) next_off = offset_of(i + 1);
  };
  if (lane == 0)
    for (int i = 0; i < min(n, kStages); ++i) issue(i);
  for (int i = 0; i < n; ++i) {
    const int stage = i % kStages, item = item_of(i), tok0 = tok0_of(i);
    const int logical = rp.list ? rp.list[item] : item;
    const uint32_t mask = rp.mask ? rp.mask[item] : 0xffffffffu;
    mbar_wait(&bars[stage], (i / kStages) & 1);
    // The stage holds slots tok0.. of the page: base -tok0 * D puts slot tok at row tok - tok0.
    ws.template tile<true>(ring + stage * 2 * kTile * D, ring + (stage * 2 + 1) * kTile * D,
                           -static_cast<int64_t>(tok0) * D, tok0, min(P, rp.T - logical * P), mask);
    __syncwarp();  // every lane has read the stage
    if (lane == 0 && i + kStages < n) issue(i + kStages);
  }
}

// Block-level merge of NW warps' staged states (after a barrier). Writes the
// normalised bf16 output at (row, head) rh0 + g (partial == null) or this
// split's unnormalised partial at slot ph0 + g.
template <int D, int G, int NW>
__device__ void merge_warps(const float (*sm_acc)[G][D], const float (*sm_m)[G], const float (*sm_l)[G],
                            bf16_t* out, int64_t rh0, int64_t ph0, float* part_acc, float* part_ml, int splits,
                            int split) {
  for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
    const int g = idx / D, d = idx % D;
    float M = kNegInf;
#pragma unroll
    for (int w = 0; w < NW; ++w) M = fmaxf(M, sm_m[w][g]);
    float L = 0.f, A = 0.f;
    if (M != kNegInf)
#pragma unroll
      for (int w = 0; w < NW; ++w) {
        const float f = ex2(sm_m[w][g] - M);
        L += sm_l[w][g] * f;
        A += sm_acc[w][g][d] * f;
      }
    if (part_acc == nullptr) {
      out[(rh0 + g) * D + d] = to_bf(L > 0.f ? A / L : 0.f);
    } else {
      const int64_t pi = (ph0 + g) * splits + split;
      part_acc[pi * D + d] = A;
      if (d == 0) {
        part_ml[pi * 2] = M;
        part_ml[pi * 2 + 1] = L;
      }
    }
  }
}

// BULK: the warps stream their tiles through shared memory by bulk copies
// (visit_tiles_bulk; dynamic shared memory kWarps * ring_elems(D) bf16).
__host__ __device__ constexpr int ring_elems(int D) { return kStages * 2 * kTile * D; }
template <int D, int G, bool PREFETCH, int MINB, bool BULK>
__global__ void __launch_bounds__(kWarps * 32, MINB) decode_kernel(DecodeParams p) {
  extern __shared__ __align__(128) uint8_t ring_smem[];  // BULK: [kWarps][kStages][K, V][kTile][D] bf16
  __shared__ uint64_t ring_bars[kWarps][kStages];
  if constexpr (BULK) {
    if (threadIdx.x < kWarps * kStages) mbar_init(&ring_bars[threadIdx.x / kStages][threadIdx.x % kStages]);
    __syncthreads();
  }
  griddep_wait();
  __shared__ float sm_acc[kWarps][G][D];
  __shared__ float sm_m[kWarps][G], sm_l[kWarps][G];
  const int slot = blockIdx.x / p.splits, split = blockIdx.x % p.splits, h = blockIdx.y;
  const int warp = threadIdx.x >> 5, c = (threadIdx.x & 31) % (D / 8);
  const int s = p.by_seq ? slot : seq_of_row(p.q_start, p.n_seqs, slot);
  const int q0 = p.q_start[s], rows = p.q_start[s + 1] - q0;
  if (p.by_seq && rows != 1) return;  // empty, or a prefill chunk (prefill.cu)
  const bool sel = rows == 1 && selecting(p.seq_policy, s, p.list != nullptr);
  if (p.skip_selecting && sel) return;  // the fused sparse kernel serves it
  const int r = p.by_seq ? q0 : slot;
  const int P = p.page_size, Hkv = p.n_kv_heads;
  const int64_t pair = static_cast<int64_t>(s) * Hkv + h;
  const bool use_list = p.list != nullptr && sel;
  RowPages rp;
  rp.pt = p.table + static_cast<int64_t>(s) * p.max_pages;
  rp.T = p.ctx_len[s] - rows + (r - q0) + 1;  // causal length of this row
  rp.list = use_list ? p.list + pair * p.max_pages : nullptr;
  rp.mask = use_list && p.list_mask ? p.list_mask + pair * p.max_pages : nullptr;
  rp.n_items = use_list ? p.list_count[pair] : (rp.T + P - 1) / P;
  const int n_tiles = rp.n_items * ((P + kTile - 1) / kTile);
  const int per = (n_tiles + p.splits - 1) / p.splits;
  const int t0 = split * per, t1 = min(n_tiles, t0 + per);

  const int64_t rh0 = static_cast<int64_t>(r) * p.n_heads + h * G;
  DecodeState<D, G> ws;
  ws.init(p.q + rh0 * D, p.scale_log2, c);
  if constexpr (BULK)
    visit_tiles_bulk(ws, rp, p.k, p.v, Hkv, h, P, D, t0 + warp, t1, kWarps,
                     reinterpret_cast<bf16_t*>(ring_smem) + warp * ring_elems(D), ring_bars[warp]);
  else
    visit_tiles<PREFETCH>(ws, rp, p.k, p.v, Hkv, h, P, D, t0 + warp, t1, kWarps);
  ws.stage(sm_acc, sm_m, sm_l, warp);
  __syncthreads();
  merge_warps<D, G, kWarps>(sm_acc, sm_m, sm_l, p.out, rh0, static_cast<int64_t>(slot) * p.n_heads + h * G,
                            p.splits == 1 ? nullptr : p.part_acc, p.part_ml, p.splits, split);
}

// Pure decode batch under a selecting policy: block (s, h) selects the pages
// of its row and attends to them. A sequence with several rows (only possible
// here when another has none) is served row by row, densely.
template <int D, int G, int NW, int MINB, bool PREFETCH>
__global__ void __launch_bounds__(NW * 32, MINB) sparse_decode_kernel(SelectParams sp, DecodeParams p) {
  KF_PHASE(0);  // phases: dev/cuda (KINFER_ATTN_PHASES); compiled out otherwise
  extern __shared__ __align__(128) uint8_t staged_smem[];  // [stage_pages][K, V][P][D] bf16
  __shared__ SelectSmem<D, NW * 32> sel;
  __shared__ float sm_acc[NW][G][D];
  __shared__ float sm_m[NW][G], sm_l[NW][G];
  __shared__ uint64_t stage_bar;
  __shared__ int stage_end, stage_count;
  if (threadIdx.x == 0) {
    stage_count = 0;
    if (p.stage_pages > 0) mbar_init(&stage_bar);
  }
  griddep_wait();
  KF_PHASE(1);
  const int s = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x >> 5, c = (threadIdx.x & 31) % (D / 8);
  if (!selecting(sp.seq_policy, s, true)) return;  // a dense sequence: the split-K kernel serves it
  const int P = p.page_size, Hkv = p.n_kv_heads;
  bf16_t* staged = reinterpret_cast<bf16_t*>(staged_smem);
  // The known pages (page 0, the local window) go to shared memory by bulk
  // copies once scoring is done: their bytes move during the radix select,
  // when the warps have no loads in flight (H200: steps 1-1.5% faster than
  // reading them from the pool with the chosen pages, and than copying them
  // before scoring; docs/cuda.md).
  auto fetch_known = [&](int end, int n) {
    if (p.stage_pages == 0 || threadIdx.x >= 32) return;
    const int count = min(1 + n - end, p.stage_pages), lane = threadIdx.x;
    const unsigned page_bytes = P * D * sizeof(bf16_t);
    if (lane == 0) {
      stage_end = end;
      stage_count = count;
      mbar_expect_bytes(&stage_bar, 2 * count * page_bytes);
    }
    __syncwarp();
    if (lane < 2 * count) {  // lane 2i: page i's K, 2i + 1: its V
      const int i = lane >> 1, logical = i == 0 ? 0 : end + i - 1;
      const int64_t page = p.table[static_cast<int64_t>(s) * p.max_pages + logical];
      const bf16_t* src = (lane & 1 ? p.v : p.k) + (page * Hkv + h) * P * D;
      bulk_copy_stream(staged + static_cast<int64_t>(lane) * P * D, src, page_bytes, &stage_bar);
    }
  };
  select_pages<D, NW * 32>(sp, s, h, sel, fetch_known);
  __syncthreads();  // the list (global memory) is complete
  StagedPages known;
  if (stage_count > 0) {
    mbar_wait(&stage_bar);
    known.kv = staged;
    known.end = stage_end;
    known.count = stage_count;
  }
  KF_PHASE(5);
  const int q0 = p.q_start[s], rows = p.q_start[s + 1] - q0;
  const int64_t pair = static_cast<int64_t>(s) * Hkv + h;
  const int tpp = (P + kTile - 1) / kTile;
  for (int i = 0; i < rows; ++i) {
    const int r = q0 + i;
    RowPages rp;
    rp.pt = p.table + static_cast<int64_t>(s) * p.max_pages;
    rp.T = p.ctx_len[s] - rows + i + 1;
    rp.list = rows == 1 ? p.list + pair * p.max_pages : nullptr;
    rp.mask = rows == 1 && p.list_mask ? p.list_mask + pair * p.max_pages : nullptr;
    rp.n_items = rows == 1 ? p.list_count[pair] : (rp.T + P - 1) / P;
    const int64_t rh0 = static_cast<int64_t>(r) * p.n_heads + h * G;
    DecodeState<D, G> ws;
    ws.init(p.q + rh0 * D, p.scale_log2, c);
    visit_tiles<PREFETCH>(ws, rp, p.k, p.v, Hkv, h, P, D, warp, rp.n_items * tpp, NW, known);
    ws.stage(sm_acc, sm_m, sm_l, warp);
    __syncthreads();
    KF_PHASE(6);  // every warp's pages attended
    merge_warps<D, G, NW>(sm_acc, sm_m, sm_l, p.out, rh0, rh0, nullptr, nullptr, 1, 0);
    __syncthreads();
  }
  KF_PHASE(7);
  if (p.summary_slots)  // as kv_summary_kernel, for head h
    for (int i = 0; i < rows; ++i) {
      const int slot = p.summary_slots[q0 + i];
      if (slot < 0 || slot >= p.n_pages * P || slot % P != P - 1) continue;
      if (threadIdx.x < 32) write_page_summary(p.pool, static_cast<int64_t>(slot / P) * Hkv + h);
    }
}

template <int D>
__global__ void __launch_bounds__(kSelThreads) select_kernel(SelectParams p) {
  __shared__ SelectSmem<D, kSelThreads> sm;
  select_pages<D, kSelThreads>(p, blockIdx.x, blockIdx.y, sm, [](int, int) {});
}

// One block per (slot, head): merge the splits' partials. Slot = row, or
// sequence when by_seq (then only single-row sequences have partials).
__global__ void reduce_kernel(const float* part_acc, const float* part_ml, bf16_t* out, int splits, int D,
                              const int32_t* q_start, int by_seq, int n_heads, const int32_t* skip_policy) {
  const int64_t rh = blockIdx.x;  // partial index: slot * n_heads + head
  int64_t orow = rh / n_heads;
  if (by_seq) {
    const int s = static_cast<int>(orow);
    if (q_start[s + 1] - q_start[s] != 1) return;
    orow = q_start[s];
  }
  // Mixed policies, pure decode (slot = row = sequence): rows of selecting
  // sequences were written by the fused sparse kernel.
  if (skip_policy && skip_policy[3 * orow] != static_cast<int>(AttnKind::Dense)) return;
  const int64_t oh = orow * n_heads + rh % n_heads;
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
    out[oh * D + d] = to_bf(L > 0.f ? A / L : 0.f);
  }
}

// PageSelection output: physical pages each (sequence, KV head) read, -1 padded.
__global__ void write_selection_kernel(const int32_t* q_start, const int32_t* ctx_len, const int32_t* table,
                                       const int32_t* list, const int32_t* list_count, int max_pages,
                                       int n_kv_heads, int page_size, const int32_t* seq_policy, int32_t* sel_pages,
                                       int32_t* sel_counts) {
  const int s = blockIdx.x, h = blockIdx.y;
  const int64_t pair = static_cast<int64_t>(s) * n_kv_heads + h;
  const int rows = q_start[s + 1] - q_start[s];
  const bool use_list = list != nullptr && rows == 1 && selecting(seq_policy, s, true);
  const int count = use_list ? list_count[pair] : rows > 0 ? (ctx_len[s] + page_size - 1) / page_size : 0;
  const int32_t* pt = table + static_cast<int64_t>(s) * max_pages;
  for (int i = threadIdx.x; i < max_pages; i += blockDim.x)
    sel_pages[pair * max_pages + i] = i < count ? pt[use_list ? list[pair * max_pages + i] : i] : -1;
  if (threadIdx.x == 0) sel_counts[pair] = count;
}

// Instantiates kernel<D, G> for G = 1..8 (the GQA group) and launches it.
template <int D, template <int, int> class K, typename... Args>
void launch_grouped(int G, dim3 grid, cudaStream_t st, const Args&... args) {
  switch (G) {
    case 1: K<D, 1>::launch(grid, st, args...); break;
    case 2: K<D, 2>::launch(grid, st, args...); break;
    case 3: K<D, 3>::launch(grid, st, args...); break;
    case 4: K<D, 4>::launch(grid, st, args...); break;
    case 5: K<D, 5>::launch(grid, st, args...); break;
    case 6: K<D, 6>::launch(grid, st, args...); break;
    case 7: K<D, 7>::launch(grid, st, args...); break;
    case 8: K<D, 8>::launch(grid, st, args...); break;
    default: fail("attention: no kernel for {} query heads per KV head", G);
  }
}
// The configurations below won a sweep on an H100 (bench/results/cuda_attention.md):
// dense: per-tile table lookups (the prefetching loop was 8% slower), no
// register cap; fused sparse: 8 warps, 2 blocks per SM, prefetched page ids.
template <int D, int G>
struct Decode {
  static void launch(dim3 grid, cudaStream_t st, const DecodeParams& p, bool bulk) {
    if (!bulk) return launch_pdl("attention decode", decode_kernel<D, G, false, 1, false>, grid, kWarps * 32, st, p);
    auto* kernel = decode_kernel<D, G, false, 1, true>;
    const int smem = kWarps * ring_elems(D) * static_cast<int>(sizeof(bf16_t));
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
          "attention decode: shared memory for the tile rings");
    launch_pdl_smem("attention decode", kernel, grid, kWarps * 32, smem, st, p);
  }
};
template <int D, int G>
struct SparseDecode {
  static constexpr int kNW = 8;
  static void launch(dim3 grid, cudaStream_t st, const SelectParams& sp, const DecodeParams& p, size_t smem) {
    auto* kernel = sparse_decode_kernel<D, G, kNW, 2, true>;
    if (smem > 0)
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
            "attention sparse decode: shared memory for the known pages");
    launch_pdl_smem("attention sparse decode", kernel, grid, kNW * 32, smem, st, sp, p);
  }
};

}  // namespace

void check_attention_shape(int head_dim, int group) {
  KF_CHECK(head_dim == 64 || head_dim == 128, "CUDA attention: head_dim {} unsupported (64 or 128)", head_dim);
  KF_CHECK(group >= 1 && group <= 8, "CUDA attention: {} query heads per KV head unsupported (1..8)", group);
}

// A pure decode batch (one row per sequence, as far as the host can tell)
// under a selecting policy takes the fused select+attend kernel; with mixed
// policies, the selecting sequences do (and the split-K kernel the dense ones).
static bool mixed(const AttnArgs& a) { return a.seq_policy != nullptr; }
static bool fused_sparse(const AttnArgs& a) { return (mixed(a) || a.kind != AttnKind::Dense) && a.n_rows == a.n_seqs; }
// More rows than sequences: some sequence has several rows, so prefill.cu
// runs and the decode kernel takes one slot per sequence (single-row ones only).
static bool has_prefill(const AttnArgs& a) { return a.n_rows > a.n_seqs; }

// The fused sparse kernel serves every sequence (no per-sequence policies),
// so each (sequence, KV head) block can write its own completed pages' summaries.
bool summaries_in_attention(const AttnArgs& a) { return fused_sparse(a) && !mixed(a); }

ScratchSize attention_scratch(const AttnArgs& a, int num_sms) {
  ScratchSize z;
  const int Hkv = a.kv.n_kv_heads, P = a.kv.page_size, D = a.kv.head_dim;
  const bool selects = mixed(a) || a.kind != AttnKind::Dense, by_token = a.kind == AttnKind::TopK;
  if (selects) {
    const int64_t n_pairs = static_cast<int64_t>(a.n_seqs) * Hkv;
    z.list = n_pairs * a.max_pages;
    z.list_count = n_pairs;
    z.list_mask = by_token ? n_pairs * a.max_pages : 0;
    z.keys = n_pairs * a.max_pages * (by_token ? P : 1);
  }
  if (fused_sparse(a) && !mixed(a)) return z;  // one block per (sequence, KV head), no splits
  const int tiles = a.max_pages * ((P + kTile - 1) / kTile);
  const int slots = has_prefill(a) ? a.n_seqs : a.n_rows;  // decode kernel slots (rows or sequences)
  z.splits = a.decode_splits > 0
                 ? a.decode_splits
                 : dense_decode_splits(static_cast<int64_t>(slots) * Hkv, tiles, a.n_heads / Hkv, num_sms, kWarps);
  if (z.splits > 1) {
    z.part_acc = static_cast<int64_t>(slots) * a.n_heads * z.splits * D;
    z.part_ml = static_cast<int64_t>(slots) * a.n_heads * z.splits * 2;
  }
  return z;
}

void attention(const AttnArgs& a, const AttnScratch& s, int num_sms, cudaStream_t st) {
  const int Hkv = a.kv.n_kv_heads, P = a.kv.page_size, D = a.kv.head_dim;
  const int G = a.n_heads / Hkv;
  check_attention_shape(D, G);
  KF_CHECK(a.kind != AttnKind::TopK || P <= 32, "topk attention on CUDA needs page_size <= 32 (got {})", P);
  KF_CHECK(!mixed(a) || a.kind != AttnKind::TopK, "the topk oracle cannot share a batch with other policies");
  if (a.n_seqs == 0) return;
  const ScratchSize z = attention_scratch(a, num_sms);
  const bool selects = mixed(a) || a.kind != AttnKind::Dense;
  SelectParams sp{};
  sp.q = a.q;
  sp.k = a.kv.k;
  sp.summary = a.kv.summary;
  sp.summary_kind = a.kv.summary_kind;
  sp.summary_scale = a.kv.summary_scale;
  sp.by_token = a.kind == AttnKind::TopK;
  sp.q_start = a.q_start;
  sp.ctx_len = a.ctx_len;
  sp.table = a.page_table;
  sp.n_seqs = a.n_seqs;
  sp.max_pages = a.max_pages;
  sp.n_heads = a.n_heads;
  sp.n_kv_heads = Hkv;
  sp.page_size = P;
  sp.local_pages = a.local_pages;
  sp.topk_pages = a.kind == AttnKind::Local ? 0 : a.topk_pages;  // local = blocktopk with k = 0
  sp.seq_policy = a.seq_policy;
  sp.keys = s.keys;
  sp.key_cap = static_cast<int64_t>(a.max_pages) * (sp.by_token ? P : 1);
  sp.list = s.list;
  sp.list_count = s.list_count;
  sp.list_mask = s.list_mask;
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
  dp.list_mask = a.kind == AttnKind::TopK ? s.list_mask : nullptr;
  dp.part_acc = s.part_acc;
  dp.part_ml = s.part_ml;
  dp.n_seqs = a.n_seqs;
  dp.max_pages = a.max_pages;
  dp.n_heads = a.n_heads;
  dp.n_kv_heads = Hkv;
  dp.page_size = P;
  dp.splits = z.splits;
  dp.by_seq = has_prefill(a) ? 1 : 0;
  dp.scale_log2 = a.scale * kLog2e;
  dp.seq_policy = a.seq_policy;
  dp.skip_selecting = 0;
  KF_CHECK(!a.summary_slots || summaries_in_attention(a), "attention: page summaries asked of a batch the fused "
           "sparse kernel does not serve whole");
  dp.summary_slots = a.summary_slots;
  dp.pool = a.kv;
  dp.n_pages = a.kv.n_pages;

  // Bulk-copied tiles pay where a warp streams many of them; a ring for
  // the first few only adds its set-up and cuts the blocks an SM holds
  // (H200, 3-tile ring: B8x4K 6% slower at 4 tiles a warp; 1.5-2% faster
  // from 8 up).
  const int tiles_per_warp = (a.max_pages * ((P + kTile - 1) / kTile) + z.splits * kWarps - 1) / (z.splits * kWarps);
  const bool bulk = a.bulk_dense == 1 || (a.bulk_dense < 0 && tiles_per_warp >= kBulkMinTilesPerWarp);
  if (fused_sparse(a)) {
    const dim3 grid(a.n_seqs, Hkv);
    // The known pages' shared memory: up to kStageBytes, one page slot (K and
    // V of a KV head) for page 0 and each local page.
    const int64_t slot_bytes = 2 * static_cast<int64_t>(P) * D * sizeof(bf16_t);
    dp.stage_pages = a.stage_known ? static_cast<int>(std::min<int64_t>({1 + a.local_pages, kStageBytes / slot_bytes,
                                                                        kMaxStaged})) : 0;
    const size_t smem = static_cast<size_t>(dp.stage_pages * slot_bytes);
    if (D == 64) launch_grouped<64, SparseDecode>(G, grid, st, sp, dp, smem);
    else launch_grouped<128, SparseDecode>(G, grid, st, sp, dp, smem);
    check_launch("attention sparse decode");
    if (mixed(a)) {  // the dense sequences of the batch, split-K
      DecodeParams dd = dp;
      dd.list = nullptr;
      dd.list_count = nullptr;
      dd.list_mask = nullptr;
      dd.skip_selecting = 1;
      const dim3 dgrid(static_cast<unsigned>(a.n_rows) * z.splits, Hkv);
      if (D == 64) launch_grouped<64, Decode>(G, dgrid, st, dd, bulk);
      else launch_grouped<128, Decode>(G, dgrid, st, dd, bulk);
      check_launch("attention decode (dense sequences)");
      if (z.splits > 1) {
        reduce_kernel<<<static_cast<unsigned>(a.n_rows) * a.n_heads, D, 0, st>>>(
            s.part_acc, s.part_ml, a.out, z.splits, D, a.q_start, 0, a.n_heads, a.seq_policy);
        check_launch("attention reduce (dense sequences)");
      }
    }
  } else {
    if (selects) {
      const dim3 grid(a.n_seqs, Hkv);
      if (D == 64) select_kernel<64><<<grid, kSelThreads, 0, st>>>(sp);
      else select_kernel<128><<<grid, kSelThreads, 0, st>>>(sp);
      check_launch("attention select");
    }
    const int slots = dp.by_seq ? a.n_seqs : a.n_rows;
    if (slots > 0) {
      const dim3 grid(static_cast<unsigned>(slots) * z.splits, Hkv);
      if (D == 64) launch_grouped<64, Decode>(G, grid, st, dp, bulk);
      else launch_grouped<128, Decode>(G, grid, st, dp, bulk);
      check_launch("attention decode");
      if (z.splits > 1) {
        reduce_kernel<<<static_cast<unsigned>(slots) * a.n_heads, D, 0, st>>>(s.part_acc, s.part_ml, a.out, z.splits,
                                                                               D, a.q_start, dp.by_seq, a.n_heads, nullptr);
        check_launch("attention reduce");
      }
    }
    if (has_prefill(a)) prefill_attention(a, st);
  }
  if (a.sel_pages) {
    write_selection_kernel<<<dim3(a.n_seqs, Hkv), 128, 0, st>>>(a.q_start, a.ctx_len, a.page_table,
                                                               selects ? s.list : nullptr, s.list_count,
                                                               a.max_pages, Hkv, P, a.seq_policy, a.sel_pages,
                                                               a.sel_counts);
    check_launch("attention selection output");
  }
}

#ifdef KINFER_ATTN_PHASES
std::string attention_phases_json(int n_blocks) {
  n_blocks = std::min(n_blocks, kPhaseBlocks);
  auto stamps = std::make_unique<PhaseStamps>();  // 320 KB: not on the stack
  const PhaseStamps& h = *stamps;
  check(cudaDeviceSynchronize(), "attention phases");
  check(cudaMemcpyFromSymbol(stamps.get(), g_phase_stamps, sizeof(PhaseStamps)), "attention phases");
  double cyc[kPhases] = {}, cycles_per_ns = 0;
  unsigned long long first = ~0ull, last = 0, last_start = 0, first_end = ~0ull;
  for (int b = 0; b < n_blocks; ++b) {
    for (int i = 1; i < kPhases; ++i) cyc[i] += double(h.clk[b][i] - h.clk[b][i - 1]) / n_blocks;
    cycles_per_ns += double(h.clk[b][kPhases - 1] - h.clk[b][0]) / double(h.wall[b][1] - h.wall[b][0] + 1) / n_blocks;
    first = std::min(first, h.wall[b][0]);
    last_start = std::max(last_start, h.wall[b][0]);
    first_end = std::min(first_end, h.wall[b][1]);
    last = std::max(last, h.wall[b][1]);
  }
  static const char* names[kPhases] = {"", "griddep_wait", "q_mean", "score", "radix_select", "mark_list",
                                       "attend", "merge"};
  double total = 0;
  for (int i = 1; i < kPhases; ++i) total += cyc[i];
  std::string out = "{";
  for (int i = 1; i < kPhases; ++i) out += fmt::format("\"{}_us\": {:.2f}, ", names[i], cyc[i] / cycles_per_ns / 1e3);
  return out + fmt::format("\"block_us\": {:.2f}, \"span_us\": {:.2f}, \"start_spread_us\": {:.2f}, "
                           "\"end_spread_us\": {:.2f}, \"sm_ghz\": {:.3f}, \"blocks\": {}}}",
                           total / cycles_per_ns / 1e3,
                           (last - first) / 1e3, (last_start - first) / 1e3, (last - first_end) / 1e3, cycles_per_ns,
                           n_blocks);
}
#endif

}  // namespace kf::cuda

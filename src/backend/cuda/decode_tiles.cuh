// The decode kernels' per-warp attention over tiles of 16 token slots
// (attention.cu): the online-softmax warp states (scalar for one query head
// per KV head, tensor cores for groups of 2-8), the walks over a row's tiles
// (K/V into registers, or through a shared-memory ring filled by bulk
// copies), the fused sparse kernel's staged pages, and the block-level merge
// of the warps' states. Device code only; included by attention.cu.
#pragma once
#include <type_traits>

#include "backend/cuda/common.cuh"

namespace kf::cuda {

constexpr int kTile = 16;  // token slots a warp handles per step

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

// What one (row, KV head) reads: logical pages list[0..n_items) (or 0..n_items)
// of a sequence whose causal length is T.
struct RowPages {
  const int32_t* pt;     // the sequence's page table row
  const int32_t* list;   // null: pages 0..n_items-1
  const uint32_t* mask;  // null: every token of a page
  int T, n_items;
};

// Tile t of a row (tpp tiles a page): its logical page, first slot, the
// page's filled slots and the token mask, as the three tile walks below read them.
struct TileRef {
  int logical, tok0, ntok;
  uint32_t mask;
};
__device__ __forceinline__ int tile_tok0(int t, int tpp) { return tpp == 1 ? 0 : (t % tpp) * kTile; }
__device__ __forceinline__ TileRef tile_ref(const RowPages& rp, int t, int tpp, int P) {
  const int item = tpp == 1 ? t : t / tpp;
  const int logical = rp.list ? rp.list[item] : item;
  return {logical, tile_tok0(t, tpp), min(P, rp.T - logical * P), rp.mask ? rp.mask[item] : 0xffffffffu};
}
// Element offset of a page's K (or V) rows for KV head h in the pool.
__device__ __forceinline__ int64_t page_offset(int page, int Hkv, int h, int P, int D) {
  return (static_cast<int64_t>(page) * Hkv + h) * P * D;
}

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
  __device__ int page(int slot) const { return slot == 0 ? 0 : end + slot - 1; }  // the logical page of a slot
  __device__ int slot(int logical) const {  // page's inverse, or -1
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
      const TileRef r = tile_ref(rp, t, tpp, P);
      ws.tile(kpool, vpool, page_offset(rp.pt[r.logical], Hkv, h, P, D), r.tok0, r.ntok, r.mask);
    }
  } else {
    for (int tb = t0; tb < t1; tb += 32 * step) {
      int my_page = 0, my_ntok = 0, my_tok0 = 0, my_slot = -1;
      uint32_t my_mask = 0;
      const int tj = tb + lane * step;
      if (tj < t1) {
        const TileRef r = tile_ref(rp, tj, tpp, P);
        my_tok0 = r.tok0;
        my_mask = r.mask;
        my_page = rp.pt[r.logical];
        my_ntok = r.ntok;
        my_slot = staged.slot(r.logical);
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
          ws.tile(kpool, vpool, page_offset(page, Hkv, h, P, D), tok0, ntok, mask);
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
  auto offset_of = [&](int i) {  // element offset of tile i's first slot (K and V alike)
    const TileRef r = tile_ref(rp, t0 + i * step, tpp, P);
    return page_offset(rp.pt[r.logical], Hkv, h, P, D) + static_cast<int64_t>(r.tok0) * D;
  };
  int64_t next_off = lane == 0 && n > 0 ? offset_of(0) : 0;
  auto issue = [&](int i) {  // lane 0: tile i into stage i % kStages
    const int stage = i % kStages;
    const unsigned bytes = min(kTile, P - tile_tok0(t0 + i * step, tpp)) * D * sizeof(bf16_t);
    mbar_expect_bytes(&bars[stage], 2 * bytes);
    bulk_copy_stream(ring + stage * 2 * kTile * D, kpool + next_off, bytes, &bars[stage]);
    bulk_copy_stream(ring + (stage * 2 + 1) * kTile * D, vpool + next_off, bytes, &bars[stage]);
    if (i + 1 < n) next_off = offset_of(i + 1);
  };
  if (lane == 0)
    for (int i = 0; i < min(n, kStages); ++i) issue(i);
  for (int i = 0; i < n; ++i) {
    const int stage = i % kStages;
    const TileRef r = tile_ref(rp, t0 + i * step, tpp, P);
    mbar_wait(&bars[stage], (i / kStages) & 1);
    // The stage holds slots tok0.. of the page: base -tok0 * D puts slot tok at row tok - tok0.
    ws.template tile<true>(ring + stage * 2 * kTile * D, ring + (stage * 2 + 1) * kTile * D,
                           -static_cast<int64_t>(r.tok0) * D, r.tok0, r.ntok, r.mask);
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

}  // namespace kf::cuda

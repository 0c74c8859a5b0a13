// Page selection for one (sequence, KV head) of a decode row, run by one
// thread block (DESIGN.md, Attention policies): writes the logical pages the
// query reads, ascending, to list[], their count to list_count[], and for the
// topk oracle a bit mask of the kept tokens of each listed page.
//
// blocktopk: score every candidate page (q̄·k̄ against its key summary), find
// the k-th largest score by a radix select on order-preserving integer keys,
// keep all keys above it and the lowest-index keys equal to it (ties -> lower
// page), then list page 0, the chosen pages, the local pages. local is the
// same with k = 0; topk ranks the candidate tokens (q̄·k) instead of pages.
#pragma once
#include <cub/block/block_scan.cuh>

#include "backend/cuda/common.cuh"
#include "backend/cuda/phases.cuh"

namespace kf::cuda {

struct SelectParams {
  const bf16_t* q;
  const bf16_t* k;
  const void* summary;
  attn::SummaryKind summary_kind;
  const float* summary_scale;  // int8 summaries: [n_pages, n_kv_heads]
  bool by_token;  // topk oracle: rank tokens, not pages
  const int32_t* q_start;
  const int32_t* ctx_len;
  const int32_t* table;
  int n_seqs, max_pages, n_heads, n_kv_heads, page_size, local_pages, topk_pages;
  // [n_seqs, 3] (AttnKind, local_pages, topk_pages) per sequence, or null:
  // then every sequence has local_pages / topk_pages (topk_pages 0 = local).
  const int32_t* seq_policy;
  uint32_t* keys;  // global scratch when the keys do not fit in shared memory
  int64_t key_cap;
  int32_t* list;
  int32_t* list_count;
  uint32_t* list_mask;
};

constexpr int kSmemKeys = 2048;  // candidates ranked in shared memory (8 KB)

template <int D, int NT>
struct SelectSmem {
  typename cub::BlockScan<int, NT>::TempStorage scan;
  float qbar[D];
  int hist[2][256];  // radix passes alternate: one is zeroed while the other is read
  uint32_t keys[kSmemKeys];
  int warp_gt[NT / 32], warp_eq[NT / 32];  // the marking pass's per-warp counts
  uint32_t prefix;
  int krem, bin_count;
};

// Warp 0 finds the 8-bit digit of the krem-th largest key from the 256-bin
// histogram: each lane owns 8 bins, a suffix sum over lanes picks the lane.
__device__ __forceinline__ void pick_digit(const int* hist, uint32_t prefix, int shift, int krem,
                                           uint32_t* out_prefix, int* out_krem, int* out_bin_count) {
  const int lane = threadIdx.x & 31;
  int cnt[8], sum = 0;
#pragma unroll
  for (int b = 0; b < 8; ++b) sum += (cnt[b] = hist[lane * 8 + b]);
  int suf = sum;  // keys in the bins of lanes >= lane
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_down_sync(0xffffffffu, suf, o);
    if (lane + o < 32) suf += v;
  }
  const int above = suf - sum;  // keys in higher lanes' bins
  if (above < krem && krem <= suf) {
    int cum = above, pick = 0, rem = 0;
    bool found = false;
#pragma unroll
    for (int b = 7; b >= 0; --b) {
      if (!found && cum + cnt[b] >= krem) {
        found = true;
        pick = b;
        rem = krem - cum;
      }
      if (!found) cum += cnt[b];
    }
    *out_prefix = prefix | (static_cast<uint32_t>(lane * 8 + pick) << shift);
    *out_krem = rem;
    *out_bin_count = cnt[pick];
  }
}

// keys[j] = order_key(score of item j), j < m, by NW warps of which this is
// warp `warp` (a block's, or one warp alone: NW 1). MODE 0: page summaries in
// bf16, 1: in f32, 2: tokens (topk oracle). LPR lanes per item, 8 dims each;
// each lane first looks up kUnroll items' pages, then issues all their loads,
// so a round costs two memory round trips for kUnroll items, not 2 per item.
template <int D, int NW, int MODE>
__device__ __forceinline__ void score_items(const SelectParams& p, const float* qbar, const int32_t* pt, int first,
                                            int h, int m, uint32_t* keys, int warp) {
  constexpr int LPR = D / 8, RPR = 32 / LPR, kUnroll = 8;
  constexpr int kStride = NW * RPR;  // items per round of the NW warps
  const int Hkv = p.n_kv_heads, P = p.page_size;
  const int lane = threadIdx.x & 31, c = lane % LPR, sub = lane / LPR;
  float qv[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) qv[e] = qbar[c * 8 + e];
  for (int j0 = warp * RPR + sub;; j0 += kStride * kUnroll) {
    if (j0 - sub >= m) break;  // warp-uniform
    int64_t off[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kStride;
      off[u] = -1;
      if (j < m) {
        if (MODE == 2) off[u] = ((static_cast<int64_t>(pt[first + j / P]) * Hkv + h) * P + j % P) * D + c * 8;
        else off[u] = (static_cast<int64_t>(pt[first + j]) * Hkv + h) * D + c * 8;
      }
    }
    float f[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (MODE == 1) {
        float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
        if (off[u] >= 0) {
          const float4* sp = reinterpret_cast<const float4*>(static_cast<const float*>(p.summary) + off[u]);
          a = sp[0];
          b = sp[1];
        }
        f[u][0] = a.x, f[u][1] = a.y, f[u][2] = a.z, f[u][3] = a.w;
        f[u][4] = b.x, f[u][5] = b.y, f[u][6] = b.z, f[u][7] = b.w;
      } else {
        const bf16_t* base = MODE == 2 ? p.k : static_cast<const bf16_t*>(p.summary);
        uint4 w = make_uint4(0, 0, 0, 0);
        if (off[u] >= 0) w = ld_stream(base + off[u]);
        unpack8(w, f[u]);
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
}

// score_items for int8 summaries (attn/summary.h): q̄ in 16 bits against the
// codes, exact int32 dot products by dp2a (two 16x8-bit products an
// instruction: the scoring phase does ~1/6 of the instructions of unpacking the
// codes to floats, which ran compute-bound at B64); 16 dims a lane, lane 0 of
// a page also loads its scale. Every warp derives q16 from the same q̄.
template <int D, int NW>
__device__ __forceinline__ void score_pages_i8(const SelectParams& p, const float* qbar, const int32_t* pt,
                                                int first, int h, int m, uint32_t* keys, int warp) {
  constexpr int LPR = D / 16, RPR = 32 / LPR, kUnroll = 8;  // 4 and 16: the same step time (H200)
  constexpr int kStride = NW * RPR;  // pages per round of the NW warps
  const int Hkv = p.n_kv_heads;
  const int lane = threadIdx.x & 31, c = lane % LPR, sub = lane / LPR;
  const uint8_t* codes = static_cast<const uint8_t*>(p.summary);
  float qmax = 0.f;
  for (int d = lane; d < D; d += 32) qmax = fmaxf(qmax, fabsf(qbar[d]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) qmax = fmaxf(qmax, __shfl_xor_sync(0xffffffffu, qmax, o));
  const float qscale = attn::i16_query_scale(qmax);
  auto q16 = [&](int d) { return static_cast<uint32_t>(static_cast<uint16_t>(attn::i16_encode(qbar[d], qscale))); };
  int qpair[8];  // q16 of dims c*16 + 2i, 2i+1 as the two halves dp2a takes
#pragma unroll
  for (int i = 0; i < 8; ++i) qpair[i] = static_cast<int>(q16(c * 16 + 2 * i) | (q16(c * 16 + 2 * i + 1) << 16));
  for (int j0 = warp * RPR + sub;; j0 += kStride * kUnroll) {
    if (j0 - sub >= m) break;  // warp-uniform
    int64_t ph[kUnroll];       // page * Hkv + h, or -1
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = j0 + u * kStride;
      ph[u] = j < m ? static_cast<int64_t>(pt[first + j]) * Hkv + h : -1;
    }
    uint4 w[kUnroll];
    float sc[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      w[u] = ph[u] >= 0 ? ld_stream(codes + ph[u] * D + c * 16) : make_uint4(0, 0, 0, 0);
      sc[u] = ph[u] >= 0 && c == 0 ? p.summary_scale[ph[u]] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int cw[4] = {static_cast<int>(w[u].x), static_cast<int>(w[u].y), static_cast<int>(w[u].z),
                         static_cast<int>(w[u].w)};
      int dot = 0;
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // bytes 0-1 of a word with dims 4i, 4i+1; bytes 2-3 with 4i+2, 4i+3
        dot = __dp2a_lo(qpair[2 * i], cw[i], dot);
        dot = __dp2a_hi(qpair[2 * i + 1], cw[i], dot);
      }
#pragma unroll
      for (int o = LPR / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      const int j = j0 + u * kStride;
      if (j < m && c == 0) keys[j] = order_key(attn::i8_page_score(dot, qscale, sc[u]));
    }
  }
}

// What one (sequence, KV head) of a decode row ranks (DESIGN.md): its policy's
// local window and k, the candidate pages [first, end) between page 0 and the
// window, and m candidates of which k are kept (tokens for the topk oracle).
struct PairPlan {
  int rows;           // query rows of the sequence: only single-row ones select
  int n, first, end;  // pages of the context; candidates [first, end)
  int m_pages, m, k;  // candidate pages; ranked items and how many are kept
};
__device__ __forceinline__ PairPlan plan_pair(const SelectParams& p, int s) {
  PairPlan pp;
  const int q0 = p.q_start[s];
  pp.rows = p.q_start[s + 1] - q0;
  int local_pages = p.local_pages, topk_pages = p.topk_pages;
  if (p.seq_policy) {  // dense sequences never get here (the callers skip them)
    local_pages = p.seq_policy[3 * s + 1];
    topk_pages = p.seq_policy[3 * s] == static_cast<int>(AttnKind::Local) ? 0 : p.seq_policy[3 * s + 2];
  }
  const int P = p.page_size;
  pp.n = (p.ctx_len[s] + P - 1) / P;
  pp.first = 1;
  pp.end = max(1, pp.n - local_pages);
  pp.m_pages = max(0, pp.end - pp.first);
  const int unit = p.by_token ? P : 1;  // ranked items per candidate page
  pp.m = pp.m_pages * unit;
  pp.k = topk_pages * unit;
  return pp;
}

// q̄ of (row q0, KV head h), dims d = first, first + stride, ...: the mean of
// the group's post-RoPE queries, summed in g order.
template <int D>
__device__ __forceinline__ void group_mean_query(const SelectParams& p, int q0, int h, int first, int stride,
                                                 float* qbar) {
  const int G = p.n_heads / p.n_kv_heads;
  for (int d = first; d < D; d += stride) {
    float a = 0.f;
    for (int g = 0; g < G; ++g) a += bf(p.q[(static_cast<int64_t>(q0) * p.n_heads + h * G + g) * D + d]);
    qbar[d] = a / static_cast<float>(G);
  }
}

// Scores the m candidates into keys, by NW warps (this one is `warp`).
template <int D, int NW>
__device__ __forceinline__ void score_candidates(const SelectParams& p, const float* qbar, const int32_t* pt,
                                                 const PairPlan& pp, int h, uint32_t* keys, int warp) {
  if (p.by_token) score_items<D, NW, 2>(p, qbar, pt, pp.first, h, pp.m, keys, warp);
  else if (p.summary_kind == attn::SummaryKind::I8) score_pages_i8<D, NW>(p, qbar, pt, pp.first, h, pp.m, keys, warp);
  else if (p.summary_kind == attn::SummaryKind::BF16) score_items<D, NW, 0>(p, qbar, pt, pp.first, h, pp.m, keys, warp);
  else score_items<D, NW, 1>(p, qbar, pt, pp.first, h, pp.m, keys, warp);
}

// A page list's pages read whatever the scores say, around the k chosen
// ones at out[1, 1 + k): page 0 first, the local window [end, n) last. By
// threads t, t + stride, ...; returns the list's length.
__device__ __forceinline__ int list_known_pages(const PairPlan& pp, int t, int stride, int32_t* out) {
  if (t == 0) out[0] = 0;
  for (int i = pp.end + t; i < pp.n; i += stride) out[1 + pp.k + (i - pp.end)] = i;
  return 1 + pp.k + (pp.n - pp.end);
}

// One warp marks keys [j_begin, j_end) in index order: every key > thr, and
// keys == thr while fewer than need_eq of them came before (eq_before: those
// of earlier ranges; sel_before: keys chosen there). Candidate j goes to
// out[1 + its rank] as page first + j; by_token: keys[j] becomes 1 or 0.
__device__ __forceinline__ void mark_chosen(uint32_t* keys, int j_begin, int j_end, uint32_t thr, int need_eq,
                                            int eq_before, int sel_before, bool by_token, int first, int32_t* out) {
  const int lane = threadIdx.x & 31;
  const uint32_t below = (1u << lane) - 1u;
  for (int j0 = j_begin; j0 < j_end; j0 += 32) {  // warp-uniform bounds
    const int j = j0 + lane;
    const uint32_t key = j < j_end ? keys[j] : 0u;
    const bool gt = j < j_end && key > thr, eq = j < j_end && key == thr;
    const uint32_t eq_mask = __ballot_sync(0xffffffffu, eq);
    const bool sel = gt || (eq && eq_before + __popc(eq_mask & below) < need_eq);
    const uint32_t sel_mask = __ballot_sync(0xffffffffu, sel);
    if (by_token) {
      if (j < j_end) keys[j] = static_cast<uint32_t>(sel);
    } else if (sel) {
      out[1 + sel_before + __popc(sel_mask & below)] = first + j;
    }
    eq_before += __popc(eq_mask);
    sel_before += __popc(sel_mask);
  }
}

// Runs with all NT threads of the block; the whole block returns together.
// Where it ranks candidates, it calls known(end, n) with every thread once
// scoring is done: the pages read whatever the scores say (page 0 and the
// local window [end, n)) can be fetched while it ranks the scores (the fused
// sparse kernel).
template <int D, int NT, class Known>
__device__ void select_pages(const SelectParams& p, int s, int h, SelectSmem<D, NT>& sm, const Known& known) {
  using Scan = cub::BlockScan<int, NT>;
  const int tid = threadIdx.x;
  const int Hkv = p.n_kv_heads, P = p.page_size;
  const int64_t pair = static_cast<int64_t>(s) * Hkv + h;
  if (p.seq_policy && p.seq_policy[3 * s] == static_cast<int>(AttnKind::Dense)) {
    if (tid == 0) p.list_count[pair] = 0;  // served by the dense kernel: no list
    return;
  }
  const PairPlan pp = plan_pair(p, s);
  if (pp.rows != 1) {  // prefill rows are dense; no list
    if (tid == 0) p.list_count[pair] = 0;
    return;
  }
  const int n = pp.n, first = pp.first, end = pp.end, m_pages = pp.m_pages, m = pp.m, k = pp.k;
  int32_t* out = p.list + pair * p.max_pages;
  uint32_t* omask = p.by_token ? p.list_mask + pair * p.max_pages : nullptr;
  if (m <= k) {  // few candidates: every page (= dense)
    for (int i = tid; i < n; i += NT) {
      out[i] = i;
      if (omask) omask[i] = 0xffffffffu;
    }
    if (tid == 0) p.list_count[pair] = n;
    return;
  }
  const int32_t* pt = p.table + static_cast<int64_t>(s) * p.max_pages;
  uint32_t* keys = m <= kSmemKeys ? sm.keys : p.keys + pair * p.key_cap;
  if (k > 0) {
    group_mean_query<D>(p, p.q_start[s], h, tid, NT, sm.qbar);
    __syncthreads();
    KF_PHASE(2);  // q̄ ready
    score_candidates<D, NT / 32>(p, sm.qbar, pt, pp, h, keys, tid >> 5);
    known(end, n);
    __syncthreads();
    KF_PHASE(3);  // every candidate scored
    // Radix select, 8 bits at a time from the top: the k-th largest key `thr`,
    // and how many keys equal to it still belong to the top k (`need_eq`).
    // If the chosen bin holds exactly the keys still wanted, all of them are
    // in: thr = the bin's lowest key, every key >= thr (need_eq = all).
    uint32_t prefix = 0, pmask = 0;
    int krem = k, need_all = 0;
    for (int b = tid; b < 256; b += NT) sm.hist[0][b] = 0;
    __syncthreads();
    for (int shift = 24, pass = 0; shift >= 0; shift -= 8, ++pass) {
      int* hist = sm.hist[pass & 1];
      for (int j = tid; j < m; j += NT) {
        const uint32_t key = keys[j];
        if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
      }
      __syncthreads();
      if (tid < 32) pick_digit(hist, prefix, shift, krem, &sm.prefix, &sm.krem, &sm.bin_count);
      else for (int b = tid - 32; b < 256; b += NT - 32) sm.hist[(pass + 1) & 1][b] = 0;
      __syncthreads();
      prefix = sm.prefix;
      krem = sm.krem;
      pmask |= 255u << shift;
      if (sm.bin_count == krem) {
        need_all = 1;
        break;
      }
    }
    const uint32_t thr = prefix;
    const int need_eq = need_all ? m : krem;
    KF_PHASE(4);  // the k-th largest key found
    // Mark the top k in index order: all keys > thr, and the first need_eq
    // keys == thr. Warp w owns the contiguous range [w*C, (w+1)*C): a pass of
    // ballots counts its keys above and at the threshold, one barrier shares
    // the counts, a second pass writes its chosen indices at their ranks.
    constexpr int NW = NT / 32;
    const int warp = tid >> 5, lane = tid & 31;
    const int C = ((m + NW - 1) / NW + 31) / 32 * 32;
    const int j_begin = min(m, warp * C), j_end = min(m, j_begin + C);
    int n_gt = 0, n_eq = 0;
    for (int j0 = j_begin; j0 < j_end; j0 += 32) {  // warp-uniform bounds
      const int j = j0 + lane;
      const uint32_t key = j < j_end ? keys[j] : 0u;
      n_gt += __popc(__ballot_sync(0xffffffffu, j < j_end && key > thr));
      n_eq += __popc(__ballot_sync(0xffffffffu, j < j_end && key == thr));
    }
    if (lane == 0) {
      sm.warp_gt[warp] = n_gt;
      sm.warp_eq[warp] = n_eq;
    }
    __syncthreads();
    int eq_before = 0, sel_before = 0;  // over the warps before this one
    for (int v = 0; v < warp; ++v) {
      sel_before += sm.warp_gt[v] + min(sm.warp_eq[v], max(0, need_eq - eq_before));
      eq_before += sm.warp_eq[v];
    }
    mark_chosen(keys, j_begin, j_end, thr, need_eq, eq_before, sel_before, p.by_token, first, out);
  }
  if (!p.by_token) {  // page 0, the k chosen pages (written above), the local pages
    const int count = list_known_pages(pp, tid, NT, out);
    if (tid == 0) p.list_count[pair] = count;
    return;
  }
  // topk: candidate pages that kept a token, with their token masks.
  __syncthreads();
  if (tid == 0) {
    out[0] = 0;
    omask[0] = 0xffffffffu;
  }
  int cnt = 0;
  for (int i0 = 0; i0 < m_pages; i0 += NT) {
    const int i = i0 + tid;
    uint32_t bits = 0;
    if (i < m_pages && k > 0)
      for (int t = 0; t < P; ++t) bits |= (keys[static_cast<int64_t>(i) * P + t] ? 1u : 0u) << t;
    const int has = bits != 0u;
    int pos, tot;
    Scan(sm.scan).ExclusiveSum(has, pos, tot);
    __syncthreads();
    if (has) {
      out[1 + cnt + pos] = first + i;
      omask[1 + cnt + pos] = bits;
    }
    cnt += tot;
  }
  for (int i = end + tid; i < n; i += NT) {
    out[1 + cnt + (i - end)] = i;
    omask[1 + cnt + (i - end)] = 0xffffffffu;
  }
  if (tid == 0) p.list_count[pair] = 1 + cnt + (n - end);
}

// select_pages by one warp, for contexts of at most kWarpMaxPages pages (the
// sparse warp kernel: short contexts, where the block version's barriers cost
// more than the pages' bytes). Page lists only (not the topk oracle). The
// same q̄, scores and marking; the k-th largest key by a bitwise search on
// counts (the largest T with at least k keys >= T) instead of the radix
// histograms: the same key, so the same list. Up to 32 candidates (a lane
// each) are ranked by 32 shuffles instead: the search's 32 dependent rounds
// cost ~5 us more at B1024 x 288 tokens (docs/cuda.md). Writes the list to
// `list` (shared memory) and to p.list / p.list_count; returns its length, or
// -1 for a sequence with other than one row (it reads its causal prefix
// densely).
// qbar [D] and keys [kWarpMaxPages] are the warp's own shared memory.
constexpr int kWarpMaxPages = 256;
template <int D>
__device__ int select_pages_warp(const SelectParams& p, int s, int h, float* qbar, uint32_t* keys, int32_t* list) {
  const int lane = threadIdx.x & 31;
  const int64_t pair = static_cast<int64_t>(s) * p.n_kv_heads + h;
  const PairPlan pp = plan_pair(p, s);
  if (pp.rows != 1) {
    if (lane == 0) p.list_count[pair] = 0;
    return -1;
  }
  int count = pp.n;
  if (pp.m <= pp.k) {  // few candidates: every page (= dense)
    for (int i = lane; i < pp.n; i += 32) list[i] = i;
  } else {
    const int m = pp.m, k = pp.k;
    if (k > 0) {
      group_mean_query<D>(p, p.q_start[s], h, lane, 32, qbar);
      __syncwarp();
      KF_PHASE(2);  // q̄ ready (warp 0 of a block stamps)
      score_candidates<D, 1>(p, qbar, p.table + static_cast<int64_t>(s) * p.max_pages, pp, h, keys, 0);
      __syncwarp();
      KF_PHASE(3);  // every candidate scored
      if (m <= 32) {
        // Rank by shuffles: candidate j (lane j) is chosen when fewer than k
        // keys beat it (larger, or equal at a lower index): the same top k
        // as the search below, listed in index order.
        const uint32_t key = lane < m ? keys[lane] : 0u;
        int rank = 0;
#pragma unroll
        for (int i = 0; i < 32; ++i) {
          const uint32_t other = __shfl_sync(0xffffffffu, key, i);
          rank += i < m && (other > key || (other == key && i < lane));
        }
        const bool chosen = lane < m && rank < k;
        const uint32_t chosen_mask = __ballot_sync(0xffffffffu, chosen);
        if (chosen) list[1 + __popc(chosen_mask & ((1u << lane) - 1u))] = pp.first + lane;
        KF_PHASE(4);  // the k best listed
      } else {
        uint32_t thr = 0;
        for (int b = 31; b >= 0; --b) {
          const uint32_t t = thr | (1u << b);
          int at_least = 0;
          for (int j = lane; j < m; j += 32) at_least += keys[j] >= t;
          if (__reduce_add_sync(0xffffffffu, at_least) >= k) thr = t;
        }
        int above = 0;
        for (int j = lane; j < m; j += 32) above += keys[j] > thr;
        above = __reduce_add_sync(0xffffffffu, above);
        KF_PHASE(4);  // the k-th largest key found
        mark_chosen(keys, 0, m, thr, k - above, 0, 0, false, pp.first, list);
      }
    }
    count = list_known_pages(pp, lane, 32, list);
  }
  __syncwarp();
  int32_t* out = p.list + pair * p.max_pages;  // for PageSelection outputs
  for (int i = lane; i < count; i += 32) out[i] = list[i];
  if (lane == 0) p.list_count[pair] = count;
  return count;
}

}  // namespace kf::cuda

// Paged attention on the GPU (DESIGN.md, Attention policies).
//
// Kernels (their per-warp tile walks and states in decode_tiles.cuh):
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
//  - sparse_warp_kernel: the same for short contexts (warp_sparse), one warp
//    per (sequence, KV head), four to a block, without block barriers.
#include <algorithm>
#include <memory>

#include "backend/cuda/decode_splits.h"
#include "backend/cuda/decode_tiles.cuh"
#include "backend/cuda/select.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kWarps = 4;        // warps per attention block
constexpr int kSelThreads = 256;  // threads of the stand-alone select kernel

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
  int n_seqs, max_pages, n_heads, n_kv_heads, page_size, splits;
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


// What row i of sequence s (of `rows` query rows) reads in the fused sparse
// kernels: a single decode row its list (n_list pages, token masks or null),
// a row of a multi-row sequence its causal prefix, every page.
__device__ __forceinline__ RowPages row_pages(const DecodeParams& p, int s, int rows, int i, const int32_t* list,
                                              const uint32_t* mask, int n_list) {
  RowPages rp;
  rp.pt = p.table + static_cast<int64_t>(s) * p.max_pages;
  rp.T = p.ctx_len[s] - rows + i + 1;
  rp.list = rows == 1 ? list : nullptr;
  rp.mask = rows == 1 ? mask : nullptr;
  rp.n_items = rows == 1 ? n_list : (rp.T + p.page_size - 1) / p.page_size;
  return rp;
}

// Run by one warp of a fused sparse kernel after its rows attended: the
// summaries, for KV head h, of the pages that the new keys of rows [q0,
// q0 + rows) completed (p.summary_slots; kv_summary_kernel's work, which
// then does not run).
__device__ __forceinline__ void write_completed_summaries(const DecodeParams& p, int q0, int rows, int h) {
  if (!p.summary_slots) return;
  for (int i = 0; i < rows; ++i) {
    const int page = completed_page(p.pool, p.summary_slots[q0 + i]);
    if (page >= 0) write_page_summary(p.pool, static_cast<int64_t>(page) * p.n_kv_heads + h);
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
  griddep_launch_dependents();
  // The warps' states for the merge [kWarps][G][D]. With the ring they go to
  // its shared memory once every warp is done with it: a static array (16 KB
  // at groups of 8) beside the 64 KB ring left room for 2 blocks an SM
  // instead of 3.
  __shared__ float sm_acc_static[BULK ? 1 : kWarps][BULK ? 1 : G][BULK ? 1 : D];
  float(*sm_acc)[G][D] = BULK ? reinterpret_cast<float(*)[G][D]>(ring_smem)
                              : reinterpret_cast<float(*)[G][D]>(&sm_acc_static[0][0][0]);
  static_assert(kWarps * G * D * sizeof(float) <= kWarps * ring_elems(D) * sizeof(bf16_t), "merge states exceed the ring");
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
  if constexpr (BULK) __syncthreads();  // every warp has read its last stage (no copy is in flight)
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
  KF_PHASE_GRID(0);
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
  griddep_launch_dependents();
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
    const StagedPages to_stage{staged, end, min(1 + n - end, p.stage_pages)};
    const int lane = threadIdx.x;
    const unsigned page_bytes = P * D * sizeof(bf16_t);
    if (lane == 0) {
      stage_end = end;
      stage_count = to_stage.count;
      mbar_expect_bytes(&stage_bar, 2 * to_stage.count * page_bytes);
    }
    __syncwarp();
    if (lane < 2 * to_stage.count) {  // lane 2i: the K of slot i's page, 2i + 1: its V
      const int page = p.table[static_cast<int64_t>(s) * p.max_pages + to_stage.page(lane >> 1)];
      const bf16_t* src = (lane & 1 ? p.v : p.k) + page_offset(page, Hkv, h, P, D);
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
  const int n_list = rows == 1 ? p.list_count[pair] : 0;
  for (int i = 0; i < rows; ++i) {
    const int r = q0 + i;
    const RowPages rp = row_pages(p, s, rows, i, p.list + pair * p.max_pages,
                                  p.list_mask ? p.list_mask + pair * p.max_pages : nullptr, n_list);
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
  if (threadIdx.x < 32) write_completed_summaries(p, q0, rows, h);
}

// The sparse warp kernel: one warp per (sequence, KV head), kPairWarps of
// them to a block, each on its own (no block barrier). For short contexts,
// where the block kernel above spends more time in its barriers and its 8
// warps' merge than a short list's bytes take (SmolLM2 B1024 x 288 tokens,
// k 2: 98 µs a layer, against 245 MB of dense bytes in 72): select_pages_warp,
// then the warp walks its list alone and writes the normalised output (a
// merge of one state is exact: the block kernel's merge with NW = 1). The
// selection is the same; the sums are in another order than the block
// kernel's (one warp instead of eight), within bf16 error of the CPU.
// MINB: blocks an SM the registers must allow. Left free (1), ptxas takes
// 128 registers at D 64 and 162 at D 128 (4 and 3 blocks an SM), so 1,024
// sequences x 3 KV heads ran in 1.45 waves; grids past one such wave take
// warp_min_blocks(D) (80 and 128 registers, a few spilled), which fits them in
// one: H200, SmolLM2 B1024 x 288 k 2 38.6 -> 32.6 µs (ncu), Qwen3's D 128
// B256 x 1K 59.0 -> 42.6 µs; at B256 x 288 (one wave either way) the spills
// cost 15.0 -> 17.3 µs, so smaller grids keep the free registers.
constexpr int kPairWarps = 4;
__host__ __device__ constexpr int warp_min_blocks(int D) { return D == 64 ? 6 : 4; }
template <int D, int G, int MINB>
__global__ void __launch_bounds__(kPairWarps * 32, MINB) sparse_warp_kernel(SelectParams sp, DecodeParams p) {
  __shared__ float sm_qbar[kPairWarps][D];
  __shared__ uint32_t sm_keys[kPairWarps][kWarpMaxPages];
  __shared__ int32_t sm_list[kPairWarps][kWarpMaxPages];
  __shared__ float sm_acc[kPairWarps][G][D];
  __shared__ float sm_m[kPairWarps][G], sm_l[kPairWarps][G];
  KF_PHASE(0);  // phases (KINFER_ATTN_PHASES): warp 0's, as the block kernel's
  KF_PHASE_GRID(1);
  griddep_wait();
  griddep_launch_dependents();
  KF_PHASE(1);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c = lane % (D / 8);
  const int Hkv = p.n_kv_heads, P = p.page_size;
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * kPairWarps + warp;
  if (pair >= static_cast<int64_t>(p.n_seqs) * Hkv) return;
  const int s = static_cast<int>(pair / Hkv), h = static_cast<int>(pair % Hkv);
  if (!selecting(sp.seq_policy, s, true)) return;  // a dense sequence: the split-K kernel serves it
  const int n_list = select_pages_warp<D>(sp, s, h, sm_qbar[warp], sm_keys[warp], sm_list[warp]);
  KF_PHASE(5);  // list marked and written
  const int q0 = p.q_start[s], rows = p.q_start[s + 1] - q0;
  const int tpp = (P + kTile - 1) / kTile;
  for (int i = 0; i < rows; ++i) {
    const int r = q0 + i;
    const RowPages rp = row_pages(p, s, rows, i, sm_list[warp], nullptr, n_list);
    const int64_t rh0 = static_cast<int64_t>(r) * p.n_heads + h * G;
    DecodeState<D, G> ws;
    ws.init(p.q + rh0 * D, p.scale_log2, c);
    visit_tiles<true>(ws, rp, p.k, p.v, Hkv, h, P, D, 0, rp.n_items * tpp, 1);
    KF_PHASE(6);  // attended
    ws.stage(sm_acc, sm_m, sm_l, warp);
    __syncwarp();
    for (int idx = lane; idx < G * D; idx += 32) {
      const int g = idx / D;
      const float l = sm_l[warp][g];
      p.out[(rh0 + g) * D + idx % D] = to_bf(l > 0.f ? sm_acc[warp][g][idx % D] / l : 0.f);
    }
    __syncwarp();
  }
  KF_PHASE(7);  // output written
  write_completed_summaries(p, q0, rows, h);
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
    launch_pdl_smem("attention decode", decode_kernel<D, G, false, 1, true>, grid, kWarps * 32,
                    kWarps * ring_elems(D) * sizeof(bf16_t), st, p);
  }
};
template <int D, int G>
struct SparseDecode {
  static constexpr int kNW = 8;
  static void launch(dim3 grid, cudaStream_t st, const SelectParams& sp, const DecodeParams& p, size_t smem) {
    launch_pdl_smem("attention sparse decode", sparse_decode_kernel<D, G, kNW, 2, true>, grid, kNW * 32, smem, st, sp,
                    p);
  }
};

template <int D, int G>
struct SparseWarpDecode {
  static void launch(dim3 grid, cudaStream_t st, const SelectParams& sp, const DecodeParams& p, int num_sms) {
    int per_sm = 0;  // blocks an SM with the registers left free
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, sparse_warp_kernel<D, G, 1>, kPairWarps * 32, 0),
          "attention sparse decode (a warp per pair): occupancy");
    if (grid.x > static_cast<unsigned>(per_sm * num_sms))
      launch_pdl("attention sparse decode (a warp per pair)", sparse_warp_kernel<D, G, warp_min_blocks(D)>, grid,
                 kPairWarps * 32, st, sp, p);
    else
      launch_pdl("attention sparse decode (a warp per pair)", sparse_warp_kernel<D, G, 1>, grid, kPairWarps * 32, st,
                 sp, p);
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

// Whether the fused path takes the warp kernel (a warp per (sequence, KV
// head)) rather than the block kernel. A warp alone walks a chain of memory
// round trips: its scoring rounds (score_items: 8 loads of 32 / (D / 8)
// candidates each) and its list's tiles. The warp kernel wins where the
// block kernel needs two or more waves (4 blocks an SM) and that chain is
// short (H200, `gpu.sh warp`: SmolLM2's 3 KV heads at B1024 x 288 tokens, k 2:
// 90 -> 35 µs; B256: 24 -> 15; B1024 x 4K: 106 -> 85), and loses at B32
// (8 -> 13 µs) and where the chain is long (Qwen3's D 128 at B256 x 4K, k 8:
// 115 -> 168). Without per-sequence policies a list has 1 + k + local pages
// at most; with them the host does not know each k, so the context's pages
// count. Not the topk oracle (token masks). a.sparse_warp 0 / 1 forces it
// off / on where it can serve (tests, `gpu.sh warp`).
constexpr int kWarpMaxChain = 16;
static bool warp_sparse(const AttnArgs& a, int num_sms) {
  if (!fused_sparse(a) || a.kind == AttnKind::TopK || a.max_pages > kWarpMaxPages) return false;
  if (a.sparse_warp >= 0) return a.sparse_warp == 1;
  const int P = a.kv.page_size, D = a.kv.head_dim, tpp = (P + kTile - 1) / kTile;
  const int per_round = 8 * (32 / (D / 8));
  const int rounds = (a.max_pages + per_round - 1) / per_round;
  const int k = a.kind == AttnKind::Local ? 0 : a.topk_pages;
  const int list = mixed(a) ? a.max_pages : std::min(a.max_pages, 1 + k + a.local_pages);
  const int64_t pairs = static_cast<int64_t>(a.n_seqs) * a.kv.n_kv_heads;
  return pairs >= 4 * static_cast<int64_t>(num_sms) && rounds + list * tpp <= kWarpMaxChain;
}

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
  z.bulk_tiles = a.bulk_dense == 1 || (a.bulk_dense < 0 && dense_bulk_tiles(tiles, z.splits, kWarps));
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

  if (fused_sparse(a)) {
    if (warp_sparse(a, num_sms)) {
      const dim3 grid(static_cast<unsigned>((static_cast<int64_t>(a.n_seqs) * Hkv + kPairWarps - 1) / kPairWarps));
      if (D == 64) launch_grouped<64, SparseWarpDecode>(G, grid, st, sp, dp, num_sms);
      else launch_grouped<128, SparseWarpDecode>(G, grid, st, sp, dp, num_sms);
    } else {
      const dim3 grid(a.n_seqs, Hkv);
      dp.stage_pages = a.stage_known ? sparse_stage_pages(a.local_pages, P, D) : 0;
      const size_t smem = static_cast<size_t>(dp.stage_pages * stage_slot_bytes(P, D));
      if (D == 64) launch_grouped<64, SparseDecode>(G, grid, st, sp, dp, smem);
      else launch_grouped<128, SparseDecode>(G, grid, st, sp, dp, smem);
    }
    check_launch("attention sparse decode");
    if (mixed(a)) {  // the dense sequences of the batch, split-K
      DecodeParams dd = dp;
      dd.list = nullptr;
      dd.list_count = nullptr;
      dd.list_mask = nullptr;
      dd.skip_selecting = 1;
      const dim3 dgrid(static_cast<unsigned>(a.n_rows) * z.splits, Hkv);
      if (D == 64) launch_grouped<64, Decode>(G, dgrid, st, dd, z.bulk_tiles);
      else launch_grouped<128, Decode>(G, dgrid, st, dd, z.bulk_tiles);
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
      if (D == 64) launch_grouped<64, Decode>(G, grid, st, dp, z.bulk_tiles);
      else launch_grouped<128, Decode>(G, grid, st, dp, z.bulk_tiles);
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
  auto stamps = std::make_unique<PhaseStamps>();  // 320 KB: not on the stack
  const PhaseStamps& h = *stamps;
  check(cudaDeviceSynchronize(), "attention phases");
  check(cudaMemcpyFromSymbol(stamps.get(), g_phase_stamps, sizeof(PhaseStamps)), "attention phases");
  n_blocks = std::min({n_blocks, kPhaseBlocks, h.grid_blocks});
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
                           "\"end_spread_us\": {:.2f}, \"sm_ghz\": {:.3f}, \"blocks\": {}, \"kernel\": \"{}\"}}",
                           total / cycles_per_ns / 1e3,
                           (last - first) / 1e3, (last_start - first) / 1e3, (last - first_end) / 1e3, cycles_per_ns,
                           n_blocks, h.warp_kernel ? "warp" : "block");
}
#endif

}  // namespace kf::cuda

// Launchers for the CUDA backend's kernels (src/backend/cuda/*.cu). Plain C++
// signatures (raw device pointers, sizes, a stream) so cuda_backend.cpp can
// stay ordinary C++; the kernels themselves live in the .cu files.
// Element type of every "bf16" pointer is __nv_bfloat16 (stored as uint16).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "attn/policy.h"
#include "attn/summary.h"

namespace kf::cuda {

// Throws kf::Error naming `what` when e is not cudaSuccess.
void check(cudaError_t e, const char* what);
#define KF_CUDA(x) ::kf::cuda::check((x), #x)
// Checks the last launch error (cheap, no sync).
void check_launch(const char* what);

using bf16_t = uint16_t;

// True when every pointer is 16-byte aligned (the vector paths need it).
inline bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (reinterpret_cast<uintptr_t>(p) & 15u) return false;
  return true;
}

// ---- elementwise.cu ----------------------------------------------------------
// out[i] = table[ids[i]] (a zero row for an id outside [0, table_rows)).
void embed(const bf16_t* table, int64_t table_rows, const int32_t* ids, bf16_t* out, int n, int d, cudaStream_t st);
void rmsnorm(const bf16_t* x, const bf16_t* w, bf16_t* y, int rows, int d, float eps, cudaStream_t st);
void add(bf16_t* x, const bf16_t* y, int64_t n, cudaStream_t st);
// out [n / f rows, f] from gate_up [rows, 2f] (gate | up per row); n = out elements.
void silu_mul(const bf16_t* gate_up, bf16_t* out, int64_t n, int64_t f, cudaStream_t st);
// The same from rows whose gate and up values are interleaved by 8 (the
// GEMM's output for interleave_gate_up's weights); f % 8 == 0, 16-byte aligned.
void silu_mul_interleaved(const bf16_t* gate_up, bf16_t* out, int64_t n, int64_t f, cudaStream_t st);
// w [2f, d] = [gate rows; up rows] to out [2f, d] with rows 16t .. 16t+7 the
// gate rows 8t .. 8t+7 and rows 16t+8 .. 16t+15 the up rows of the same
// features (the layout whose GEMM ends in silu_mul: gemm_cutlass.h); f % 8 == 0.
void interleave_gate_up(const bf16_t* w, bf16_t* out, int64_t f, int64_t d, cudaStream_t st);
// x += y; out = rmsnorm(x) * w (out may alias y).
void add_rmsnorm(bf16_t* x, const bf16_t* y, const bf16_t* w, bf16_t* out, int rows, int d, float eps,
                 cudaStream_t st);
// The same with y given as `slices` fp32 partial products [slices, rows, d]
// (a split-K GEMM's), added in order; w null: x += y only. slices 2, 3, 4, 6, 8.
constexpr bool partial_slices_supported(int s) { return s == 2 || s == 3 || s == 4 || s == 6 || s == 8; }
void add_partials_rmsnorm(bf16_t* x, const float* parts, int slices, const bf16_t* w, bf16_t* out, int rows, int d,
                          float eps, cudaStream_t st);
constexpr int kMaxRopeHalf = 256;  // rotary_dim / 2 held in the kernel's parameters
void rope(bf16_t* x, const int32_t* pos, int n, int heads, int head_dim, int rotary_dim,
          const float* inv_freq_host, cudaStream_t st);
// Fills n bf16 values with uniform random numbers in [lo, hi), by element
// index; with full_cols > 0, element i of x (as [*, cols]) draws index
// (row0 + i / cols) * full_cols + col0 + i % cols (Backend::fill_uniform).
void fill_uniform(bf16_t* x, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t st, int64_t cols = 1,
                  int64_t row0 = 0, int64_t col0 = 0, int64_t full_cols = 0);

// ---- kv.cu -------------------------------------------------------------------
struct KvPool {
  bf16_t* k = nullptr;   // [n_pages, n_kv_heads, page_size, head_dim]
  bf16_t* v = nullptr;
  void* summary = nullptr;  // [n_pages, n_kv_heads, head_dim] in summary_kind
  attn::SummaryKind summary_kind = attn::SummaryKind::F32;
  float* summary_scale = nullptr;  // [n_pages, n_kv_heads], int8 summaries only
  int n_pages = 0, n_kv_heads = 0, page_size = 0, head_dim = 0;
};
void kv_write(const KvPool& kv, const bf16_t* k, const bf16_t* v, const int32_t* slots, int n,
              cudaStream_t st);
void kv_copy_pages(const KvPool& kv, const int32_t* src, const int32_t* dst, int n, cudaStream_t st);
// Summaries of the pages whose last offset is among slots [n] (kv_write's second half).
void kv_summaries(const KvPool& kv, const int32_t* slots, int n, cudaStream_t st);

// ---- mlp.cu --------------------------------------------------------------------
// The fused decode MLP (Backend::mlp): out [n, d] = (silu(x Wgᵀ) * x Wuᵀ) Wdᵀ
// in one cooperative launch, for n <= 64 rows of a model whose MLP weights fit
// in the SMs' shared memory. grid == 0: the plan does not apply (too many
// rows, weights too big, d or inter not a multiple of 64).
struct MlpPlan {
  int grid = 0;          // blocks, one per SM at most
  int ua = 0;            // gate|up units (4 intermediate columns) per block
  int bk = 0, ubw = 0;   // down: K slices; units of 8 output columns per block
  int mtw = 0, wm = 0;   // gate|up: 16-row m-tiles per warp; warp groups over the m-tiles
  int mtb = 0;           // down: 16-row m-tiles per warp (all of them)
  int region_a = 0;      // shared-memory bytes before the down stripe
  int smem = 0;          // dynamic shared memory per block
};
constexpr int kMlpMaxRows = 64;  // rows the fused kernel takes
MlpPlan mlp_decode_plan(int n, int d, int inter, int num_sms, int max_smem);
// Floats of the partial-sum scratch a launch needs ([bk, n, d]).
int64_t mlp_partial_floats(const MlpPlan& plan, int n, int d);
// ffn [n, inter] and partial are scratch (ffn is left holding silu(gate) *
// up), out may alias x; barrier: a zeroed 4-byte counter that this backend's
// launches share. pdl: programmatic dependent launch on top of the
// cooperative launch.
cudaError_t mlp_decode(const MlpPlan& plan, const bf16_t* x, const bf16_t* w_gate_up, const bf16_t* w_down,
                       bf16_t* ffn, float* partial, bf16_t* out, unsigned* barrier, int n, int d, int inter,
                       bool pdl, cudaStream_t st);

#ifdef KINFER_MLP_PHASES
std::string mlp_phases_report(int grid);  // the last launch's phase probes (mlp.cu)
#endif

// ---- qkv.cu --------------------------------------------------------------------
// Backend::qkv_rope_write: qkv [n, (Hq + 2*Hkv) * D] -> q_out [n, Hq, D] and the pool.
// q_norm / k_norm may be null (no per-head norm).
struct QkvArgs {
  const bf16_t* qkv = nullptr;
  const bf16_t* q_norm = nullptr;
  const bf16_t* k_norm = nullptr;
  float eps = 0.f;
  const int32_t* pos = nullptr;          // [n]
  const float* inv_freq_host = nullptr;  // [rotary_dim / 2], host memory
  int rotary_dim = 0;
  KvPool kv;
  const int32_t* slots = nullptr;  // [n]
  bf16_t* q_out = nullptr;
  int n = 0, n_heads = 0;
  bool summaries = true;  // false: the caller writes the completed pages' summaries
};
void qkv_rope_write(const QkvArgs& a, cudaStream_t st);

// ---- attention.cu --------------------------------------------------------------
// Device scratch the attention launcher needs; sizes from attention_scratch().
struct AttnScratch {
  float* part_acc = nullptr;   // [rows * n_heads * splits * head_dim]
  float* part_ml = nullptr;    // [rows * n_heads * splits * 2]
  int32_t* list = nullptr;     // [n_seqs * n_kv_heads * max_pages] logical pages read
  int32_t* list_count = nullptr;  // [n_seqs * n_kv_heads]
  uint32_t* list_mask = nullptr;  // [n_seqs * n_kv_heads * max_pages] token bits (topk)
  uint32_t* keys = nullptr;       // [n_seqs * n_kv_heads * key_cap] selection scratch
};
struct AttnArgs {
  const bf16_t* q = nullptr;  // [n_rows, n_heads, head_dim]
  bf16_t* out = nullptr;
  KvPool kv;
  const int32_t* q_start = nullptr;
  const int32_t* ctx_len = nullptr;
  const int32_t* page_table = nullptr;
  int n_seqs = 0, max_pages = 0, n_rows = 0, n_heads = 0;
  AttnKind kind = AttnKind::Dense;  // every sequence's policy, unless seq_policy is given
  int local_pages = 4, topk_pages = 64;
  // Per-sequence policies [n_seqs, 3] (AttnKind, local_pages, topk_pages), or
  // null. With it, dense and selecting sequences share the batch: each kernel
  // serves its own kind and skips the others.
  const int32_t* seq_policy = nullptr;
  float scale = 1.f;
  int32_t* sel_pages = nullptr;   // optional PageSelection outputs
  int32_t* sel_counts = nullptr;
  // Slots [n_rows] of this step's new keys, or null. The fused sparse kernel
  // then writes the summary of every page they complete (kv_summaries' work:
  // Backend::qkv_attention). Only where it serves the whole batch
  // (summaries_in_attention): such a page is in its sequence's local window,
  // which this step's selection does not score.
  const int32_t* summary_slots = nullptr;
  // The fused sparse kernel copies page 0 and the local pages (read whatever
  // the selection says) to shared memory while it ranks the others;
  // stage_known false: it reads them from the pool like the chosen pages.
  // The same results either way, bit for bit.
  bool stage_known = true;
  // Whether the dense decode kernel streams its tiles through shared memory
  // by bulk copies (a ring per warp) instead of loading them into registers:
  // 1 always, 0 never, -1 where each warp has enough tiles (dense_bulk_tiles).
  // The same results either way, bit for bit.
  int bulk_dense = -1;
  // The dense decode kernel's blocks per (row, KV head); 0: dense_decode_splits.
  int decode_splits = 0;
  // The fused path's warp kernel (a warp per (sequence, KV head), short
  // contexts): 1 wherever it can serve, 0 never, -1 by shape (warp_sparse).
  int sparse_warp = -1;
};
struct ScratchSize {
  int64_t part_acc = 0, part_ml = 0, list = 0, list_count = 0, list_mask = 0, keys = 0;  // elements
  int splits = 1;
  bool bulk_tiles = false;  // the dense decode kernel takes its bulk-copy ring (dense_bulk_tiles)
};
// Scratch the call needs (elements of each array) and the split count it will use.
ScratchSize attention_scratch(const AttnArgs& a, int num_sms);
void attention(const AttnArgs& a, const AttnScratch& s, int num_sms, cudaStream_t st);
// Whether attention() can write the page summaries of a.summary_slots.
bool summaries_in_attention(const AttnArgs& a);
// Throws kf::Error if this head_dim / group size has no kernel.
void check_attention_shape(int head_dim, int group);
#ifdef KINFER_ATTN_PHASES
// Per-phase mean time of the last fused sparse decode launch's first n_blocks
// blocks, as a JSON object (backend/cuda/phases.cuh; dev builds only).
std::string attention_phases_json(int n_blocks);
#endif

// ---- prefill.cu ----------------------------------------------------------------
// Dense causal attention on tensor cores for the rows of every sequence with
// more than one query row (prefill chunks); rows of other sequences are left
// untouched. Same arguments as attention() (policy fields unused); no scratch,
// no host round trip. attention() calls it when n_rows > n_seqs.
void prefill_attention(const AttnArgs& a, cudaStream_t st);

// ---- sample.cu -------------------------------------------------------------------
// Per-row sampling parameters, [rows] device arrays each (Backend::SampleArgs).
struct SampleRows {
  const int32_t* logit_row = nullptr;  // the logits row each sampled row reads
  const int32_t* forced = nullptr;     // >= 0: emit this token instead of sampling
  const float* temperature = nullptr;
  const int32_t* top_k = nullptr;
  const float* top_p = nullptr;
  const float* min_p = nullptr;
  const float* uniform = nullptr;
};
// tokens[r] = Backend::sample's token for sampled row r, from logits row
// a.logit_row[r] ([*, vocab], bf16 or f32); vocab <= 2^19, rows <= 65535.
// `scratch`: sample_scratch_words(rows, vocab) words (the top-k path's
// candidates). `arrived`: rows words, zero before the first call; each call
// leaves them zero (a counter per row inside the call). `sub_chunks`: the
// top-k path's sub-chunks of 4,096 logits a block (0: by rows, vocab and
// num_sms); any value gives the same tokens.
void sample(const void* logits, bool bf16_logits, int rows, int vocab, const SampleRows& a, int32_t* tokens,
            uint32_t* scratch, uint32_t* arrived, int num_sms, cudaStream_t st, int sub_chunks = 0);
int64_t sample_scratch_words(int rows, int vocab);

// ---- tokens.cu -----------------------------------------------------------------
// Backend::apply_penalties on F32 logits [rows, vocab], in place. `bits` is
// scratch of rows * 2 * ceil(vocab / 32) words.
struct PenaltyArgs {
  float* logits = nullptr;
  int rows = 0, vocab = 0;
  const int32_t* seq = nullptr;         // [rows] the batch sequence whose history a row penalises
  const int32_t* prompt_len = nullptr;  // [rows]
  const float* repetition = nullptr;    // [rows]
  const float* presence = nullptr;
  const float* frequency = nullptr;
  const int32_t* page_table = nullptr;  // [n_seqs, max_pages]
  const int32_t* ctx_len = nullptr;     // [n_seqs]
  int max_pages = 0;
  const int32_t* token_pool = nullptr;  // [pool pages, page_size]
  int page_size = 0;
  uint32_t* bits = nullptr;
};
void apply_penalties(const PenaltyArgs& a, cudaStream_t st);
int64_t penalty_scratch_words(int rows, int vocab);
// Backend::resolve_tokens: ids[i] < 0 -> prev[-ids[i]-1]; token_pool[slots[i]] = ids[i].
void resolve_tokens(int32_t* ids, const int32_t* prev, const int32_t* slots, int n, int32_t* token_pool,
                    int64_t pool_slots, cudaStream_t st);
// Backend::copy_rows: rows src[i] -> dst[i] of a [rows, row_bytes] array.
void copy_rows(void* base, int64_t row_bytes, const int32_t* src, const int32_t* dst, int n, cudaStream_t st);

// ---- logprobs.cu ------------------------------------------------------------------
// Backend::token_logprobs: for entry e, log-softmax of logits row rows[e]
// ([*, vocab], bf16 or f32) at targets[e] (< 0: sampled[-t-1]) -> values/ids
// [e, 0], and the row's top k (<= 20) -> [e, 1..k]. values, ids [m, k+1].
void token_logprobs(const void* logits, bool bf16_logits, int vocab, const int32_t* rows, const int32_t* targets,
                    const int32_t* sampled, int m, int k, float* values, int32_t* ids, cudaStream_t st);

}  // namespace kf::cuda

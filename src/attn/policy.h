// Attention policies as pure functions: which tokens of a sequence's paged
// cache one decode query reads, per KV head (DESIGN.md, Attention policies).
// Nothing here touches a pool: callers pass scores computed from the query
// and the page summaries (blocktopk) or the keys (topk), and get back logical
// page indices / token runs in ascending position order. The CPU attention
// kernel, the tests' brute force and the CUDA parity checks all use these.
#pragma once
#include <cstdint>
#include <string>

namespace kf {

// Which KV pages each decode query reads (DESIGN.md, Attention policies). The
// one enum for the CLI, the engine, both backends (CUDA kernels included) and
// the cost model (cost::spec_of).
enum class AttnKind : uint8_t { Dense, Local, BlockTopK, TopK };
struct AttnPolicy {
  AttnKind kind = AttnKind::Dense;
  int local_pages = 4;  // last pages always read (the partial page counts as one)
  int topk_pages = 64;  // selected pages (BlockTopK) or topk_pages*page_size tokens (TopK)
  bool operator==(const AttnPolicy& o) const {  // spelled out: the .cu files are C++17
    return kind == o.kind && local_pages == o.local_pages && topk_pages == o.topk_pages;
  }
};
const char* attn_kind_name(AttnKind k);
AttnKind parse_attn_kind(const std::string& s);  // dense|local|blocktopk|topk

}  // namespace kf

namespace kf::attn {

// A run of consecutive tokens inside one logical page: offsets [start, start+count).
struct Span {
  int page = 0;  // logical page index (0 = first page of the sequence)
  int start = 0;
  int count = 0;
};

inline int pages_for(int ctx_len, int page_size) { return (ctx_len + page_size - 1) / page_size; }
// Tokens of logical page i in a cache of ctx_len tokens.
inline int page_tokens(int i, int ctx_len, int page_size) {
  int rest = ctx_len - i * page_size;
  return rest < page_size ? rest : page_size;
}

// Throws kf::Error if a selecting policy's parameters are unusable (local_pages < 1, topk_pages < 0).
void check_policy(const AttnPolicy& p);

// The pages a policy could choose from: full pages strictly between the sink
// (page 0) and the last `local_pages` pages. Returns [first, end) logical indices.
struct Candidates {
  int first = 1;
  int end = 1;
  int size() const { return end > first ? end - first : 0; }
};
Candidates candidates(int ctx_len, int page_size, int local_pages);

// Mean over the G query heads of one group: qbar[d] = (sum_g q[g*stride + d]) / G,
// summed in g order. q points at the group's first head.
void group_mean(const float* q, int group, int64_t head_stride, int head_dim, float* qbar);
// a . b summed in index order (the score of a page or token).
float dot(const float* a, const float* b, int n);
// q16 . codes (int8 bits), exact (an int8 page summary's score before its scales, attn/summary.h).
int32_t dot_i8(const int16_t* q16, const uint8_t* codes, int n);

// All pages 0..n-1. Returns the count written to out.
int select_dense(int ctx_len, int page_size, int* out);
// Page 0 plus the last local_pages pages.
int select_local(int ctx_len, int page_size, int local_pages, int* out);
// Page 0, the last local_pages pages, and the topk_pages candidates with the
// highest score (page_scores indexed by logical page; only candidates are read;
// ties -> lower page index; NaN scores rank lowest). If candidates <= topk_pages
// every page is chosen. `order` is scratch of at least n_pages ints.
int select_blocktopk(int ctx_len, int page_size, int local_pages, int topk_pages,
                     const float* page_scores, int* order, int* out);
// Oracle: tokens of page 0 and of the last local_pages pages, plus the
// topk_pages*page_size candidate-page tokens with the highest token_scores
// [ctx_len] (ties -> lower position). Writes keep[t] = 1 for chosen tokens;
// `order` is scratch of at least ctx_len ints. Returns the number of tokens kept.
int select_topk_tokens(int ctx_len, int page_size, int local_pages, int topk_pages,
                       const float* token_scores, int* order, uint8_t* keep);

// What one decode query reads per KV head under a policy, for rooflines and
// byte counts: tokens whose K and V are read, tokens whose K alone is read
// (the topk oracle scores every candidate key), page summaries scored.
struct Reads {
  int64_t pages = 0;  // pages touched (page policies; for topk the sink, local and k pages' worth)
  int64_t kv_tokens = 0;
  int64_t k_tokens = 0;
  int64_t summaries = 0;
};
Reads reads_per_head(int ctx_len, int page_size, const AttnPolicy& policy);
// Bytes those reads move for one KV head of one layer: K/V elements of
// elem_bytes, summaries of summary_bytes each (attn/summary.h summary_bytes).
inline int64_t read_bytes(const Reads& r, int head_dim, int64_t elem_bytes, int64_t summary_bytes) {
  return (2 * r.kv_tokens + r.k_tokens) * head_dim * elem_bytes + r.summaries * summary_bytes;
}

// Spans covering whole logical pages (as chosen by the page policies).
int pages_to_spans(const int* pages, int n, int ctx_len, int page_size, Span* out);
// Spans of the kept tokens: maximal runs inside each page, ascending.
int mask_to_spans(const uint8_t* keep, int ctx_len, int page_size, Span* out);

}  // namespace kf::attn

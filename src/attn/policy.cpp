#include "attn/policy.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace kf {

const char* attn_kind_name(AttnKind k) {
  switch (k) {
    case AttnKind::Dense: return "dense";
    case AttnKind::Local: return "local";
    case AttnKind::BlockTopK: return "blocktopk";
    case AttnKind::TopK: return "topk";
  }
  return "?";
}

AttnKind parse_attn_kind(const std::string& s) {
  if (s == "dense") return AttnKind::Dense;
  if (s == "local") return AttnKind::Local;
  if (s == "blocktopk") return AttnKind::BlockTopK;
  if (s == "topk") return AttnKind::TopK;
  fail("unknown attention policy '{}' (expected dense, local, blocktopk or topk)", s);
}

}  // namespace kf

namespace kf::attn {

void check_policy(const AttnPolicy& p) {
  if (p.kind == AttnKind::Dense) return;  // reads everything: the sizes do not matter
  KF_CHECK(p.local_pages >= 1, "attention policy {}: local_pages must be >= 1 (got {})",
           attn_kind_name(p.kind), p.local_pages);
  KF_CHECK(p.topk_pages >= 0, "attention policy {}: topk_pages must be >= 0 (got {})",
           attn_kind_name(p.kind), p.topk_pages);
}

Candidates candidates(int ctx_len, int page_size, int local_pages) {
  // Every page but the last is full, and local_pages >= 1 covers the last one,
  // so the pages between the sink and the local window are all full.
  int n = pages_for(ctx_len, page_size);
  Candidates c;
  c.first = 1;
  c.end = std::max(1, n - local_pages);
  return c;
}

void group_mean(const float* q, int group, int64_t head_stride, int head_dim, float* qbar) {
  for (int d = 0; d < head_dim; ++d) {
    float s = 0.f;
    for (int g = 0; g < group; ++g) s += q[g * head_stride + d];
    qbar[d] = s / static_cast<float>(group);
  }
}

float dot(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

int32_t dot_i8(const int16_t* q16, const uint8_t* codes, int n) {
  int32_t s = 0;
  for (int i = 0; i < n; ++i) s += int32_t{q16[i]} * static_cast<int8_t>(codes[i]);
  return s;
}

int select_dense(int ctx_len, int page_size, int* out) {
  int n = pages_for(ctx_len, page_size);
  for (int i = 0; i < n; ++i) out[i] = i;
  return n;
}

int select_local(int ctx_len, int page_size, int local_pages, int* out) {
  int n = pages_for(ctx_len, page_size);
  Candidates c = candidates(ctx_len, page_size, local_pages);
  int k = 0;
  if (n > 0) out[k++] = 0;
  for (int i = std::max(1, c.end); i < n; ++i) out[k++] = i;
  return k;
}

namespace {
// Strict "ranks before": higher score first, NaN last, ties -> lower index.
bool ranks_before(float sa, int a, float sb, int b) {
  bool na = std::isnan(sa), nb = std::isnan(sb);
  if (na != nb) return nb;
  if (!na && sa != sb) return sa > sb;
  return a < b;
}
}  // namespace

int select_blocktopk(int ctx_len, int page_size, int local_pages, int topk_pages,
                     const float* page_scores, int* order, int* out) {
  Candidates c = candidates(ctx_len, page_size, local_pages);
  if (c.size() <= topk_pages) return select_dense(ctx_len, page_size, out);
  int m = 0;
  for (int i = c.first; i < c.end; ++i) order[m++] = i;
  std::partial_sort(order, order + topk_pages, order + m, [&](int a, int b) {
    return ranks_before(page_scores[a], a, page_scores[b], b);
  });
  std::sort(order, order + topk_pages);
  int n = pages_for(ctx_len, page_size);
  int k = 0;
  out[k++] = 0;
  for (int j = 0; j < topk_pages; ++j) out[k++] = order[j];
  for (int i = c.end; i < n; ++i) out[k++] = i;
  return k;
}

int select_topk_tokens(int ctx_len, int page_size, int local_pages, int topk_pages,
                       const float* token_scores, int* order, uint8_t* keep) {
  Candidates c = candidates(ctx_len, page_size, local_pages);
  int first = c.first * page_size;
  int end = c.end * page_size;  // candidate pages are full
  if (c.size() == 0) end = first;
  int64_t budget = static_cast<int64_t>(topk_pages) * page_size;
  std::fill(keep, keep + ctx_len, uint8_t{1});
  int m = end - first;
  if (m <= budget) return ctx_len;
  for (int t = first; t < end; ++t) {
    keep[t] = 0;
    order[t - first] = t;
  }
  int k = static_cast<int>(budget);
  std::partial_sort(order, order + k, order + m, [&](int a, int b) {
    return ranks_before(token_scores[a], a, token_scores[b], b);
  });
  for (int j = 0; j < k; ++j) keep[order[j]] = 1;
  return ctx_len - m + k;
}

int pages_to_spans(const int* pages, int n, int ctx_len, int page_size, Span* out) {
  for (int i = 0; i < n; ++i) out[i] = Span{pages[i], 0, page_tokens(pages[i], ctx_len, page_size)};
  return n;
}

int mask_to_spans(const uint8_t* keep, int ctx_len, int page_size, Span* out) {
  int k = 0;
  for (int t = 0; t < ctx_len;) {
    if (!keep[t]) {
      ++t;
      continue;
    }
    int page = t / page_size;
    int page_end = std::min(ctx_len, (page + 1) * page_size);
    int s = t;
    while (t < page_end && keep[t]) ++t;
    out[k++] = Span{page, s - page * page_size, t - s};
  }
  return k;
}

Reads reads_per_head(int ctx_len, int page_size, const AttnPolicy& policy) {
  Reads r;
  const Candidates c = candidates(ctx_len, page_size, policy.local_pages);
  // Tokens of the sink page and the last local_pages pages (no overlap when candidates exist).
  const int64_t fixed = c.size() > 0 ? ctx_len - int64_t(c.end - c.first) * page_size : ctx_len;
  const int n_pages = pages_for(ctx_len, page_size);
  const int chosen = std::min(c.size(), policy.topk_pages);
  switch (policy.kind) {
    case AttnKind::Dense:
      r.pages = n_pages;
      r.kv_tokens = ctx_len;
      break;
    case AttnKind::Local:
      r.pages = n_pages - c.size();
      r.kv_tokens = fixed;
      break;
    case AttnKind::BlockTopK:
      r.pages = n_pages - c.size() + chosen;
      r.summaries = c.size();
      r.kv_tokens = fixed + int64_t(chosen) * page_size;
      break;
    case AttnKind::TopK: {
      const int64_t cand = int64_t(c.size()) * page_size;
      const int64_t kept = std::min<int64_t>(cand, int64_t(policy.topk_pages) * page_size);
      r.pages = n_pages - c.size() + chosen;
      r.kv_tokens = fixed + kept;
      r.k_tokens = cand - kept;
      break;
    }
  }
  return r;
}

}  // namespace kf::attn

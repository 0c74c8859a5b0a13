#include "backend/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "attn/summary.h"
#include "backend/cpu/vector_kernels.h"
#include "util/error.h"

namespace kf {
namespace {

constexpr int kChunk = 32;        // keys per online-softmax step (never crosses a page)
constexpr int kMaxGroupDim = 8192;  // query heads per KV head * head_dim held on the stack
constexpr int kMaxGroup = 64;       // query heads per KV head

void check_f32(const Tensor& t, const char* what, int ndim) {
  KF_CHECK(t.device == Device::CPU, "{}: expected a CPU tensor", what);
  KF_CHECK(t.dtype == DType::F32, "{}: expected F32, got {}", what, dtype_name(t.dtype));
  KF_CHECK(t.ndim == ndim, "{}: expected {} dims, got {}", what, ndim, t.shape_str());
  KF_CHECK(t.is_contiguous(), "{}: must be contiguous", what);
}

void check_i32(const Tensor& t, const char* what, int64_t n) {
  KF_CHECK(t.device == Device::CPU, "{}: expected a CPU tensor", what);
  KF_CHECK(t.dtype == DType::I32, "{}: expected I32, got {}", what, dtype_name(t.dtype));
  KF_CHECK(t.numel() == n, "{}: expected {} elements, got {}", what, n, t.shape_str());
}

struct PoolShape {
  int n_pages, n_kv_heads, page_size, head_dim;
  bool i8_summaries;  // summary: U8 holding int8 codes with summary_scale (attn/summary.h), else F32
};

PoolShape check_pool(const KvLayer& kv) {
  check_f32(kv.k, "kv.k", 4);
  check_f32(kv.v, "kv.v", 4);
  const bool i8 = kv.summary.dtype == DType::U8;
  if (i8) {
    KF_CHECK(kv.summary.device == Device::CPU && kv.summary.ndim == 3 && kv.summary.is_contiguous(),
             "kv.summary: expected a contiguous CPU [pages, kv_heads, head_dim] tensor, got {}",
             kv.summary.shape_str());
    check_f32(kv.summary_scale, "kv.summary_scale", 2);
  } else {
    check_f32(kv.summary, "kv.summary", 3);
  }
  PoolShape p{static_cast<int>(kv.k.dim(0)), static_cast<int>(kv.k.dim(1)),
              static_cast<int>(kv.k.dim(2)), static_cast<int>(kv.k.dim(3)), i8};
  KF_CHECK(kv.v.shape == kv.k.shape, "kv.v {} differs from kv.k {}", kv.v.shape_str(),
           kv.k.shape_str());
  KF_CHECK(kv.summary.dim(0) == p.n_pages && kv.summary.dim(1) == p.n_kv_heads &&
               kv.summary.dim(2) == p.head_dim,
           "kv.summary {} does not match pool {}", kv.summary.shape_str(), kv.k.shape_str());
  KF_CHECK(!i8 || (kv.summary_scale.dim(0) == p.n_pages && kv.summary_scale.dim(1) == p.n_kv_heads),
           "kv.summary_scale {} does not match pool {}", kv.summary_scale.shape_str(), kv.k.shape_str());
  KF_CHECK(p.page_size >= 1 && p.head_dim >= 1 && p.n_kv_heads >= 1, "empty KV pool {}",
           kv.k.shape_str());
  return p;
}

// Summary of one page and KV head: mean of its page_size keys, summed in slot
// order; int8 pools store it as codes with a scale (attn/summary.h).
void write_summary(const KvLayer& kv, const PoolShape& p, int page) {
  const float* k = kv.k.ptr<float>();
  for (int h = 0; h < p.n_kv_heads; ++h) {
    const int64_t page_head = static_cast<int64_t>(page) * p.n_kv_heads + h;
    const float* kh = k + page_head * p.page_size * p.head_dim;
    auto mean = [&](int d) {
      float s = 0.f;
      for (int t = 0; t < p.page_size; ++t) s += kh[static_cast<int64_t>(t) * p.head_dim + d];
      return s / static_cast<float>(p.page_size);
    };
    if (!p.i8_summaries) {
      float* out = kv.summary.ptr<float>() + page_head * p.head_dim;
      for (int d = 0; d < p.head_dim; ++d) out[d] = mean(d);
      continue;
    }
    float amax = 0.f;  // two passes over the keys rather than a buffer: no allocation
    for (int d = 0; d < p.head_dim; ++d) amax = std::max(amax, std::fabs(mean(d)));
    const float scale = attn::i8_summary_scale(amax);
    kv.summary_scale.ptr<float>()[page_head] = scale;
    int8_t* codes = reinterpret_cast<int8_t*>(kv.summary.ptr<uint8_t>()) + page_head * p.head_dim;
    for (int d = 0; d < p.head_dim; ++d) codes[d] = attn::i8_encode(mean(d), scale);
  }
}

}  // namespace

void cpu_kv_write(const KvLayer& kv, const Tensor& k, const Tensor& v, const Tensor& slots) {
  PoolShape p = check_pool(kv);
  check_f32(k, "kv_write k", 3);
  check_f32(v, "kv_write v", 3);
  KF_CHECK(k.shape == v.shape, "kv_write: k {} and v {} differ", k.shape_str(), v.shape_str());
  KF_CHECK(k.dim(1) == p.n_kv_heads && k.dim(2) == p.head_dim,
           "kv_write: k {} does not match pool {}", k.shape_str(), kv.k.shape_str());
  int64_t n = k.dim(0);
  check_i32(slots, "kv_write slots", n);
  const int32_t* slot = slots.ptr<int32_t>();
  int64_t n_slots = static_cast<int64_t>(p.n_pages) * p.page_size;
  for (int64_t i = 0; i < n; ++i)
    KF_CHECK(slot[i] >= 0 && slot[i] < n_slots, "kv_write: slot {} of row {} is outside the pool ({} slots)",
             slot[i], i, n_slots);
  int64_t row = static_cast<int64_t>(p.head_dim);
  for (int64_t i = 0; i < n; ++i) {
    int page = slot[i] / p.page_size, off = slot[i] % p.page_size;
    for (int h = 0; h < p.n_kv_heads; ++h) {
      int64_t dst = ((static_cast<int64_t>(page) * p.n_kv_heads + h) * p.page_size + off) * row;
      int64_t src = (i * p.n_kv_heads + h) * row;
      std::memcpy(kv.k.ptr<float>() + dst, k.ptr<float>() + src, row * sizeof(float));
      std::memcpy(kv.v.ptr<float>() + dst, v.ptr<float>() + src, row * sizeof(float));
    }
  }
  // Summaries after all writes, so a page filled by this call sees all its keys.
  for (int64_t i = 0; i < n; ++i)
    if (slot[i] % p.page_size == p.page_size - 1) write_summary(kv, p, slot[i] / p.page_size);
}

void cpu_kv_copy_pages(const KvLayer& kv, const Tensor& src, const Tensor& dst) {
  PoolShape p = check_pool(kv);
  int64_t n = src.numel();
  check_i32(src, "kv_copy_pages src", n);
  check_i32(dst, "kv_copy_pages dst", n);
  const int32_t* s = src.ptr<int32_t>();
  const int32_t* d = dst.ptr<int32_t>();
  int64_t page_elems = static_cast<int64_t>(p.n_kv_heads) * p.page_size * p.head_dim;
  int64_t sum_elems = static_cast<int64_t>(p.n_kv_heads) * p.head_dim;
  for (int64_t i = 0; i < n; ++i) {
    KF_CHECK(s[i] >= 0 && s[i] < p.n_pages && d[i] >= 0 && d[i] < p.n_pages,
             "kv_copy_pages: pair {} ({} -> {}) is outside the pool ({} pages)", i, s[i], d[i], p.n_pages);
    if (s[i] == d[i]) continue;
    std::memcpy(kv.k.ptr<float>() + d[i] * page_elems, kv.k.ptr<float>() + s[i] * page_elems,
                page_elems * sizeof(float));
    std::memcpy(kv.v.ptr<float>() + d[i] * page_elems, kv.v.ptr<float>() + s[i] * page_elems,
                page_elems * sizeof(float));
    const int64_t sum_bytes =
        sum_elems * attn::summary_elem_bytes(p.i8_summaries ? attn::SummaryKind::I8 : attn::SummaryKind::F32);
    std::memcpy(kv.summary.ptr<uint8_t>() + d[i] * sum_bytes, kv.summary.ptr<uint8_t>() + s[i] * sum_bytes, sum_bytes);
    if (p.i8_summaries)
      std::memcpy(kv.summary_scale.ptr<float>() + int64_t(d[i]) * p.n_kv_heads,
                  kv.summary_scale.ptr<float>() + int64_t(s[i]) * p.n_kv_heads, p.n_kv_heads * sizeof(float));
  }
}

void cpu_attention(const Tensor& q, const KvLayer& kv, const AttnBatch& batch,
                   const AttnPolicy& policy, float scale, const Tensor& out, PageSelection* sel,
                   CpuAttnWorkspace& ws, const ParallelFor& parallel_for) {
  PoolShape p = check_pool(kv);
  check_f32(q, "attention q", 3);
  check_f32(out, "attention out", 3);
  KF_CHECK(out.shape == q.shape, "attention: out {} differs from q {}", out.shape_str(), q.shape_str());
  const int n_rows = static_cast<int>(q.dim(0));
  const int n_heads = static_cast<int>(q.dim(1));
  const int D = p.head_dim, P = p.page_size, Hkv = p.n_kv_heads;
  KF_CHECK(q.dim(2) == D, "attention: q head_dim {} != pool head_dim {}", q.dim(2), D);
  KF_CHECK(n_heads % Hkv == 0, "attention: {} query heads are not a multiple of {} KV heads", n_heads, Hkv);
  const int G = n_heads / Hkv;
  KF_CHECK(G <= kMaxGroup, "attention: {} query heads per KV head exceeds {}", G, kMaxGroup);
  KF_CHECK(G * D <= kMaxGroupDim, "attention: group {} x head_dim {} exceeds {}", G, D, kMaxGroupDim);

  const int n_seqs = batch.n_seqs, max_pages = batch.max_pages;
  KF_CHECK(n_seqs >= 0 && max_pages >= 0, "attention: bad batch ({} seqs, {} pages)", n_seqs, max_pages);
  check_i32(batch.q_start, "attention q_start", n_seqs + 1);
  check_i32(batch.ctx_len, "attention ctx_len", n_seqs);
  check_i32(batch.page_table, "attention page_table", static_cast<int64_t>(n_seqs) * max_pages);
  const int32_t* q_start = batch.q_start.ptr<int32_t>();
  const int32_t* ctx_len = batch.ctx_len.ptr<int32_t>();
  const int32_t* table = batch.page_table.ptr<int32_t>();
  KF_CHECK(q_start[0] == 0 && q_start[n_seqs] == n_rows, "attention: q_start spans [{}, {}), q has {} rows",
           q_start[0], q_start[n_seqs], n_rows);
  for (int s = 0; s < n_seqs; ++s) {
    int rows = q_start[s + 1] - q_start[s];
    KF_CHECK(rows >= 0, "attention: q_start decreases at sequence {}", s);
    KF_CHECK(ctx_len[s] >= rows, "attention: sequence {} has {} query rows but ctx_len {}", s, rows, ctx_len[s]);
    int np = attn::pages_for(ctx_len[s], P);
    KF_CHECK(np <= max_pages, "attention: sequence {} needs {} pages, table has {}", s, np, max_pages);
    for (int i = 0; i < np; ++i) {
      int32_t pg = table[static_cast<int64_t>(s) * max_pages + i];
      KF_CHECK(pg >= 0 && pg < p.n_pages, "attention: sequence {} page {} -> {} is outside the pool ({} pages)",
               s, i, pg, p.n_pages);
    }
  }
  // Each sequence's decode policy: its row of seq_policy, or the step's.
  const int32_t* seq_pol = nullptr;
  if (batch.seq_policy.data) {
    check_i32(batch.seq_policy, "attention seq_policy", static_cast<int64_t>(n_seqs) * 3);
    seq_pol = batch.seq_policy.ptr<int32_t>();
  }
  auto policy_of = [&](int s) {
    if (!seq_pol) return policy;
    AttnPolicy p;
    KF_CHECK(seq_pol[3 * s] >= 0 && seq_pol[3 * s] <= static_cast<int>(AttnKind::TopK),
             "attention: sequence {} has policy kind {}", s, seq_pol[3 * s]);
    p.kind = static_cast<AttnKind>(seq_pol[3 * s]);
    p.local_pages = seq_pol[3 * s + 1];
    p.topk_pages = seq_pol[3 * s + 2];
    return p;
  };
  bool selects = false, by_token = false;
  for (int s = 0; s < n_seqs; ++s) {
    const AttnPolicy ps = policy_of(s);
    attn::check_policy(ps);
    selects |= ps.kind != AttnKind::Dense;
    by_token |= ps.kind == AttnKind::TopK;
  }
  if (sel) {
    check_i32(sel->pages, "PageSelection pages", static_cast<int64_t>(n_seqs) * Hkv * max_pages);
    check_i32(sel->counts, "PageSelection counts", static_cast<int64_t>(n_seqs) * Hkv);
  }

  auto run = [&](int64_t n, const std::function<void(int64_t)>& fn) {
    if (parallel_for) parallel_for(n, fn);
    else for (int64_t i = 0; i < n; ++i) fn(i);
  };
  const float* qp = q.ptr<float>();
  const float* kp = kv.k.ptr<float>();
  const float* vp = kv.v.ptr<float>();
  const void* sp = kv.summary.data;  // F32, or U8 holding int8 codes scaled by ss
  const float* ss = p.i8_summaries ? kv.summary_scale.ptr<float>() : nullptr;
  const int64_t head_elems = static_cast<int64_t>(P) * D;  // one (page, kv head) block

  // Phase 1: decode rows of selecting policies choose their spans per (seq, KV head).
  const int64_t ctx_cap = static_cast<int64_t>(max_pages) * P;
  const int64_t span_cap = by_token ? ctx_cap : max_pages;
  const int64_t ints_cap = by_token ? ctx_cap : 2 * static_cast<int64_t>(max_pages);
  const int64_t floats_cap = (by_token ? ctx_cap : max_pages) + D;
  const int64_t n_tasks1 = static_cast<int64_t>(n_seqs) * Hkv;
  if (selects) {
    auto grow = [](auto& v, int64_t n) {
      if (static_cast<int64_t>(v.size()) < n) v.resize(n);
    };
    grow(ws.spans, n_tasks1 * span_cap);
    grow(ws.span_counts, n_tasks1);
    grow(ws.ints, n_tasks1 * ints_cap);
    grow(ws.floats, n_tasks1 * floats_cap);
    if (by_token) grow(ws.keep, n_tasks1 * ctx_cap);
    if (ss) grow(ws.q16, n_tasks1 * D);
    run(n_tasks1, [&](int64_t task) {
      int s = static_cast<int>(task / Hkv), h = static_cast<int>(task % Hkv);
      ws.span_counts[task] = 0;
      if (q_start[s + 1] - q_start[s] != 1) return;  // prefill: dense, no selection
      const AttnPolicy policy = policy_of(s);
      if (policy.kind == AttnKind::Dense) return;
      const int T = ctx_len[s];
      const int32_t* pt = table + static_cast<int64_t>(s) * max_pages;
      attn::Span* spans = ws.spans.data() + task * span_cap;
      int* ints = ws.ints.data() + task * ints_cap;
      float* floats = ws.floats.data() + task * floats_cap;
      float* qbar = floats;
      float* scores = floats + D;
      attn::group_mean(qp + (static_cast<int64_t>(q_start[s]) * n_heads + h * G) * D, G, D, D, qbar);
      int n = 0;
      if (policy.kind == AttnKind::Local) {
        n = attn::select_local(T, P, policy.local_pages, ints);
        n = attn::pages_to_spans(ints, n, T, P, spans);
      } else if (policy.kind == AttnKind::BlockTopK) {
        attn::Candidates c = attn::candidates(T, P, policy.local_pages);
        if (ss) {  // int8 summaries: q̄ in 16 bits, exact integer dot products (attn/summary.h)
          int16_t* q16 = ws.q16.data() + task * D;
          float qmax = 0.f;
          for (int d = 0; d < D; ++d) qmax = std::max(qmax, std::fabs(qbar[d]));
          const float qscale = attn::i16_query_scale(qmax);
          for (int d = 0; d < D; ++d) q16[d] = attn::i16_encode(qbar[d], qscale);
          for (int i = c.first; i < c.end; ++i) {
            const int64_t ph = static_cast<int64_t>(pt[i]) * Hkv + h;
            const int32_t dot = attn::dot_i8(q16, static_cast<const uint8_t*>(sp) + ph * D, D);
            scores[i] = attn::i8_page_score(dot, qscale, ss[ph]);
          }
        } else {
          for (int i = c.first; i < c.end; ++i)
            scores[i] = attn::dot(qbar, static_cast<const float*>(sp) + (static_cast<int64_t>(pt[i]) * Hkv + h) * D, D);
        }
        int* order = ints + max_pages;
        n = attn::select_blocktopk(T, P, policy.local_pages, policy.topk_pages, scores, order, ints);
        n = attn::pages_to_spans(ints, n, T, P, spans);
      } else {  // TopK oracle: exact group-mean logits of the candidate tokens
        attn::Candidates c = attn::candidates(T, P, policy.local_pages);
        for (int i = c.first; i < c.end; ++i) {
          const float* kb = kp + (static_cast<int64_t>(pt[i]) * Hkv + h) * head_elems;
          for (int t = 0; t < P; ++t) scores[i * P + t] = attn::dot(qbar, kb + static_cast<int64_t>(t) * D, D);
        }
        uint8_t* keep = ws.keep.data() + task * ctx_cap;
        attn::select_topk_tokens(T, P, policy.local_pages, policy.topk_pages, scores, ints, keep);
        n = attn::mask_to_spans(keep, T, P, spans);
      }
      ws.span_counts[task] = n;
    });
  }

  if (sel) {
    int32_t* sel_pages = sel->pages.ptr<int32_t>();
    int32_t* sel_counts = sel->counts.ptr<int32_t>();
    for (int64_t task = 0; task < n_tasks1; ++task) {
      int s = static_cast<int>(task / Hkv);
      const int32_t* pt = table + static_cast<int64_t>(s) * max_pages;
      int32_t* dst = sel_pages + task * max_pages;
      std::fill(dst, dst + max_pages, -1);
      int k = 0;
      if (policy_of(s).kind != AttnKind::Dense && q_start[s + 1] - q_start[s] == 1) {
        const attn::Span* spans = ws.spans.data() + task * span_cap;
        for (int j = 0; j < ws.span_counts[task]; ++j)
          if (k == 0 || dst[k - 1] != pt[spans[j].page]) dst[k++] = pt[spans[j].page];
      } else if (q_start[s + 1] > q_start[s]) {
        for (int i = 0; i < attn::pages_for(ctx_len[s], P); ++i) dst[k++] = pt[i];
      }
      sel_counts[task] = k;
    }
  }

  // Phase 2: each (row, KV head) attends for the G query heads of its group.
  const cpu::VectorKernels& kernels = cpu::best_vector_kernels();
  run(static_cast<int64_t>(n_rows) * Hkv, [&](int64_t task) {
    const int r = static_cast<int>(task / Hkv), h = static_cast<int>(task % Hkv);
    const int s = static_cast<int>(std::upper_bound(q_start, q_start + n_seqs + 1, r) - q_start) - 1;
    const int rows = q_start[s + 1] - q_start[s];
    const int pos = ctx_len[s] - rows + (r - q_start[s]);
    const int32_t* pt = table + static_cast<int64_t>(s) * max_pages;

    float acc[kMaxGroupDim];
    float m[kMaxGroup], l[kMaxGroup], rescale[kMaxGroup];
    float logit[kMaxGroup * kChunk];  // [G, kChunk]
    for (int g = 0; g < G; ++g) {
      m[g] = -std::numeric_limits<float>::infinity();
      l[g] = 0.f;
    }
    std::fill(acc, acc + G * D, 0.f);
    const float* qrow = qp + (static_cast<int64_t>(r) * n_heads + h * G) * D;

    auto visit = [&](const attn::Span& span) {
      const int64_t base = (static_cast<int64_t>(pt[span.page]) * Hkv + h) * head_elems;
      for (int off = span.start; off < span.start + span.count; off += kChunk) {
        const int nc = std::min(kChunk, span.start + span.count - off);
        const float* kc = kp + base + static_cast<int64_t>(off) * D;
        const float* vc = vp + base + static_cast<int64_t>(off) * D;
        kernels.logits(qrow, G, kc, nc, D, scale, logit, kChunk);  // [G, kChunk]
        for (int g = 0; g < G; ++g) {
          float* lg = logit + g * kChunk;
          const float cmax = *std::max_element(lg, lg + nc);
          rescale[g] = 1.f;
          if (cmax > m[g]) {  // rescale the running sums to the new maximum
            rescale[g] = std::exp(m[g] - cmax);
            l[g] *= rescale[g];
            m[g] = cmax;
          }
          for (int j = 0; j < nc; ++j) {  // logits become the softmax weights
            lg[j] = std::exp(lg[j] - m[g]);
            l[g] += lg[j];
          }
        }
        kernels.accumulate(acc, G, rescale, logit, kChunk, vc, nc, D);
      }
    };

    const int64_t task1 = static_cast<int64_t>(s) * Hkv + h;
    if (rows == 1 && policy_of(s).kind != AttnKind::Dense) {
      const attn::Span* spans = ws.spans.data() + task1 * span_cap;
      for (int j = 0; j < ws.span_counts[task1]; ++j) visit(spans[j]);
    } else {  // dense causal: every page up to and including this row's position
      const int T = pos + 1;
      for (int i = 0; i < attn::pages_for(T, P); ++i) visit(attn::Span{i, 0, attn::page_tokens(i, T, P)});
    }

    float* orow = out.ptr<float>() + (static_cast<int64_t>(r) * n_heads + h * G) * D;
    for (int g = 0; g < G; ++g) {
      float inv = l[g] > 0.f ? 1.f / l[g] : 0.f;
      for (int d = 0; d < D; ++d) orow[g * D + d] = acc[g * D + d] * inv;
    }
  });
}

}  // namespace kf

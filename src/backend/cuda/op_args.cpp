// Argument checks and launch arguments of the CUDA backend's ops (op_args.h).
#include "backend/cuda/op_args.h"

namespace kf::cuda {

void need(const Tensor& t, DType dt, const char* what) {
  KF_CHECK(t.device == Device::CUDA, "{}: expected a CUDA tensor", what);
  KF_CHECK(t.dtype == dt, "{}: expected {}, got {}", what, dtype_name(dt), dtype_name(t.dtype));
  KF_CHECK(t.is_contiguous(), "{}: must be contiguous ({})", what, t.shape_str());
}

KvPool pool_of(const KvLayer& kv) {
  need(kv.k, DType::BF16, "kv.k");
  need(kv.v, DType::BF16, "kv.v");
  KF_CHECK(kv.k.ndim == 4 && kv.v.shape == kv.k.shape, "KV pool: k {} v {}", kv.k.shape_str(), kv.v.shape_str());
  KF_CHECK(kv.summary.device == Device::CUDA &&
               (kv.summary.dtype == DType::F32 || kv.summary.dtype == DType::BF16 || kv.summary.dtype == DType::U8),
           "KV pool: summary must be a CUDA F32, BF16 or U8 (int8 codes) tensor, got {}", dtype_name(kv.summary.dtype));
  KvPool p;
  p.k = bptr(kv.k);
  p.v = bptr(kv.v);
  p.summary = kv.summary.data;
  p.n_pages = static_cast<int>(kv.k.dim(0));
  p.n_kv_heads = static_cast<int>(kv.k.dim(1));
  p.page_size = static_cast<int>(kv.k.dim(2));
  p.head_dim = static_cast<int>(kv.k.dim(3));
  KF_CHECK(kv.summary.numel() == static_cast<int64_t>(p.n_pages) * p.n_kv_heads * p.head_dim,
           "KV pool: summary {} does not match {}", kv.summary.shape_str(), kv.k.shape_str());
  p.summary_kind = kv.summary.dtype == DType::F32    ? attn::SummaryKind::F32
                   : kv.summary.dtype == DType::BF16 ? attn::SummaryKind::BF16
                                                     : attn::SummaryKind::I8;
  if (p.summary_kind == attn::SummaryKind::I8) {
    need(kv.summary_scale, DType::F32, "KV pool: summary_scale");
    KF_CHECK(kv.summary_scale.numel() == static_cast<int64_t>(p.n_pages) * p.n_kv_heads,
             "KV pool: summary_scale {} does not match {}", kv.summary_scale.shape_str(), kv.k.shape_str());
    KF_CHECK(p.head_dim % 16 == 0, "KV pool: int8 summaries need head_dim a multiple of 16 (got {})", p.head_dim);
    p.summary_scale = static_cast<float*>(kv.summary_scale.data);
  }
  return p;
}

QkvArgs qkv_args(const Tensor& qkv, const Tensor* q_norm, const Tensor* k_norm, float eps, const Tensor& positions,
                 const RopeParams& rope_p, const KvLayer& kv, const Tensor& slots, const Tensor& q_out) {
  const KvPool pool = pool_of(kv);
  need(qkv, DType::BF16, "qkv_rope_write qkv");
  need(q_out, DType::BF16, "qkv_rope_write q_out");
  need(positions, DType::I32, "qkv_rope_write positions");
  need(slots, DType::I32, "qkv_rope_write slots");
  KF_CHECK(q_out.ndim == 3 && q_out.dim(2) == pool.head_dim, "qkv_rope_write: q_out {} for pool {}",
           q_out.shape_str(), kv.k.shape_str());
  const int64_t n = q_out.dim(0), hq = q_out.dim(1), width = (hq + 2 * pool.n_kv_heads) * pool.head_dim;
  KF_CHECK(qkv.numel() == n * width && qkv.dim(-1) == width, "qkv_rope_write: qkv {} is not [{}, {}]",
           qkv.shape_str(), n, width);
  KF_CHECK(positions.numel() == n && slots.numel() == n, "qkv_rope_write: {} positions, {} slots for {} rows",
           positions.numel(), slots.numel(), n);
  for (const Tensor* w : {q_norm, k_norm})
    if (w) {
      need(*w, DType::BF16, "qkv_rope_write norm weight");
      KF_CHECK(w->numel() == pool.head_dim, "qkv_rope_write: norm weight {} for head_dim {}", w->shape_str(),
               pool.head_dim);
    }
  QkvArgs a;
  a.qkv = bptr(qkv);
  a.q_norm = q_norm ? bptr(*q_norm) : nullptr;
  a.k_norm = k_norm ? bptr(*k_norm) : nullptr;
  a.eps = eps;
  a.pos = iptr(positions);
  a.inv_freq_host = rope_p.inv_freq;
  a.rotary_dim = rope_p.rotary_dim > 0 ? rope_p.rotary_dim : pool.head_dim;
  a.kv = pool;
  a.slots = iptr(slots);
  a.q_out = bptr(q_out);
  a.n = static_cast<int>(n);
  a.n_heads = static_cast<int>(hq);
  return a;
}

AttnArgs attn_args(const Tensor& q, const KvLayer& kv, const AttnBatch& batch, const AttnPolicy& policy, float scale,
                   const Tensor& out, PageSelection* sel) {
  AttnArgs a;
  a.kv = pool_of(kv);
  need(q, DType::BF16, "attention q");
  need(out, DType::BF16, "attention out");
  KF_CHECK(q.ndim == 3 && out.shape == q.shape && q.dim(2) == a.kv.head_dim,
           "attention: q {} out {} pool {}", q.shape_str(), out.shape_str(), kv.k.shape_str());
  KF_CHECK(q.dim(1) % a.kv.n_kv_heads == 0, "attention: {} query heads, {} KV heads", q.dim(1),
           a.kv.n_kv_heads);
  KF_CHECK(policy.local_pages >= 1 && policy.topk_pages >= 0, "attention: bad policy (local {}, topk {})",
           policy.local_pages, policy.topk_pages);
  need(batch.q_start, DType::I32, "attention q_start");
  need(batch.ctx_len, DType::I32, "attention ctx_len");
  need(batch.page_table, DType::I32, "attention page_table");
  KF_CHECK(batch.q_start.numel() == batch.n_seqs + 1 && batch.ctx_len.numel() == batch.n_seqs &&
               batch.page_table.numel() == static_cast<int64_t>(batch.n_seqs) * batch.max_pages,
           "attention: batch tensors do not match {} sequences x {} pages", batch.n_seqs, batch.max_pages);
  check_attention_shape(a.kv.head_dim, static_cast<int>(q.dim(1) / a.kv.n_kv_heads));
  a.q = bptr(q);
  a.out = bptr(out);
  a.q_start = iptr(batch.q_start);
  a.ctx_len = iptr(batch.ctx_len);
  a.page_table = iptr(batch.page_table);
  a.n_seqs = batch.n_seqs;
  a.max_pages = batch.max_pages;
  a.n_rows = static_cast<int>(q.dim(0));
  a.n_heads = static_cast<int>(q.dim(1));
  a.kind = policy.kind;
  if (batch.seq_policy.data) {
    need(batch.seq_policy, DType::I32, "attention seq_policy");
    KF_CHECK(batch.seq_policy.numel() == static_cast<int64_t>(batch.n_seqs) * 3,
             "attention: seq_policy {} for {} sequences", batch.seq_policy.shape_str(), batch.n_seqs);
    a.seq_policy = iptr(batch.seq_policy);
  }
  a.local_pages = policy.local_pages;
  a.topk_pages = policy.topk_pages;
  a.scale = scale;
  if (sel) {
    const int64_t pairs = static_cast<int64_t>(batch.n_seqs) * a.kv.n_kv_heads;
    need(sel->pages, DType::I32, "PageSelection pages");
    need(sel->counts, DType::I32, "PageSelection counts");
    KF_CHECK(sel->pages.numel() == pairs * batch.max_pages && sel->counts.numel() == pairs,
             "PageSelection: pages {} counts {} for {} sequences", sel->pages.shape_str(),
             sel->counts.shape_str(), batch.n_seqs);
    a.sel_pages = iptr(sel->pages);
    a.sel_counts = iptr(sel->counts);
  }
  return a;
}

}  // namespace kf::cuda

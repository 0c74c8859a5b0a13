// Paged KV cache writes on the GPU: kv_write (rows -> slots, then the key
// summary of every page the write filled) and kv_copy_pages (copy-on-write).
// Pool layout [page][kv_head][page_size][head_dim], bf16.
#include "backend/cuda/common.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

// One block per written row: every KV head's K and V row, 16 bytes per thread.
__global__ void kv_write_kernel(KvPool kv, const bf16_t* k, const bf16_t* v, const int32_t* slots) {
  const int i = blockIdx.x;
  const int slot = slots[i];
  if (slot < 0 || slot >= kv.n_pages * kv.page_size) return;  // the host checks nothing on device data
  const int page = slot / kv.page_size, off = slot % kv.page_size;
  const int vecs = kv.head_dim / 8;  // 16-byte vectors per head row
  for (int t = threadIdx.x; t < kv.n_kv_heads * vecs; t += blockDim.x) {
    const int h = t / vecs, c = t % vecs;
    const int64_t src = (static_cast<int64_t>(i) * kv.n_kv_heads + h) * kv.head_dim + c * 8;
    const int64_t dst = ((static_cast<int64_t>(page) * kv.n_kv_heads + h) * kv.page_size + off) * kv.head_dim + c * 8;
    *reinterpret_cast<uint4*>(kv.k + dst) = *reinterpret_cast<const uint4*>(k + src);
    *reinterpret_cast<uint4*>(kv.v + dst) = *reinterpret_cast<const uint4*>(v + src);
  }
}

// Runs after kv_write_kernel (same stream): rows that wrote a page's last
// offset set its summary to the mean of its keys, summed in slot order.
__global__ void kv_summary_kernel(KvPool kv, const int32_t* slots) {
  const int slot = slots[blockIdx.x];
  if (slot < 0 || slot >= kv.n_pages * kv.page_size) return;
  if (slot % kv.page_size != kv.page_size - 1) return;
  const int page = slot / kv.page_size;
  for (int h = threadIdx.x / 32; h < kv.n_kv_heads; h += blockDim.x / 32)  // a warp per KV head
    write_page_summary(kv, static_cast<int64_t>(page) * kv.n_kv_heads + h);
}

__global__ void kv_copy_kernel(KvPool kv, const int32_t* src, const int32_t* dst) {
  const int s = src[blockIdx.x], d = dst[blockIdx.x];
  if (s == d) return;
  const int64_t vecs = static_cast<int64_t>(kv.n_kv_heads) * kv.page_size * kv.head_dim / 8;
  const uint4* ks = reinterpret_cast<const uint4*>(kv.k) + s * vecs;
  const uint4* vs = reinterpret_cast<const uint4*>(kv.v) + s * vecs;
  uint4* kd = reinterpret_cast<uint4*>(kv.k) + d * vecs;
  uint4* vd = reinterpret_cast<uint4*>(kv.v) + d * vecs;
  for (int64_t i = threadIdx.x; i < vecs; i += blockDim.x) {
    kd[i] = ks[i];
    vd[i] = vs[i];
  }
  const int64_t sum_bytes =
      static_cast<int64_t>(kv.n_kv_heads) * kv.head_dim * attn::summary_elem_bytes(kv.summary_kind);
  const uint8_t* ss = static_cast<const uint8_t*>(kv.summary) + s * sum_bytes;
  uint8_t* sd = static_cast<uint8_t*>(kv.summary) + d * sum_bytes;
  for (int64_t i = threadIdx.x; i < sum_bytes; i += blockDim.x) sd[i] = ss[i];
  if (kv.summary_kind == attn::SummaryKind::I8)
    for (int i = threadIdx.x; i < kv.n_kv_heads; i += blockDim.x)
      kv.summary_scale[static_cast<int64_t>(d) * kv.n_kv_heads + i] =
          kv.summary_scale[static_cast<int64_t>(s) * kv.n_kv_heads + i];
}

// One thread per (sequence, page-table entry): the summary row (every KV
// head) of each page a block top-k decode query will rank, and its int8
// scales, are prefetched into L2 (fire and forget: the kernel ends once the
// prefetches are issued). The pages are select_pages' candidates.
__global__ void prefetch_summaries_kernel(KvPool kv, const int32_t* q_start, const int32_t* ctx_len,
                                          const int32_t* table, const int32_t* seq_policy, int n_seqs,
                                          int max_pages, int kind, int local_pages, int topk_pages,
                                          bool evict_last, bool empty) {
  if (empty) return;
  const unsigned row_bytes =
      static_cast<unsigned>(kv.n_kv_heads * kv.head_dim * attn::summary_elem_bytes(kv.summary_kind));
  const uint64_t last = l2_evict_last();
  const int64_t n_items = static_cast<int64_t>(n_seqs) * max_pages;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n_items;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int s = static_cast<int>(idx / max_pages), i = static_cast<int>(idx % max_pages);
    if (q_start[s + 1] - q_start[s] != 1) continue;  // prefill rows are dense
    int k = kind, local = local_pages, topk = topk_pages;
    if (seq_policy) k = seq_policy[3 * s], local = seq_policy[3 * s + 1], topk = seq_policy[3 * s + 2];
    if (k != static_cast<int>(AttnKind::BlockTopK)) continue;
    const int end = max(1, (ctx_len[s] + kv.page_size - 1) / kv.page_size - local);
    if (end - 1 <= topk || i < 1 || i >= end) continue;  // no ranking, or not a candidate
    const int page = table[idx];
    if (page < 0 || page >= kv.n_pages) continue;
    const char* row = static_cast<const char*>(kv.summary) + static_cast<int64_t>(page) * row_bytes;
    const float* scales = kv.summary_scale ? kv.summary_scale + static_cast<int64_t>(page) * kv.n_kv_heads : nullptr;
    if (evict_last) {
      asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(row), "r"(row_bytes),
                   "l"(last)
                   : "memory");
      if (scales) asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(scales) : "memory");
    } else {
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(row), "r"(row_bytes) : "memory");
      if (scales) asm volatile("prefetch.global.L2 [%0];" ::"l"(scales) : "memory");
    }
  }
}

}  // namespace

void prefetch_summaries(const AttnArgs& a, int blocks, bool evict_last, bool empty, cudaStream_t st) {
  const KvPool& kv = a.kv;
  const int64_t row_bytes = static_cast<int64_t>(kv.n_kv_heads) * kv.head_dim * attn::summary_elem_bytes(kv.summary_kind);
  // Bulk prefetches take 16-byte multiples; other shapes are not worth a hint.
  if (blocks <= 0 || a.n_seqs == 0 || a.max_pages == 0 || row_bytes % 16 != 0 || kv.summary == nullptr) return;
  if (a.seq_policy == nullptr && a.kind != AttnKind::BlockTopK) return;
  prefetch_summaries_kernel<<<blocks, 256, 0, st>>>(kv, a.q_start, a.ctx_len, a.page_table, a.seq_policy, a.n_seqs,
                                                    a.max_pages, static_cast<int>(a.kind), a.local_pages,
                                                    a.topk_pages, evict_last, empty);
  check_launch("prefetch_summaries");
}

void kv_write(const KvPool& kv, const bf16_t* k, const bf16_t* v, const int32_t* slots, int n, cudaStream_t st) {
  KF_CHECK(kv.head_dim % 8 == 0, "kv_write: head_dim {} must be a multiple of 8", kv.head_dim);
  if (n == 0) return;
  kv_write_kernel<<<n, 128, 0, st>>>(kv, k, v, slots);
  check_launch("kv_write");
  kv_summaries(kv, slots, n, st);
}

void kv_summaries(const KvPool& kv, const int32_t* slots, int n, cudaStream_t st) {
  if (n == 0) return;
  KF_CHECK(kv.head_dim <= 256, "page summaries: head_dim {} > 256", kv.head_dim);
  kv_summary_kernel<<<n, 256, 0, st>>>(kv, slots);
  check_launch("kv_write summary");
}

void kv_copy_pages(const KvPool& kv, const int32_t* src, const int32_t* dst, int n, cudaStream_t st) {
  KF_CHECK(kv.head_dim % 8 == 0, "kv_copy_pages: head_dim {} must be a multiple of 8", kv.head_dim);
  if (n == 0) return;
  kv_copy_kernel<<<n, 256, 0, st>>>(kv, src, dst);
  check_launch("kv_copy_pages");
}

}  // namespace kf::cuda

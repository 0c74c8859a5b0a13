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
  const int page = completed_page(kv, slots[blockIdx.x]);
  if (page < 0) return;
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

}  // namespace

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

// Device helpers shared by the .cu files: bf16 vectors of 8 (16 bytes), warp
// reductions, and the launch-size helper.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <limits>

#include "attn/summary.h"
#include "backend/cuda/kernels.h"

namespace kf::cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float bf(bf16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
__device__ __forceinline__ bf16_t to_bf(float f) {
  bf16 b = __float2bfloat16_rn(f);
  return *reinterpret_cast<bf16_t*>(&b);
}

// SiLU as silu_mul and the gate|up GEMM's epilogue compute it (the same bits).
__device__ __forceinline__ float silu(float g) { return g / (1.f + __expf(-g)); }

// 8 bf16 in one 16-byte word -> 8 floats (exact: bf16 is the top half of f32).
__device__ __forceinline__ void unpack8(const uint4& u, float* f) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ uint4 pack8(const float* f) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __nv_bfloat162 p = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    w[i] = *reinterpret_cast<uint32_t*>(&p);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Streaming 16-byte load of data read once per step (the KV cache and its
// page summaries): kept out of L1, and first in line for eviction from L2 so
// that the stream does not push out what the step reuses (H200: steps 1-1.5%
// faster, docs/cuda.md). The policy asm is not volatile: it is hoisted.
__device__ __forceinline__ uint64_t l2_evict_first() {
  uint64_t policy;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  const uint64_t evict_first = l2_evict_first();
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p), "l"(evict_first));
  return r;
}

// Softmax in base 2 (attention.cu, prefill.cu): logits scaled by log2(e).
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
__device__ __forceinline__ float ex2(float x) {  // 2^x, -inf -> 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Order-preserving map float -> uint32 (larger float, larger key); NaN 0
// (lowest: no item), -0 == +0. order_key_float inverts it (for non-NaN keys).
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) return 0u;
  if (f == 0.f) f = 0.f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float order_key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// c[4] += A (16x16 bf16, row) * B (16x8 bf16, col), fp32 accumulate.
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf2(float lo, float hi) {
  __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&p);
}

// HF rotate_half on one pair (a = dim i, b = dim i + half) at angle (c, s) =
// (cos, sin): (a c - b s, b c + a s), each product and sum rounded on its own
// (no fused multiply-add), so every kernel that rotates (rope, both
// qkv_rope_write kernels) gives the same bits whatever the compiler contracts.
__device__ __forceinline__ void rope_rotate(float a, float b, float c, float s, float& lo, float& hi) {
  lo = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  hi = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

// The page that slot's key completes (its last slot), whose summary is then
// due; -1 for any other slot, or one outside the pool (written nowhere).
__device__ __forceinline__ int completed_page(const KvPool& kv, int slot) {
  const int P = kv.page_size;
  return slot >= 0 && slot < kv.n_pages * P && slot % P == P - 1 ? slot / P : -1;
}

// The summary of (page, KV head) `page_head` (page * n_kv_heads + head): the
// mean of the page's P keys per dim, summed in slot order, stored in the
// pool's summary kind (attn/summary.h; int8 also writes the vector's scale).
// Run by one whole warp (lane owns dims lane, lane + 32, ...; D <= 256).
// kv_write's summary kernel and the fused sparse attention kernel both write
// summaries here, so their bits agree.
__device__ __forceinline__ void write_page_summary(const KvPool& kv, int64_t page_head) {
  const int lane = threadIdx.x & 31, P = kv.page_size, D = kv.head_dim;
  const bf16_t* kb = kv.k + page_head * P * D;
  float mean[8], amax = 0.f;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int d = lane + 32 * i;
    mean[i] = 0.f;
    if (d >= D) continue;
    float sum = 0.f;
    for (int j = 0; j < P; ++j) sum += bf(kb[static_cast<int64_t>(j) * D + d]);
    mean[i] = sum / static_cast<float>(P);
    amax = fmaxf(amax, fabsf(mean[i]));
  }
  float scale = 1.f;
  if (kv.summary_kind == attn::SummaryKind::I8) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    scale = attn::i8_summary_scale(amax);
    if (lane == 0) kv.summary_scale[page_head] = scale;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int d = lane + 32 * i;
    if (d >= D) continue;
    const int64_t at = page_head * D + d;
    switch (kv.summary_kind) {
      case attn::SummaryKind::F32: static_cast<float*>(kv.summary)[at] = mean[i]; break;
      case attn::SummaryKind::BF16: static_cast<bf16_t*>(kv.summary)[at] = to_bf(mean[i]); break;
      case attn::SummaryKind::I8:
        static_cast<int8_t*>(kv.summary)[at] = attn::i8_encode(mean[i], scale);
        break;
    }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Programmatic dependent launch (Hopper): a kernel launched with launch_pdl
// may have its blocks scheduled while the kernel before it in the stream (or
// graph) drains, hiding the launch gap between the small kernels of a decode
// step. Such a kernel calls griddep_wait() before it reads or writes memory
// that earlier kernels touch: that waits for their completion and writes.
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the kernel after this one in the stream (or graph) launch now rather
// than when this one's blocks exit. Called right after griddep_wait() by the
// kernels a decode step's GEMMs follow (the norms, silu_mul, attention), so
// a CUTLASS GEMM (gemm_cutlass.h) is resident, its prologue done, by the time
// they end. Safe because every kernel launched with launch_pdl, and CUTLASS's,
// waits before it touches memory; the dependent's blocks take SM slots only
// once all of this kernel's blocks have started.
__device__ __forceinline__ void griddep_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// With smem_bytes of dynamic shared memory, which the kernel is first allowed
// (past the 48 KB default; set at each launch, so on every device it runs on).
template <typename... Params, typename... Args>
void launch_pdl_smem(const char* what, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
                     cudaStream_t st, Args... args) {
  if (smem_bytes > 0)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)),
          what);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem_bytes;
  cfg.stream = st;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...), what);
}
template <typename... Params, typename... Args>
void launch_pdl(const char* what, void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t st,
                Args... args) {
  launch_pdl_smem(what, kernel, grid, block, 0, st, args...);
}

// Shared-memory address of a generic pointer (for cp.async, ldmatrix).
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared, bypassing L1; src_bytes 0 writes zeros
// (nothing read). Groups: cp_async_commit closes one, cp_async_wait<N> waits
// until at most N of this thread's groups are pending.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// Bulk copies global -> shared by the copy engine (Hopper TMA, no tensor
// map: contiguous bytes, 16-byte aligned, sizes a multiple of 16),
// completing on an mbarrier: a thread issues a whole row in one instruction
// and goes on, instead of stalling on a queue of 16-byte cp.async (the fused
// MLP's weights, the sparse decode kernel's known pages).
__device__ __forceinline__ void mbar_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n\tfence.mbarrier_init.release.cluster;" ::"r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ void mbar_expect_bytes(uint64_t* bar, unsigned bytes) {  // the one arrival
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
// Waits until the barrier's phase of the given parity (0, 1, 0, ... for its
// first, second, third completion) is complete.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, unsigned parity = 0) {
  unsigned done = 0;
  do {
    asm volatile(
        "{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
}

// bulk_copy of KV-cache bytes, first in line for eviction from L2 (ld_stream).
__device__ __forceinline__ void bulk_copy_stream(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::
          "r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(l2_evict_first())
      : "memory");
}

inline unsigned blocks_for(int64_t n, int per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

}  // namespace kf::cuda

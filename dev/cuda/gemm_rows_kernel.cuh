// Version 3 of dev/cuda/gemm_rows.cu (an experiment, not in the library):
// y[n, m] = x[n, k] · w[m, k]ᵀ (+ bias) for a decode batch of n <= 64 rows,
// bf16 operands, fp32 accumulation, y bf16 or f32.
//
// Swap-AB mma.sync m16n8k16: the weight rows are the 16-row A side, the batch
// rows the 8-column B side. A lane reads 8 consecutive k (16 bytes) of a
// weight row and of a batch row; both operands use the same k order, so the
// two mma of a 32-k step sum over exactly those k. A block owns 16*MT*WM
// weight rows (MT 16-row tiles per warp, WM warps) and a slice of K; the
// batch rows of that slice are staged in shared memory once per block, while
// every warp streams its own weight rows straight into registers, one batch
// of steps ahead of the one it multiplies. When K is split over S blocks,
// the S blocks form a thread-block cluster: each pushes its partial sums to
// the block that owns them through distributed shared memory, and after one
// cluster barrier each block adds its S slots in rank order (fixed order:
// graph replay = direct launches, bit for bit; no global scratch, no atomics).
// Weights are read before griddep_wait (they are constant), so under
// programmatic dependent launch the weight stream may start while the
// previous kernel drains.
#pragma once
#include "backend/cuda/common.cuh"

#include <cooperative_groups.h>

namespace kf::cuda {

struct GemmRowsConfig {
  int mt = 1;      // 16-row weight tiles per warp (1 or 2)
  int wm = 8;      // warps per block, each on its own weight rows (4 or 8)
  int splits = 1;  // blocks (one cluster) splitting K: 1, 2, 4 or 8
};

constexpr int kGemmRowsMaxRows = 64;

inline int gemm_rows_nt(int n) { return n <= 8 ? 1 : n <= 16 ? 2 : n <= 32 ? 4 : 8; }
inline int gemm_rows_block_rows(const GemmRowsConfig& c) { return 16 * c.mt * c.wm; }
inline int gemm_rows_tiles(const GemmRowsConfig& c, int m) {
  return (m + gemm_rows_block_rows(c) - 1) / gemm_rows_block_rows(c);
}
// k per staged chunk of the batch rows, and the shared memory of a block:
// the chunk (rows padded by 64 bytes against bank conflicts), then the
// partial sums the cluster's blocks push to it (S shares of kAll / S).
// Per-block phase probes (sandbox only): a globaltimer stamp, then SM clocks.
constexpr int kGemmRowsProbes = 9;
__host__ __device__ constexpr int gemm_rows_chunk_k(int nt) { return nt <= 4 ? 512 : 256; }
// Staged row stride: padded so lanes g, g+1 read opposite halves of the banks.
__host__ __device__ constexpr int gemm_rows_row_bytes(int nt) { return 2 * gemm_rows_chunk_k(nt) + 64; }
inline size_t gemm_rows_smem(const GemmRowsConfig& c, int n) {
  const int nt = gemm_rows_nt(n);
  const size_t x_chunk = size_t(8 * nt) * gemm_rows_row_bytes(nt);
  const size_t sums = size_t(c.wm) * 32 * c.mt * nt * 4 * sizeof(float);
  return x_chunk + sums;
}

// Whether the kernel can run this shape with this configuration.
inline bool gemm_rows_valid(const GemmRowsConfig& c, int n, int m, int k) {
  if (n < 1 || n > kGemmRowsMaxRows || m < 1 || k < 32 || k % 32 != 0) return false;
  if ((c.mt != 1 && c.mt != 2) || (c.wm != 4 && c.wm != 8)) return false;
  if (c.splits != 1 && c.splits != 2 && c.splits != 4 && c.splits != 8) return false;
  return c.splits <= k / 32;
}

// A configuration for the shape on `sms` SMs: as many weight rows per block
// as keep about two blocks per SM, then K split until they do.
inline GemmRowsConfig gemm_rows_config(int n, int m, int k, int sms) {
  GemmRowsConfig c;
  c.mt = 1;
  c.wm = 8;
  int splits = 1;
  while (splits < 8 && gemm_rows_tiles(c, m) * splits < 2 * sms && k / 32 / (2 * splits) >= 4) splits *= 2;
  c.splits = splits;
  (void)n;
  return c;
}

template <int NT, int MT, int WM>
__global__ void __launch_bounds__(WM * 32)
    gemm_rows_kernel(const bf16_t* __restrict__ x, const bf16_t* __restrict__ w, const bf16_t* __restrict__ bias,
                     void* __restrict__ y, bool y_f32, int n, int m, int k, int steps_per_split,
                     unsigned long long* __restrict__ probes) {
  constexpr int kVals = MT * NT * 4;          // accumulators per lane
  constexpr int U = MT == 1 ? 4 : 2;          // 32-k steps per batch of weight loads
  constexpr int BK = 32 * U;                  // k per batch; lane c reads k [32u + 8c, 32u + 8c + 8) of step u
  constexpr int KC = gemm_rows_chunk_k(NT);   // k per staged chunk of the batch rows
  constexpr int kRowBytes = gemm_rows_row_bytes(NT);
  constexpr int kPieces = 8 * NT * (KC / 8);  // 16-byte pieces of a full chunk
  constexpr int kPiecesPerThread = kPieces / (WM * 32);
  constexpr int kThreads = WM * 32;
  static_assert(KC % BK == 0, "a batch never straddles two chunks");
  static_assert(kPieces % (WM * 32) == 0, "whole pieces per thread");
  extern __shared__ __align__(16) unsigned char smem[];
  float* recv = reinterpret_cast<float*>(smem + 8 * NT * kRowBytes);  // [S][kAll / S] pushed partials
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  // probes (sandbox only, else null): per block [globaltimer at entry, then SM
  // clocks since entry at each phase boundary], kGemmRowsProbes slots.
  unsigned long long t_entry = 0;
  auto stamp = [&](int i) {
    if (probes == nullptr || threadIdx.x != 0) return;
    const int64_t blk = blockIdx.y * gridDim.x + blockIdx.x;
    if (i == 0) {
      unsigned long long gt;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(gt));
      probes[blk * kGemmRowsProbes] = gt;
      t_entry = clock64();
    } else {
      probes[blk * kGemmRowsProbes + i] = clock64() - t_entry;
    }
  };
  stamp(0);
  // Tell the cluster this block runs (its shared memory may be written once
  // every block has arrived; the matching wait comes before the first push).
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int m0 = blockIdx.x * 16 * MT * WM + warp * 16 * MT;  // this warp's first weight row
  const int k_begin = 32 * blockIdx.y * steps_per_split;
  const int k_end = min(k, k_begin + 32 * steps_per_split);  // multiples of 32

  const bf16_t* wrow[MT][2];  // this lane's weight rows, at its 8-k offset of the split
  bool wok[MT][2];
#pragma unroll
  for (int t = 0; t < MT; ++t)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + 16 * t + g + 8 * h;
      wok[t][h] = row < m;
      wrow[t][h] = w + static_cast<int64_t>(wok[t][h] ? row : 0) * k + k_begin + 8 * c;
    }
  float acc[MT][NT][4];
#pragma unroll
  for (int a = 0; a < MT; ++a)
#pragma unroll
    for (int b = 0; b < NT; ++b)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[a][b][r] = 0.f;

  const uint4 zero = make_uint4(0, 0, 0, 0);
  // Step u of batch kb (k offset from k_begin) is valid when inside the split.
  auto step_ok = [&](int kb, int u) { return k_begin + kb + 32 * u < k_end; };
  uint4 wa[U][MT][2], wb[U][MT][2];
  auto load_w = [&](uint4 (&wv)[U][MT][2], int kb) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int t = 0; t < MT; ++t)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          wv[u][t][h] = (step_ok(kb, u) && wok[t][h]) ? ld_stream(wrow[t][h] + kb + 32 * u) : zero;
  };
  // Stages the batch rows' chunk holding batch kb (when kb starts a chunk):
  // every load first, then every store, so the chunk costs one round trip.
  auto stage_x = [&](int kb) {
    if (k_begin + kb >= k_end || kb % KC != 0) return;
    __syncthreads();  // every warp is done with the previous chunk
    const int k0 = k_begin + kb, per_row = min(KC, k_end - k0) / 8;
    uint4 piece[kPiecesPerThread];
#pragma unroll
    for (int i = 0; i < kPiecesPerThread; ++i) {
      const int p = static_cast<int>(threadIdx.x) + i * kThreads, row = p / (KC / 8), col = p % (KC / 8);
      piece[i] = row < n && col < per_row ? *reinterpret_cast<const uint4*>(x + static_cast<int64_t>(row) * k + k0 + 8 * col)
                                          : zero;
    }
#pragma unroll
    for (int i = 0; i < kPiecesPerThread; ++i) {
      const int p = static_cast<int>(threadIdx.x) + i * kThreads, row = p / (KC / 8), col = p % (KC / 8);
      *reinterpret_cast<uint4*>(smem + row * kRowBytes + 16 * col) = piece[i];
    }
    __syncthreads();
  };
  auto multiply = [&](const uint4 (&wv)[U][MT][2], int kb) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (!step_ok(kb, u)) break;
      const int kc = kb % KC + 32 * u + 8 * c;  // k within the staged chunk
      uint4 xv[NT];
#pragma unroll
      for (int b = 0; b < NT; ++b) xv[b] = *reinterpret_cast<const uint4*>(smem + (8 * b + g) * kRowBytes + 2 * kc);
#pragma unroll
      for (int a = 0; a < MT; ++a) {
        const uint32_t lo[4] = {wv[u][a][0].x, wv[u][a][1].x, wv[u][a][0].y, wv[u][a][1].y};
        const uint32_t hi[4] = {wv[u][a][0].z, wv[u][a][1].z, wv[u][a][0].w, wv[u][a][1].w};
#pragma unroll
        for (int b = 0; b < NT; ++b) {
          mma16816(acc[a][b], lo, xv[b].x, xv[b].y);
          mma16816(acc[a][b], hi, xv[b].z, xv[b].w);
        }
      }
    }
  };

  const int span = k_end - k_begin;
  load_w(wa, 0);  // weights are constant: start streaming before the previous kernel's writes land
  stamp(1);
  griddep_wait();
  stamp(2);
  for (int kb = 0; kb < span; kb += 2 * BK) {
    load_w(wb, kb + BK);
    stage_x(kb);
    if (kb == 0) stamp(3);
    multiply(wa, kb);
    if (kb == 0) stamp(4);
    if (kb + BK >= span) break;
    load_w(wa, kb + 2 * BK);
    stage_x(kb + BK);
    multiply(wb, kb + BK);
  }
  stamp(5);

  // Each thread's kVals sums go, as float4s, to the block of the cluster that
  // owns them (rank = thread * kVals / share), into that block's slot for
  // this block's rank; after the barrier each block adds its S slots in
  // rank order. Pushing (not pulling) means no block reads another's shared
  // memory after the barrier, so blocks leave without a second one.
  const int S = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  constexpr int kAll = kThreads * kVals;
  const int share = kAll / S;  // a power of two dividing kAll; whole threads' values
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");  // every block of the cluster runs
  stamp(6);
  {
    const int first = static_cast<int>(threadIdx.x) * kVals;
    const int owner = first / share;
    float* dst = cluster.map_shared_rank(recv, owner) + rank * share + first % share;
#pragma unroll
    for (int a = 0; a < MT; ++a)
#pragma unroll
      for (int b = 0; b < NT; ++b)
        reinterpret_cast<float4*>(dst)[a * NT + b] = make_float4(acc[a][b][0], acc[a][b][1], acc[a][b][2], acc[a][b][3]);
  }
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  stamp(7);
  for (int i4 = static_cast<int>(threadIdx.x); i4 < share / 4; i4 += kThreads) {
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int q = 0; q < S; ++q) {
      const float4 v = reinterpret_cast<const float4*>(recv + q * share)[i4];
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    // Value rank * share + 4 * i4 is value (a * NT + b) * 4 of thread t: the
    // mma's C fragment of lane t % 32 of warp t / 32: weight rows
    // m0 + 16a + g (r 0, 1) and + 8 (r 2, 3), batch rows 8b + 2c (+ 1 for r 1, 3).
    const int idx = rank * share + 4 * i4, t = idx / kVals, ab = (idx % kVals) / 4;
    const int a = ab / NT, b = ab % NT, ln = t % 32;
    const int col = blockIdx.x * 16 * MT * WM + (t / 32) * 16 * MT + 16 * a + (ln >> 2);
    const int row = 8 * b + 2 * (ln & 3);
    const float v4[4] = {sum.x, sum.y, sum.z, sum.w};
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int cc = col + (r >= 2 ? 8 : 0), rr = row + (r & 1);
      if (cc >= m || rr >= n) continue;
      const float v = v4[r] + (bias ? bf(bias[cc]) : 0.f);
      const int64_t o = static_cast<int64_t>(rr) * m + cc;
      if (y_f32)
        static_cast<float*>(y)[o] = v;
      else
        static_cast<bf16_t*>(y)[o] = to_bf(v);
    }
  }
  stamp(8);
}

template <int NT, int MT, int WM>
cudaError_t gemm_rows_launch(const GemmRowsConfig& cfg, const bf16_t* x, const bf16_t* w, const bf16_t* bias,
                             void* y, bool y_f32, int n, int m, int k, cudaStream_t st,
                             unsigned long long* probes) {
  const int steps = k / 32;
  const int per_split = (steps + cfg.splits - 1) / cfg.splits;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = 1;
  attr[1].val.clusterDim.y = static_cast<unsigned>(cfg.splits);
  attr[1].val.clusterDim.z = 1;
  cudaLaunchConfig_t lc{};
  lc.gridDim = dim3(static_cast<unsigned>(gemm_rows_tiles(cfg, m)), static_cast<unsigned>(cfg.splits));
  lc.blockDim = dim3(WM * 32);
  lc.dynamicSmemBytes = gemm_rows_smem(cfg, n);
  cudaError_t e = cudaFuncSetAttribute(gemm_rows_kernel<NT, MT, WM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(lc.dynamicSmemBytes));
  if (e != cudaSuccess) return e;
  lc.stream = st;
  lc.attrs = attr;
  lc.numAttrs = 2;
  return cudaLaunchKernelEx(&lc, gemm_rows_kernel<NT, MT, WM>, x, w, bias, y, y_f32, n, m, k, per_split,
                            probes);
}

template <int NT, int MT>
cudaError_t gemm_rows_wm(const GemmRowsConfig& c, const bf16_t* x, const bf16_t* w, const bf16_t* bias, void* y,
                         bool y_f32, int n, int m, int k, cudaStream_t st, unsigned long long* probes) {
  return c.wm == 4 ? gemm_rows_launch<NT, MT, 4>(c, x, w, bias, y, y_f32, n, m, k, st, probes)
                   : gemm_rows_launch<NT, MT, 8>(c, x, w, bias, y, y_f32, n, m, k, st, probes);
}

template <int NT>
cudaError_t gemm_rows_mt(const GemmRowsConfig& c, const bf16_t* x, const bf16_t* w, const bf16_t* bias, void* y,
                         bool y_f32, int n, int m, int k, cudaStream_t st, unsigned long long* probes) {
  return c.mt == 1 ? gemm_rows_wm<NT, 1>(c, x, w, bias, y, y_f32, n, m, k, st, probes)
                   : gemm_rows_wm<NT, 2>(c, x, w, bias, y, y_f32, n, m, k, st, probes);
}

// Launches the kernel; the caller checked gemm_rows_valid.
inline cudaError_t gemm_rows(const GemmRowsConfig& c, const bf16_t* x, const bf16_t* w, const bf16_t* bias,
                             void* y, bool y_f32, int n, int m, int k, cudaStream_t st,
                             unsigned long long* probes = nullptr) {
  switch (gemm_rows_nt(n)) {
    case 1: return gemm_rows_mt<1>(c, x, w, bias, y, y_f32, n, m, k, st, probes);
    case 2: return gemm_rows_mt<2>(c, x, w, bias, y, y_f32, n, m, k, st, probes);
    case 4: return gemm_rows_mt<4>(c, x, w, bias, y, y_f32, n, m, k, st, probes);
    default: return gemm_rows_mt<8>(c, x, w, bias, y, y_f32, n, m, k, st, probes);
  }
}

}  // namespace kf::cuda

// The MLP block of a decode step in one launch (Backend::mlp, opt-in:
// KINFER_MLP_FUSED=1; measured no faster than the separate ops in a step, see
// docs/cuda.md "A fused decode MLP"):
//   ffn = silu(x·Wgᵀ) * (x·Wuᵀ)   [n, I]    x [n, d], Wg | Wu = w_gate_up [2I, d]
//   out = ffn·Wdᵀ                  [n, d]    Wd = w_down [d, I]
// for a decode batch (n <= 64) of a model whose MLP weights fit in the SMs'
// shared memory (Qwen3-0.6B: 18.9 MB over 128 SMs). One block per SM:
//   1. its weight stripes (gate|up rows, a K slice of down rows) go to shared
//      memory by bulk copies before griddep_wait, so under programmatic
//      dependent launch they stream while the previous kernel drains;
//   2. phase A: gate|up for its units of 4 intermediate columns (gate and up
//      rows interleaved, so a lane holds both), silu * up in registers, ffn
//      rows to global memory;
//   3. a grid-wide barrier (every block is resident: cooperative launch);
//   4. phase B: its K slice of ffn (bk slices, so a block reads 1/bk of it,
//      not all) times its down stripe -> fp32 partial sums; a second barrier;
//   5. out = the bk partial sums added in slice order.
// Tensor cores: mma.sync m16n8k16, the batch rows as the 16-row A side and 8
// weight rows as the B side. A lane reads 8 consecutive k (16 bytes) of each
// row it needs; both operands permute k the same way, so two mma of a 32-k
// step sum over exactly those 32 k. Every sum has a fixed order, so a launch
// is deterministic and graph replays equal direct launches bit for bit.
// Roundings are the separate kernels': gate and up are rounded to bf16
// before silu(gate) * up, ffn is bf16, out is bf16.
#include <algorithm>
#include <string>

#include "backend/cuda/common.cuh"

namespace kf::cuda {

namespace {

constexpr int kMlpWarps = 8;
constexpr int kMlpThreads = 32 * kMlpWarps;
constexpr int kMlpMaxUnitsA = 8;  // gate|up units (4 intermediate columns) per block

// Shared-memory row stride of a row of k bf16 values: a multiple of 128 bytes
// plus 64, so lanes g and g+1 read opposite halves of the banks.
__host__ __device__ constexpr int mlp_row_bytes(int k) { return (2 * k + 127) / 128 * 128 + 64; }

struct MlpParams {
  const bf16_t* x;          // [n, d]
  const bf16_t* w_gate_up;  // [2I, d]
  const bf16_t* w_down;     // [d, I]
  bf16_t* ffn;              // [n, I]
  bf16_t* out;              // [n, d] (may alias x)
  float* partial;           // [bk, n, d] phase B's partial sums
  unsigned* barrier;        // grid_barrier's counter (starts at 0)
  int n, d, inter;
  int ua;        // gate|up units per block
  int bk, ubw;   // phase B: K slices; units of 8 output columns per block
  int wm;        // warp groups over the m-tiles (1 or 2); 8 / wm warps split K
  int region_a;  // bytes of shared memory before the down stripe
};

// Phase probes (dev builds with -DKINFER_MLP_PHASES, dev/cuda/mlp_bench.cpp):
// thread 0 of each block stamps the global timer at entry and the SM clock
// since entry at each MLP_STAMP(i). Compiled out otherwise.
#ifdef KINFER_MLP_PHASES
constexpr int kMlpStamps = 12, kMlpStampBlocks = 256;
__device__ long long g_mlp_stamps[kMlpStampBlocks][kMlpStamps + 1];  // [0] globaltimer, [1..] clocks
__device__ __forceinline__ long long& mlp_entry_clock() {  // thread 0's clock at entry, one per block
  __shared__ long long t;
  return t;
}
#define MLP_STAMP(i)                                                       \
  do {                                                                     \
    if (threadIdx.x == 0 && blockIdx.x < kMlpStampBlocks) {                \
      if ((i) == 0) {                                                      \
        unsigned long long t_;                                             \
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_));             \
        g_mlp_stamps[blockIdx.x][0] = static_cast<long long>(t_);          \
        mlp_entry_clock() = clock64();                                     \
      } else {                                                             \
        g_mlp_stamps[blockIdx.x][i] = clock64() - mlp_entry_clock();       \
      }                                                                    \
    }                                                                      \
  } while (0)
#else
#define MLP_STAMP(i) \
  do {               \
  } while (0)
#endif

// Every block of the grid arrives before any goes on. Block 0 adds
// 2^31 - (G - 1), the others 1 each: the counter's top bit flips exactly when
// the last block arrives and its low bits end where they started (0), so
// launches of any grid size share one counter with no reset. `seen` (thread
// 0's) is a counter value read before this barrier's flip: the one read after
// griddep_wait for the first barrier, then the one each barrier ends with.
// Arrival is a fire-and-forget reduction; polling is relaxed (an acquire
// load would invalidate L1 on every poll) with a fence after it.
__device__ __forceinline__ void grid_barrier(unsigned* counter, unsigned& seen) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned inc = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
    __threadfence();  // this block's writes (ordered before by __syncthreads) go first
    asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(counter), "r"(inc) : "memory");
    unsigned now = 0;
    while (true) {
      asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(counter) : "memory");
      if ((seen ^ now) & 0x80000000u) break;
      __nanosleep(32);
    }
    seen = now;
    __threadfence();
  }
  __syncthreads();
}

// acc[j][t] += rows (m-tile t of this warp) · weight rows (unit j) over the
// 32-k steps s = first, first + stride, ... < k / 32. A rows come from global
// memory, weight rows from shared memory once w_ready completes. Steps are
// loaded in groups of kAhead so their loads are all in flight at once. No
// branches around the mma (they made the compiler shuffle accumulators):
// steps past the end multiply zero rows, units past `units` repeat the last
// one (their sums are never stored).
template <int MTW, int UMAX>
__device__ __forceinline__ void mlp_multiply(float (&acc)[UMAX][MTW][4], const bf16_t* rows, int n, int k,
                                             int row0, const unsigned char* w_smem, int units, int first,
                                             int stride, uint64_t* w_ready) {
  constexpr int kAhead = 4 / MTW;
  const int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int steps = k / 32, row_bytes = mlp_row_bytes(k);
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int s0 = first; s0 < steps; s0 += kAhead * stride) {
    uint4 a[kAhead][MTW][2];
#pragma unroll
    for (int i = 0; i < kAhead; ++i)
#pragma unroll
      for (int t = 0; t < MTW; ++t)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int s = s0 + i * stride, r = row0 + 16 * t + g + 8 * h;
          const bf16_t* p = rows + static_cast<int64_t>(r) * k + 32 * s + 8 * c;
          a[i][t][h] = (s < steps && r < n) ? *reinterpret_cast<const uint4*>(p) : zero;
        }
    if (s0 == first) {
      mbar_wait(w_ready);  // the weight rows, while the first rows' loads fly
      MLP_STAMP(3);
#ifdef KINFER_MLP_PHASES
      if (a[0][0][0].x == 0x12345678u) acc[0][0][0] += 1.f;  // waits for the first load
      MLP_STAMP(4);
#endif
    }
#pragma unroll
    for (int i = 0; i < kAhead; ++i) {
      const int s = s0 + i * stride;
      const int sc = min(s, steps - 1);
#pragma unroll
      for (int j = 0; j < UMAX; ++j) {
        const int jc = min(j, units - 1);
        const uint4 b = *reinterpret_cast<const uint4*>(w_smem + (8 * jc + g) * row_bytes + 2 * (32 * sc + 8 * c));
#pragma unroll
        for (int t = 0; t < MTW; ++t) {
          const uint32_t lo[4] = {a[i][t][0].x, a[i][t][1].x, a[i][t][0].y, a[i][t][1].y};
          const uint32_t hi[4] = {a[i][t][0].z, a[i][t][1].z, a[i][t][0].w, a[i][t][1].w};
          mma16816(acc[j][t], lo, b.x, b.y);
          mma16816(acc[j][t], hi, b.z, b.w);
        }
      }
    }
  }
}

// Sums the warps' acc over K in shared memory (warp order: deterministic) and
// calls emit(unit j, m-tile of the block, lane, sum float4) for each fragment.
template <int MTW, int UMAX, typename Emit>
__device__ __forceinline__ void mlp_reduce(const float (&acc)[UMAX][MTW][4], int units, int wm,
                                           unsigned char* scratch, Emit emit) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float4* part = reinterpret_cast<float4*>(scratch);  // [warp][unit][m-tile of warp][lane]
  __syncthreads();                                     // the weights in `scratch` are no longer read
#pragma unroll
  for (int j = 0; j < UMAX; ++j) {
    if (j >= units) continue;
#pragma unroll
    for (int t = 0; t < MTW; ++t)
      part[((warp * units + j) * MTW + t) * 32 + lane] =
          make_float4(acc[j][t][0], acc[j][t][1], acc[j][t][2], acc[j][t][3]);
  }
  __syncthreads();
  const int wk = kMlpWarps / wm;  // warps summing over K for one warp group
  const int items = wm * units * MTW * 32;
  for (int it = threadIdx.x; it < items; it += kMlpThreads) {
    const int ln = it % 32, t = (it / 32) % MTW, j = (it / 32 / MTW) % units, grp = it / 32 / MTW / units;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int w = grp * wk; w < (grp + 1) * wk; ++w) {
      const float4 v = part[((w * units + j) * MTW + t) * 32 + ln];
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    emit(j, grp * MTW + t, ln, sum);
  }
}

__device__ __forceinline__ float silu_f(float g) { return g / (1.f + __expf(-g)); }
__device__ __forceinline__ float round_bf(float v) { return bf(to_bf(v)); }

template <int MTW, int MTB>  // MTB: 16-row m-tiles of phase B (all of them, per warp)
__global__ void __launch_bounds__(kMlpThreads, 1) mlp_decode_kernel(MlpParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLP_STAMP(0);
  // Region A: the gate|up stripes [ua][8 rows][row_bytes(d)] (gate, up
  // interleaved), then phase A's partial sums, then the ffn slice of phase B
  // [16 * m-tiles][row_bytes(ks)]. After it, the down stripe [ubw * 8 rows][row_bytes(ks)].
  unsigned char* wa = smem;
  unsigned char* wb = smem + p.region_a;
  const int G = gridDim.x, b = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int units_a = p.inter / 4;
  const int ua = min(p.ua, (units_a - b + G - 1) / G);
  // Phase B: block b sums K slice kg (ks columns of ffn) into its column
  // group (ubw units of 8 output columns); the bk slices meet in `partial`.
  const int kg = b % p.bk, col0 = (b / p.bk) * p.ubw * 8, ks = p.inter / p.bk, k0 = kg * ks;
  const int rows_b = mlp_row_bytes(ks);

  // 1. The weight stripes -> shared memory by bulk copies (constant data:
  // before griddep_wait, so they stream while the previous kernel drains).
  // Unit j of phase A is unit b + j*G: row 2q of it gate column 4u + q, row
  // 2q + 1 up column 4u + q. The down stripe: ubw * 8 rows of ks values.
  __shared__ uint64_t bars[2];  // gate|up stripes, down stripe
  const int rows_a = mlp_row_bytes(p.d);
  if (threadIdx.x == 0) {
    mbar_init(&bars[0]);
    mbar_init(&bars[1]);
    mbar_expect_bytes(&bars[0], static_cast<unsigned>(ua * 8 * p.d * 2));
    mbar_expect_bytes(&bars[1], static_cast<unsigned>(p.ubw * 8 * ks * 2));
  }
  __syncthreads();
  for (int r = threadIdx.x; r < ua * 8; r += kMlpThreads) {
    const int col = 4 * (b + (r / 8) * G) + (r % 8) / 2;
    bulk_copy(wa + r * rows_a, p.w_gate_up + (static_cast<int64_t>(r % 2) * p.inter + col) * p.d, p.d * 2, &bars[0]);
  }
  for (int r = threadIdx.x; r < p.ubw * 8; r += kMlpThreads)
    bulk_copy(wb + r * rows_b, p.w_down + static_cast<int64_t>(col0 + r) * p.inter + k0, ks * 2, &bars[1]);
  MLP_STAMP(1);
  griddep_wait();
  unsigned seen = 0;  // the barrier counter before this launch's first barrier (thread 0)
  if (threadIdx.x == 0) asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(p.barrier) : "memory");
  MLP_STAMP(2);
  const int wk = kMlpWarps / p.wm, grp = warp / wk, first = warp % wk, row0 = grp * 16 * MTW;

  // 2. Phase A: gate|up, silu * up -> ffn.
  {
    float acc[kMlpMaxUnitsA][MTW][4] = {};
    if (ua > 0) mlp_multiply<MTW, kMlpMaxUnitsA>(acc, p.x, p.n, p.d, row0, wa, ua, first, wk, &bars[0]);
    MLP_STAMP(5);
    mlp_reduce<MTW, kMlpMaxUnitsA>(acc, max(ua, 0), p.wm, wa, [&](int j, int t, int ln, float4 v) {
      // Fragment: (row g, gate), (row g, up), (row g + 8, gate), (row g + 8, up) of column 4u + c.
      const int col = 4 * (b + j * G) + (ln & 3), r = 16 * t + (ln >> 2);
      if (r < p.n) p.ffn[static_cast<int64_t>(r) * p.inter + col] = to_bf(silu_f(round_bf(v.x)) * round_bf(v.y));
      if (r + 8 < p.n)
        p.ffn[static_cast<int64_t>(r + 8) * p.inter + col] = to_bf(silu_f(round_bf(v.z)) * round_bf(v.w));
    });
  }
  MLP_STAMP(6);
  grid_barrier(p.barrier, seen);
  MLP_STAMP(7);

  // 3. Phase B: this block's K slice of ffn (every block wrote some of it:
  // cp.async.cg reads L2) times its down stripe -> fp32 partial sums.
  {
    const int chunks = ks / 8;
    for (int r = warp; r < p.n; r += kMlpWarps)
      for (int q = lane; q < chunks; q += 32)
        cp_async16(wa + r * rows_b + 16 * q, p.ffn + static_cast<int64_t>(r) * p.inter + k0 + 8 * q);
    cp_async_commit();
    cp_async_wait<0>();
    mbar_wait(&bars[1]);  // the down stripe
    __syncthreads();
    MLP_STAMP(8);
    // Warp w owns units w and w + 8 of the column group and every m-tile;
    // rows past n hold stale data and are not stored.
    float acc[2][MTB][4] = {};
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int unit = min(warp + kMlpWarps * j, p.ubw - 1);  // a repeat is never stored
      for (int s = 0; s < ks / 32; ++s) {
        const int kb = 2 * (32 * s + 8 * c);
        const uint4 w = *reinterpret_cast<const uint4*>(wb + (8 * unit + g) * rows_b + kb);
#pragma unroll
        for (int t = 0; t < MTB; ++t) {
          const uint4 a0 = *reinterpret_cast<const uint4*>(wa + (16 * t + g) * rows_b + kb);
          const uint4 a1 = *reinterpret_cast<const uint4*>(wa + (16 * t + g + 8) * rows_b + kb);
          const uint32_t lo[4] = {a0.x, a1.x, a0.y, a1.y}, hi[4] = {a0.z, a1.z, a0.w, a1.w};
          mma16816(acc[j][t], lo, w.x, w.y);
          mma16816(acc[j][t], hi, w.z, w.w);
        }
      }
    }
    MLP_STAMP(9);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int unit = warp + kMlpWarps * j;
      if (unit >= p.ubw) continue;
#pragma unroll
      for (int t = 0; t < MTB; ++t) {
        const int r = 16 * t + g, col = col0 + 8 * unit + 2 * c;
        float* dst = p.partial + (static_cast<int64_t>(kg) * p.n + r) * p.d + col;
        if (r < p.n) *reinterpret_cast<float2*>(dst) = make_float2(acc[j][t][0], acc[j][t][1]);
        if (r + 8 < p.n)
          *reinterpret_cast<float2*>(dst + 8 * p.d) = make_float2(acc[j][t][2], acc[j][t][3]);
      }
    }
  }
  grid_barrier(p.barrier, seen);
  MLP_STAMP(10);

  // 4. out = the sum of the bk partial sums, slice order (deterministic).
  const int total4 = p.n * p.d / 4;
  for (int e = b * kMlpThreads + threadIdx.x; e < total4; e += G * kMlpThreads) {
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int k = 0; k < p.bk; ++k) {
      const float4 v = __ldcg(reinterpret_cast<const float4*>(p.partial) + static_cast<int64_t>(k) * total4 + e);
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    __nv_bfloat162 lo = __floats2bfloat162_rn(sum.x, sum.y), hi = __floats2bfloat162_rn(sum.z, sum.w);
    uint2 packed;
    packed.x = *reinterpret_cast<uint32_t*>(&lo);
    packed.y = *reinterpret_cast<uint32_t*>(&hi);
    reinterpret_cast<uint2*>(p.out)[e] = packed;
  }
  MLP_STAMP(11);
}

}  // namespace

#ifdef KINFER_MLP_PHASES
std::string mlp_phases_report(int grid) {
  static long long h[kMlpStampBlocks][kMlpStamps + 1];
  if (cudaMemcpyFromSymbol(h, g_mlp_stamps, sizeof h) != cudaSuccess) return "no stamps";
  int khz = 0;
  cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, 0);
  const int blocks = std::min(grid, kMlpStampBlocks);
  long long t0 = h[0][0], t1 = h[0][0];
  double mean[kMlpStamps] = {}, worst[kMlpStamps] = {};
  for (int b = 0; b < blocks; ++b) {
    t0 = std::min(t0, h[b][0]);
    t1 = std::max(t1, h[b][0]);
    for (int i = 1; i < kMlpStamps; ++i) {
      const double us = h[b][i] * 1e3 / khz;
      mean[i] += us / blocks;
      worst[i] = std::max(worst[i], us);
    }
  }
  const char* names[kMlpStamps] = {"",
                                   "bulk copies issued",
                                   "griddep_wait",
                                   "gate|up in smem",
                                   "first x rows in",
                                   "phase A mma",
                                   "ffn written",
                                   "grid barrier",
                                   "ffn slice + down in smem",
                                   "phase B mma",
                                   "partials + barrier",
                                   "out written"};
  std::string r = "entry spread " + std::to_string((t1 - t0) / 1e3) + " us; us since entry (mean / max):";
  for (int i = 1; i < kMlpStamps; ++i)
    r += std::string("\n  ") + names[i] + ": " + std::to_string(mean[i]) + " / " + std::to_string(worst[i]);
  return r;
}
#endif

MlpPlan mlp_decode_plan(int n, int d, int inter, int num_sms, int max_smem) {
  MlpPlan plan;
  if (n < 1 || n > kMlpMaxRows || d < 64 || inter < 64 || d % 64 != 0 || inter % 64 != 0 || num_sms < 1)
    return plan;
  const int units_a = inter / 4, units_b = d / 8;
  const int ua = (units_a + num_sms - 1) / num_sms;
  if (ua > kMlpMaxUnitsA) return plan;
  const int grid = (units_a + ua - 1) / ua;  // as few blocks as keep ua units per block
  // Phase B: bk K slices x grid / bk column groups. More slices read less of
  // ffn per block (each block reads n x inter / bk) but write more partial
  // sums (bk x n x d); the largest bk that divides everything, at most 16.
  int bk = 0;
  for (int cand : {16, 8, 4, 2, 1}) {
    const int groups = grid / cand;
    if (grid % cand == 0 && units_b % groups == 0 && units_b / groups <= 2 * kMlpWarps && inter % (32 * cand) == 0) {
      bk = cand;
      break;
    }
  }
  if (bk == 0) return plan;
  const int ubw = units_b / (grid / bk), ks = inter / bk;
  const int m_tiles = (n + 15) / 16, mtw = m_tiles == 1 ? 1 : 2, wm = (m_tiles + mtw - 1) / mtw;
  // Region A: the gate|up stripes, then phase A's partial sums, then phase B's ffn slice.
  const int64_t weights_a = int64_t(ua) * 8 * mlp_row_bytes(d);
  const int64_t partial = int64_t(kMlpWarps) * ua * mtw * 32 * 16;
  const int mtb = m_tiles <= 2 ? m_tiles : 4;
  const int64_t slice = int64_t(16) * mtb * mlp_row_bytes(ks);
  const int64_t region_a = (std::max({weights_a, partial, slice}) + 127) / 128 * 128;
  const int64_t smem = region_a + int64_t(ubw) * 8 * mlp_row_bytes(ks);
  if (smem > max_smem) return plan;
  plan.grid = grid;
  plan.ua = ua;
  plan.bk = bk;
  plan.ubw = ubw;
  plan.mtw = mtw;
  plan.mtb = mtb;
  plan.wm = wm;
  plan.region_a = static_cast<int>(region_a);
  plan.smem = static_cast<int>(smem);
  return plan;
}

int64_t mlp_partial_floats(const MlpPlan& plan, int n, int d) { return int64_t(plan.bk) * n * d; }

cudaError_t mlp_decode(const MlpPlan& plan, const bf16_t* x, const bf16_t* w_gate_up, const bf16_t* w_down,
                       bf16_t* ffn, float* partial, bf16_t* out, unsigned* barrier, int n, int d, int inter,
                       bool pdl, cudaStream_t st) {
  MlpParams p{x,     w_gate_up, w_down,  ffn,    out,     partial,  barrier,
              n,     d,         inter,   plan.ua, plan.bk, plan.ubw, plan.wm,
              plan.region_a};
  // The plan's (mtw, mtb) is (1, 1), (2, 2) or (2, 4).
  auto kernel = plan.mtw == 1   ? mlp_decode_kernel<1, 1>
                : plan.mtb == 2 ? mlp_decode_kernel<2, 2>
                                : mlp_decode_kernel<2, 4>;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.smem);
  if (e != cudaSuccess) return e;
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeCooperative;  // every block resident: the grid barrier needs it
  attr[0].val.cooperative = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(plan.grid));
  cfg.blockDim = dim3(kMlpThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(plan.smem);
  cfg.stream = st;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 2 : 1;
  return cudaLaunchKernelEx(&cfg, kernel, p);
}

}  // namespace kf::cuda

// Elementwise and row-wise ops of the CUDA backend: embed, rmsnorm, add,
// silu_mul, rope, and a random fill for tests and benchmarks. bf16 storage,
// fp32 arithmetic, one rounding per output element.
#include <cstring>

#include "backend/cuda/common.cuh"
#include "util/error.h"

namespace kf::cuda {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA error in {}: {} ({})", what, cudaGetErrorString(e), static_cast<int>(e));
}

void check_launch(const char* what) { check(cudaGetLastError(), what); }

namespace {

// out[i, :] = table[ids[i], :]; one block per row, 16-byte copies when d % 8 == 0.
// An id outside [0, table_rows) (which the host never sends) gives a zero
// row rather than a read outside the table.
__global__ void embed_kernel(const bf16_t* table, int64_t table_rows, const int32_t* ids, bf16_t* out, int d,
                             bool vec) {
  const int64_t row = ids[blockIdx.x];
  bf16_t* dst = out + static_cast<int64_t>(blockIdx.x) * d;
  if (row < 0 || row >= table_rows) {
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = 0;
    return;
  }
  const bf16_t* src = table + row * d;
  if (vec) {
    for (int i = threadIdx.x; i < d / 8; i += blockDim.x)
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
  } else {
    for (int i = threadIdx.x; i < d; i += blockDim.x) dst[i] = src[i];
  }
}

// Eight values x * inv * w (the norm's output), packed.
__device__ __forceinline__ uint4 norm_chunk(uint4 x, uint4 w, float inv) {
  float f[8], g[8];
  unpack8(x, f);
  unpack8(w, g);
#pragma unroll
  for (int e = 0; e < 8; ++e) f[e] = f[e] * inv * g[e];
  return pack8(f);
}

// The norm's output row out = x * inv * w, by one warp (lane = its lane);
// vec: d % 8 == 0, 16-byte chunks.
__device__ __forceinline__ void write_norm_row(const bf16_t* x, const bf16_t* w, bf16_t* out, int d, float inv,
                                               bool vec, int lane) {
  if (vec) {
    for (int i = lane; i < d / 8; i += 32)
      reinterpret_cast<uint4*>(out)[i] =
          norm_chunk(reinterpret_cast<const uint4*>(x)[i], reinterpret_cast<const uint4*>(w)[i], inv);
  } else {
    for (int i = lane; i < d; i += 32) out[i] = to_bf(bf(x[i]) * inv * bf(w[i]));
  }
}

// One warp per row: sum of squares in fp32, then y = x * rsqrt(mean + eps) * w.
__global__ void rmsnorm_kernel(const bf16_t* x, const bf16_t* w, bf16_t* y, int rows, int d, float eps,
                               bool vec) {
  griddep_wait();
  griddep_launch_dependents();
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const bf16_t* xr = x + static_cast<int64_t>(row) * d;
  bf16_t* yr = y + static_cast<int64_t>(row) * d;
  float ss = 0.f;
  if (vec) {
    for (int i = lane; i < d / 8; i += 32) {
      float f[8];
      unpack8(reinterpret_cast<const uint4*>(xr)[i], f);
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += f[j] * f[j];
    }
  } else {
    for (int i = lane; i < d; i += 32) ss += bf(xr[i]) * bf(xr[i]);
  }
  ss = warp_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(d) + eps);
  // Each lane rewrites exactly the elements it read, so x and y may alias.
  write_norm_row(xr, w, yr, d, inv, vec, lane);
}

__global__ void add_kernel(bf16_t* x, const bf16_t* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = to_bf(bf(x[i]) + bf(y[i]));
}
__global__ void add_kernel8(uint4* x, const uint4* y, int64_t n8) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n8) return;
  float a[8], b[8];
  unpack8(x[i], a);
  unpack8(y[i], b);
#pragma unroll
  for (int j = 0; j < 8; ++j) a[j] += b[j];
  x[i] = pack8(a);
}

// x += y (rounded to bf16 as add does), then out = rmsnorm(x) * w; one warp
// per row. Each lane rereads only what it wrote, and reads its y before any
// out write, so out may alias y.
__global__ void add_rmsnorm_kernel(bf16_t* x, const bf16_t* y, const bf16_t* w, bf16_t* out, int rows, int d,
                                   float eps, bool vec) {
  griddep_wait();
  griddep_launch_dependents();
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  bf16_t* xr = x + static_cast<int64_t>(row) * d;
  const bf16_t* yr = y + static_cast<int64_t>(row) * d;
  bf16_t* outr = out + static_cast<int64_t>(row) * d;
  float ss = 0.f;
  if (vec) {
    for (int i = lane; i < d / 8; i += 32) {
      float a[8], b[8];
      unpack8(reinterpret_cast<const uint4*>(xr)[i], a);
      unpack8(reinterpret_cast<const uint4*>(yr)[i], b);
#pragma unroll
      for (int j = 0; j < 8; ++j) a[j] += b[j];
      const uint4 packed = pack8(a);
      reinterpret_cast<uint4*>(xr)[i] = packed;
      unpack8(packed, a);
#pragma unroll
      for (int j = 0; j < 8; ++j) ss += a[j] * a[j];
    }
  } else {
    for (int i = lane; i < d; i += 32) {
      const bf16_t r = to_bf(bf(xr[i]) + bf(yr[i]));
      xr[i] = r;
      ss += bf(r) * bf(r);
    }
  }
  ss = warp_sum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(d) + eps);
  write_norm_row(xr, w, outr, d, inv, vec, lane);
}

// The same for d % 8 == 0 and d <= 8 * kNormThreads * kNormPer, one block per
// row: every 16-byte chunk of x, y and w is loaded at once into registers
// (one memory round trip instead of one per chunk a lane walks), the sum of
// squares is a block reduction. At decode batch sizes (32 rows) the warp per
// row version was latency-bound at ~7 us a call. Aliasing as above: a thread
// writes only the chunks it read. PER (chunks a thread holds) is the fewest
// that cover the row: registers for 8 chunks (113) allowed 4 blocks an SM,
// so 1,024 rows of 576 took two waves (SmolLM2's eval step).
constexpr int kNormThreads = 128;
constexpr int kNormPer = 8;  // chunks of 8 per thread at most: d <= 8192

// 1 / rms(row) from the sum of squares each thread of the block holds (a
// block reduction; every thread gets the result). d: the row's length.
__device__ __forceinline__ float block_inv_rms(float ss, int d, float eps) {
  __shared__ float warp_ss[kNormThreads / 32];
  ss = warp_sum(ss);
  if ((threadIdx.x & 31) == 0) warp_ss[threadIdx.x / 32] = ss;
  __syncthreads();
  ss = 0.f;
#pragma unroll
  for (int k = 0; k < kNormThreads / 32; ++k) ss += warp_ss[k];
  return rsqrtf(ss / static_cast<float>(d) + eps);
}

template <int PER>
__global__ void __launch_bounds__(kNormThreads) add_rmsnorm_block_kernel(uint4* x, const uint4* y, const uint4* w,
                                                                         uint4* out, int d8, float eps) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t row = blockIdx.x;
  x += row * d8;
  y += row * d8;
  out += row * d8;
  uint4 xv[PER], yv[PER], wv[PER];
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * kNormThreads;
    if (i < d8) xv[j] = x[i], yv[j] = y[i], wv[j] = w[i];
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * kNormThreads;
    if (i >= d8) continue;
    float a[8], b[8];
    unpack8(xv[j], a);
    unpack8(yv[j], b);
#pragma unroll
    for (int e = 0; e < 8; ++e) a[e] += b[e];
    xv[j] = pack8(a);  // the rounded sum is the new residual and what the norm sees
    x[i] = xv[j];
    unpack8(xv[j], a);
#pragma unroll
    for (int e = 0; e < 8; ++e) ss += a[e] * a[e];
  }
  const float inv = block_inv_rms(ss, d8 * 8, eps);
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int i = threadIdx.x + j * kNormThreads;
    if (i < d8) out[i] = norm_chunk(xv[j], wv[j], inv);
  }
}

// The residual add of a split-K projection (matmul_add_rmsnorm): x[r] +=
// parts[0][r] + ... + parts[S-1][r] (fp32 partial products, added in slice
// order, rounded to bf16 once), then out[r] = rmsnorm(x[r]) * w unless w is
// null. One block per row as above; a thread's partials are loaded together.
template <int S>
__global__ void __launch_bounds__(kNormThreads) add_partials_rmsnorm_kernel(uint4* x, const float4* parts,
                                                                            int64_t slice4, const uint4* w,
                                                                            uint4* out, int d8, float eps) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t row = blockIdx.x;
  x += row * d8;
  out += row * d8;
  parts += row * d8 * 2;  // two float4 per chunk of 8
  float ss = 0.f;
  for (int i = threadIdx.x; i < d8; i += kNormThreads) {
    float4 p[S][2];
#pragma unroll
    for (int s = 0; s < S; ++s) p[s][0] = parts[s * slice4 + 2 * i], p[s][1] = parts[s * slice4 + 2 * i + 1];
    float a[8];
    unpack8(x[i], a);
#pragma unroll
    for (int s = 0; s < S; ++s) {
      a[0] += p[s][0].x, a[1] += p[s][0].y, a[2] += p[s][0].z, a[3] += p[s][0].w;
      a[4] += p[s][1].x, a[5] += p[s][1].y, a[6] += p[s][1].z, a[7] += p[s][1].w;
    }
    const uint4 sum = pack8(a);  // the rounded sum is the new residual and what the norm sees
    x[i] = sum;
    unpack8(sum, a);
#pragma unroll
    for (int e = 0; e < 8; ++e) ss += a[e] * a[e];
  }
  if (!w) return;  // the last layer: the add alone
  const float inv = block_inv_rms(ss, d8 * 8, eps);
  // x[i] is this thread's own write
  for (int i = threadIdx.x; i < d8; i += kNormThreads) out[i] = norm_chunk(x[i], w[i], inv);
}

// out[r, c] = silu(gu[r, c]) * gu[r, f + c]: the merged gate/up rows.
__global__ void silu_mul_kernel(const bf16_t* gu, bf16_t* out, int64_t n, int64_t f) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t r = i / f, c = i % f;
  out[i] = to_bf(silu(bf(gu[r * 2 * f + c])) * bf(gu[r * 2 * f + f + c]));
}
// 8 outputs a thread from 16-byte words: row r's 8 gate values of chunk c and
// their 8 up values, as loaded (gate | up: words c and f8 + c of the row) or
// interleaved by 8 (interleave_gate_up's weights: words 2c and 2c + 1).
__global__ void silu_mul_kernel8(const bf16_t* gu, bf16_t* out, int64_t n8, int64_t f8, bool interleaved) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n8) return;
  const int64_t r = i / f8, c = i % f8;
  const uint4* row = reinterpret_cast<const uint4*>(gu) + r * 2 * f8;
  float g[8], u[8];
  unpack8(row[interleaved ? 2 * c : c], g);
  unpack8(row[interleaved ? 2 * c + 1 : f8 + c], u);
#pragma unroll
  for (int j = 0; j < 8; ++j) g[j] = silu(g[j]) * u[j];
  reinterpret_cast<uint4*>(out)[i] = pack8(g);
}

// The inverse frequencies travel by value in the launch, so the op needs no
// device buffer (and a captured graph keeps its own copy).
struct RopeFreqs {
  float f[kMaxRopeHalf];
};

// HF rotate_half on the first rotary_dim dims of each head; one block per (row, head).
// angle = float(pos) * inv_freq[i], computed in fp32 as HF does.
__global__ void rope_kernel(bf16_t* x, const int32_t* pos, int heads, int head_dim, int half, RopeFreqs fr) {
  const int row = blockIdx.x / heads;
  bf16_t* xh = x + static_cast<int64_t>(blockIdx.x) * head_dim;
  const float p = static_cast<float>(pos[row]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(p * fr.f[i], &s, &c);
    float lo, hi;
    rope_rotate(bf(xh[i]), bf(xh[i + half]), c, s, lo, hi);
    xh[i] = to_bf(lo);
    xh[i + half] = to_bf(hi);
  }
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// Element i of x (viewed as [*, cols]) draws index (row0 + i / cols) * full_cols
// + col0 + i % cols, or i when full_cols is 0 (Backend::fill_uniform's FillIndex).
__global__ void fill_kernel(bf16_t* x, int64_t n, uint64_t seed, float lo, float hi, int64_t cols, int64_t row0,
                            int64_t col0, int64_t full_cols) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t index = full_cols > 0 ? (row0 + i / cols) * full_cols + col0 + i % cols : i;
    const uint64_t r = mix64(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(index));
    const float u = static_cast<float>(r >> 40) * (1.f / 16777216.f);
    x[i] = to_bf(lo + (hi - lo) * u);
  }
}

}  // namespace

void embed(const bf16_t* table, int64_t table_rows, const int32_t* ids, bf16_t* out, int n, int d, cudaStream_t st) {
  if (n == 0) return;
  embed_kernel<<<n, 128, 0, st>>>(table, table_rows, ids, out, d, d % 8 == 0 && aligned16({table, out}));
  check_launch("embed");
}

void rmsnorm(const bf16_t* x, const bf16_t* w, bf16_t* y, int rows, int d, float eps, cudaStream_t st) {
  if (rows == 0) return;
  launch_pdl("rmsnorm", rmsnorm_kernel, blocks_for(rows, 4), 128, st, x, w, y, rows, d, eps,
             d % 8 == 0 && aligned16({x, w, y}));
  check_launch("rmsnorm");
}

void add(bf16_t* x, const bf16_t* y, int64_t n, cudaStream_t st) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16({x, y})) {
    add_kernel8<<<blocks_for(n / 8, 256), 256, 0, st>>>(reinterpret_cast<uint4*>(x),
                                                        reinterpret_cast<const uint4*>(y), n / 8);
  } else {
    add_kernel<<<blocks_for(n, 256), 256, 0, st>>>(x, y, n);
  }
  check_launch("add");
}

void silu_mul_interleaved(const bf16_t* gate_up, bf16_t* out, int64_t n, int64_t f, cudaStream_t st) {
  if (n == 0) return;
  KF_CHECK(f % 8 == 0 && aligned16({gate_up, out}), "silu_mul_interleaved: f {} or the pointers not 16-byte aligned",
           f);
  launch_pdl("silu_mul_interleaved", silu_mul_kernel8, blocks_for(n / 8, 256), 256, st, gate_up, out, n / 8, f / 8,
             true);
}

void interleave_gate_up(const bf16_t* w, bf16_t* out, int64_t f, int64_t d, cudaStream_t st) {
  KF_CHECK(f % 8 == 0, "interleave_gate_up: {} features are not a multiple of 8", f);
  if (f == 0 || d == 0) return;
  const size_t band = 8 * d * sizeof(bf16_t);  // 8 rows
  // Band t of the gates to rows 16t .., band t of the ups to rows 16t + 8 ..
  KF_CUDA(cudaMemcpy2DAsync(out, 2 * band, w, band, band, f / 8, cudaMemcpyDeviceToDevice, st));
  KF_CUDA(cudaMemcpy2DAsync(out + 8 * d, 2 * band, w + f * d, band, band, f / 8, cudaMemcpyDeviceToDevice, st));
}

void silu_mul(const bf16_t* gate_up, bf16_t* out, int64_t n, int64_t f, cudaStream_t st) {
  if (n == 0) return;
  if (f % 8 == 0 && aligned16({gate_up, out})) {
    launch_pdl("silu_mul", silu_mul_kernel8, blocks_for(n / 8, 256), 256, st, gate_up, out, n / 8, f / 8, false);
  } else {
    launch_pdl("silu_mul", silu_mul_kernel, blocks_for(n, 256), 256, st, gate_up, out, n, f);
  }
  check_launch("silu_mul");
}

void add_rmsnorm(bf16_t* x, const bf16_t* y, const bf16_t* w, bf16_t* out, int rows, int d, float eps,
                 cudaStream_t st) {
  if (rows == 0) return;
  const bool vec = d % 8 == 0 && aligned16({x, y, w, out});
  if (vec && d <= 8 * kNormThreads * kNormPer) {
    auto block_kernel = [&](auto kernel) {
      launch_pdl("add_rmsnorm", kernel, rows, kNormThreads, st, reinterpret_cast<uint4*>(x),
                 reinterpret_cast<const uint4*>(y), reinterpret_cast<const uint4*>(w), reinterpret_cast<uint4*>(out),
                 d / 8, eps);
    };
    const int per = (d / 8 + kNormThreads - 1) / kNormThreads;  // chunks a thread holds: at most kNormPer
    if (per <= 1) block_kernel(add_rmsnorm_block_kernel<1>);
    else if (per <= 2) block_kernel(add_rmsnorm_block_kernel<2>);
    else if (per <= 4) block_kernel(add_rmsnorm_block_kernel<4>);
    else block_kernel(add_rmsnorm_block_kernel<kNormPer>);
  } else {
    launch_pdl("add_rmsnorm", add_rmsnorm_kernel, blocks_for(rows, 4), 128, st, x, y, w, out, rows, d, eps, vec);
  }
  check_launch("add_rmsnorm");
}

void add_partials_rmsnorm(bf16_t* x, const float* parts, int slices, const bf16_t* w, bf16_t* out, int rows, int d,
                          float eps, cudaStream_t st) {
  KF_CHECK(d % 8 == 0 && aligned16({x, parts, w, out}),
           "add_partials_rmsnorm: d {} or an address is not 16-byte aligned", d);
  if (rows == 0) return;
  const int64_t slice4 = static_cast<int64_t>(rows) * d / 4;
  auto go = [&](auto kernel) {
    launch_pdl("add_partials_rmsnorm", kernel, rows, kNormThreads, st, reinterpret_cast<uint4*>(x),
               reinterpret_cast<const float4*>(parts), slice4, reinterpret_cast<const uint4*>(w),
               reinterpret_cast<uint4*>(out), d / 8, eps);
  };
  switch (slices) {
    case 2: go(add_partials_rmsnorm_kernel<2>); break;
    case 3: go(add_partials_rmsnorm_kernel<3>); break;
    case 4: go(add_partials_rmsnorm_kernel<4>); break;
    case 6: go(add_partials_rmsnorm_kernel<6>); break;
    case 8: go(add_partials_rmsnorm_kernel<8>); break;
    default: fail("add_partials_rmsnorm: {} slices (2, 3, 4, 6 or 8)", slices);
  }
  check_launch("add_partials_rmsnorm");
}

void rope(bf16_t* x, const int32_t* pos, int n, int heads, int head_dim, int rotary_dim,
          const float* inv_freq_host, cudaStream_t st) {
  const int half = rotary_dim / 2;
  KF_CHECK(half >= 1 && half <= kMaxRopeHalf && rotary_dim % 2 == 0 && rotary_dim <= head_dim,
           "rope: rotary_dim {} unsupported for head_dim {} (max {})", rotary_dim, head_dim, 2 * kMaxRopeHalf);
  KF_CHECK(inv_freq_host != nullptr, "rope: RopeParams.inv_freq is null");
  if (n == 0) return;
  RopeFreqs fr{};
  std::memcpy(fr.f, inv_freq_host, sizeof(float) * half);
  rope_kernel<<<n * heads, half < 128 ? 64 : 128, 0, st>>>(x, pos, heads, head_dim, half, fr);
  check_launch("rope");
}

void fill_uniform(bf16_t* x, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t st, int64_t cols,
                  int64_t row0, int64_t col0, int64_t full_cols) {
  if (n == 0) return;
  fill_kernel<<<1024, 256, 0, st>>>(x, n, seed, lo, hi, cols > 0 ? cols : 1, row0, col0, full_cols);
  check_launch("fill_uniform");
}

}  // namespace kf::cuda

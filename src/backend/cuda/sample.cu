// Token sampling on the GPU (Backend::sample): one block per row of logits,
// no sort, no allocation, deterministic. The reference is kf::Sampler without
// penalties (engine/sampler.cpp); the steps per row:
//   1. max and argmax (ties -> lowest id); temperature 0 or top-k 1 -> argmax.
//   2. p_i = exp((l_i - max) / T) in fp32 (p_argmax = 1), and its fixed-point
//      mass q_i = floor(p_i * 2^44) (uint64). Every sum below is an integer
//      sum, so it does not depend on the order of the additions: the block
//      reductions and shared-memory atomics are deterministic.
//   3. The kept set is {key > tau} + the first c ids (ascending) with key ==
//      tau, where key = the bits of p (monotone for p >= 0): the prefix of the
//      order (p desc, id asc). top-k finds (tau, c) by a radix select on key
//      counts (4 passes of 8 bits), top-p by a radix select on key masses over
//      the top-k set (the first element of the order where the cumulative
//      mass reaches top_p * total). min-p then keeps p >= min_p (p_max = 1).
//   4. total = the kept mass, target = floor(u * total); the token is the
//      first id (ascending) whose inclusive prefix of kept mass exceeds target,
//      found by a block scan over tiles in id order.
// Differences from the fp64 host Sampler are rounding only (fp32 exp, masses
// below 2^-44 count as 0), which moves a boundary by ~1e-7 relative.
// Degenerate rows (every logit -inf or NaN) give the argmax pass's answer.
#include <cmath>

#include "backend/cuda/common.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kV = 8;                    // consecutive elements per thread in a tile
constexpr int kTile = kThreads * kV;     // elements per tile (ascending id)
constexpr float kMassScale = 17592186044416.f;  // 2^44
constexpr int kMaxVocab = 1 << 19;       // kMaxVocab * 2^44 fits in uint64

struct Shared {
  unsigned long long mass[256];  // radix histogram of masses
  uint32_t cnt[256];             // radix histogram of counts
  unsigned long long warp[kWarps];
  float wv[kWarps];
  int wi[kWarps];
  uint32_t sel_b;                // pick_bucket's answer
  unsigned long long sel_above, sel_at;
  int found;
};

// Elements [base, base + kV) of a row (those < n are meaningful).
__device__ __forceinline__ void load8(const bf16_t* row, int base, int n, float (&v)[kV]) {
  const bf16_t* p = row + base;
  if (base + kV <= n && (reinterpret_cast<uintptr_t>(p) & 15u) == 0) {
    unpack8(*reinterpret_cast<const uint4*>(p), v);
    return;
  }
#pragma unroll
  for (int j = 0; j < kV; ++j) v[j] = base + j < n ? bf(p[j]) : -INFINITY;
}
__device__ __forceinline__ void load8(const float* row, int base, int n, float (&v)[kV]) {
  const float* p = row + base;
  if (base + kV <= n && (reinterpret_cast<uintptr_t>(p) & 15u) == 0) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    return;
  }
#pragma unroll
  for (int j = 0; j < kV; ++j) v[j] = base + j < n ? p[j] : -INFINITY;
}

// f(i, logit) for every element of the row, in no particular order.
template <typename T, typename F>
__device__ __forceinline__ void for_each(const T* row, int n, F f) {
  for (int base = threadIdx.x * kV; base < n; base += kTile) {
    float v[kV];
    load8(row, base, n, v);
#pragma unroll
    for (int j = 0; j < kV; ++j)
      if (base + j < n) f(base + j, v[j]);
  }
}

// p = exp((l - mx) / T) as exp2((l - mx) * k2), k2 = log2(e) / T; NaN -> 0.
__device__ __forceinline__ float prob(float l, float mx, float k2) {
  const float p = exp2f((l - mx) * k2);
  return p == p ? p : 0.f;
}
__device__ __forceinline__ uint32_t key_of(float p) { return __float_as_uint(p); }
__device__ __forceinline__ unsigned long long mass_of(float p) {
  return static_cast<unsigned long long>(p * kMassScale);
}

// Sum over the block; every thread gets it.
__device__ unsigned long long block_sum(unsigned long long v, Shared& sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) sh.warp[threadIdx.x / 32] = v;
  __syncthreads();
  unsigned long long s = 0;
  for (int w = 0; w < kWarps; ++w) s += sh.warp[w];
  __syncthreads();
  return s;
}

// (max logit, lowest id holding it); NaN never wins. Every thread gets it.
template <typename T>
__device__ void block_argmax(const T* row, int n, Shared& sh, float& mx, int& arg) {
  float bv = -INFINITY;
  int bi = n;
  for_each(row, n, [&](int i, float l) {
    if (l > bv || (l == bv && i < bi)) bv = l, bi = i;
  });
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
  }
  if ((threadIdx.x & 31) == 0) sh.wv[threadIdx.x / 32] = bv, sh.wi[threadIdx.x / 32] = bi;
  __syncthreads();
  mx = sh.wv[0], arg = sh.wi[0];
  for (int w = 1; w < kWarps; ++w)
    if (sh.wv[w] > mx || (sh.wv[w] == mx && sh.wi[w] < arg)) mx = sh.wv[w], arg = sh.wi[w];
  __syncthreads();
}

// Warp 0: walks the 256 buckets from the highest down, from `above` (what the
// higher buckets hold), and stores in sh.sel_* the first bucket b where
// above + sum(hist[255..b]) >= target, the sum above it and hist[b].
template <typename H>
__device__ void pick_bucket(const H* hist, unsigned long long above, unsigned long long target, Shared& sh) {
  const int lane = threadIdx.x & 31;
  unsigned long long s = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) s += hist[255 - 8 * lane - j];  // lane 0 holds the top 8 buckets
  unsigned long long incl = s;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long x = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += x;
  }
  if (lane == 0) sh.sel_b = 0, sh.sel_above = above + incl - s, sh.sel_at = hist[0];  // unreachable fallback
  __syncwarp();
  unsigned long long run = above + incl - s;
  if (run < target && target <= run + s) {
    for (int j = 0; j < 8; ++j) {
      const int b = 255 - 8 * lane - j;
      if (run + hist[b] >= target) {
        sh.sel_b = b, sh.sel_above = run, sh.sel_at = hist[b];
        break;
      }
      run += hist[b];
    }
  }
}

// Radix select over the elements with key > floor (floor -1: all), in key
// order from the top: the key where the running count (kMass false) or mass
// (kMass true) first reaches target, the count/mass of keys above it, and
// the count/mass at it. Needs target <= the count/mass of those elements.
struct Sel {
  uint32_t key;
  unsigned long long above, at;
};
template <bool kMass, typename T>
__device__ Sel radix_select(const T* row, int n, float mx, float k2, int64_t floor, unsigned long long target,
                            Shared& sh) {
  uint32_t prefix = 0, mask = 0;
  unsigned long long above = 0, at = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.mass[b] = 0, sh.cnt[b] = 0;
    __syncthreads();
    for_each(row, n, [&](int, float l) {
      const float p = prob(l, mx, k2);
      const uint32_t key = key_of(p);
      if (static_cast<int64_t>(key) > floor && (key & mask) == prefix) {
        const int b = (key >> shift) & 255;
        if (kMass) {
          const unsigned long long q = mass_of(p);
          if (q) atomicAdd(&sh.mass[b], q);
        } else {
          atomicAdd(&sh.cnt[b], 1u);
        }
      }
    });
    __syncthreads();
    if (threadIdx.x < 32) {
      if (kMass)
        pick_bucket(sh.mass, above, target, sh);
      else
        pick_bucket(sh.cnt, above, target, sh);
    }
    __syncthreads();
    prefix |= sh.sel_b << shift;
    mask |= 0xffu << shift;
    above = sh.sel_above, at = sh.sel_at;
    __syncthreads();
  }
  return {prefix, above, at};
}

// The first id whose inclusive prefix (ascending id) of w(i, logit) exceeds
// target, or -1. Tiles of kTile ids in order; a block scan inside each.
template <typename T, typename W>
__device__ int find_first(const T* row, int n, unsigned long long target, W w, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  if (threadIdx.x == 0) sh.found = -1;
  __syncthreads();
  unsigned long long carry = 0;
  for (int tile = 0; tile < n; tile += kTile) {
    const int base = tile + threadIdx.x * kV;
    float v[kV];
    unsigned long long wv[kV], s = 0;
    if (base < n) load8(row, base, n, v);
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      wv[j] = base + j < n ? w(base + j, v[j]) : 0;
      s += wv[j];
    }
    unsigned long long incl = s;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long x = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += x;
    }
    if (lane == 31) sh.warp[warp] = incl;
    __syncthreads();
    unsigned long long before = 0, tile_sum = 0;
    for (int k = 0; k < kWarps; ++k) {
      if (k < warp) before += sh.warp[k];
      tile_sum += sh.warp[k];
    }
    unsigned long long cum = carry + before + incl - s;
    if (cum <= target && target < cum + s) {  // exactly one thread
      for (int j = 0; j < kV; ++j) {
        cum += wv[j];
        if (cum > target) {
          sh.found = base + j;
          break;
        }
      }
    }
    __syncthreads();
    const int found = sh.found;
    if (found >= 0) return found;
    carry += tile_sum;
  }
  return -1;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const T* logits, int n, SampleRows a, int32_t* tokens) {
  __shared__ Shared sh;
  const int r = blockIdx.x;
  if (a.forced[r] >= 0) {  // budget forcing and the like: no draw
    if (threadIdx.x == 0) tokens[r] = a.forced[r];
    return;
  }
  const T* row = logits + static_cast<int64_t>(a.logit_row[r]) * n;
  float mx;
  int arg;
  block_argmax(row, n, sh, mx, arg);
  const float temp = a.temperature[r];
  const int top_k = a.top_k[r];
  if (temp <= 0.f || top_k == 1 || !(mx > -INFINITY)) {
    if (threadIdx.x == 0) tokens[r] = arg < n ? arg : 0;
    return;
  }
  const float k2 = 1.4426950408889634f / temp;

  // Kept set: key > tau, plus the first c ids with key == tau (cnt_tau of them).
  uint32_t tau = 0;
  unsigned long long c = n, cnt_tau = n;
  if (top_k > 0 && top_k < n) {
    const Sel s = radix_select<false>(row, n, mx, k2, -1, top_k, sh);
    tau = s.key, c = top_k - s.above, cnt_tau = s.at;
  }
  const float top_p = a.top_p[r];
  if (top_p < 1.f) {
    unsigned long long m_gt = 0;
    for_each(row, n, [&](int, float l) {
      const float p = prob(l, mx, k2);
      if (key_of(p) > tau) m_gt += mass_of(p);
    });
    m_gt = block_sum(m_gt, sh);
    const unsigned long long q_tau = mass_of(__uint_as_float(tau));
    const unsigned long long total = m_gt + c * q_tau;
    unsigned long long target = static_cast<unsigned long long>(ceil(static_cast<double>(top_p) * total));
    target = min(max(target, 1ull), total);
    if (m_gt >= target) {  // the crossing is above tau
      const Sel s = radix_select<true>(row, n, mx, k2, tau, target, sh);
      const unsigned long long qv = mass_of(__uint_as_float(s.key));  // > 0: its bucket reached target
      tau = s.key, cnt_tau = s.at / qv, c = (target - s.above + qv - 1) / qv;
    } else if (q_tau > 0) {  // inside the ties at tau
      c = min(c, (target - m_gt + q_tau - 1) / q_tau);
    }
  }
  const float min_p = a.min_p[r];
  const uint32_t key_min = min_p > 0.f ? key_of(min_p) : 0u;

  // The c-th id (ascending) with key == tau, when not all of them are kept.
  int cut = n;
  if (c < cnt_tau) {
    cut = find_first(
        row, n, c - 1,
        [&](int, float l) -> unsigned long long { return key_of(prob(l, mx, k2)) == tau ? 1 : 0; }, sh);
    if (cut < 0) cut = n;
  }
  auto kept_mass = [&](int i, float l) -> unsigned long long {
    const float p = prob(l, mx, k2);
    const uint32_t key = key_of(p);
    return (key > tau || (key == tau && i <= cut)) && key >= key_min ? mass_of(p) : 0;
  };
  unsigned long long total = 0;
  for_each(row, n, [&](int i, float l) { total += kept_mass(i, l); });
  total = block_sum(total, sh);
  const double u = a.uniform[r];
  unsigned long long target = u > 0.0 ? static_cast<unsigned long long>(u * static_cast<double>(total)) : 0;
  if (total > 0 && target >= total) target = total - 1;
  const int tok = find_first(row, n, target, kept_mass, sh);
  if (threadIdx.x == 0) tokens[r] = tok >= 0 ? tok : arg;
}

}  // namespace

void sample(const void* logits, bool bf16_logits, int rows, int vocab, const SampleRows& a, int32_t* tokens,
            cudaStream_t st) {
  KF_CHECK(vocab > 0 && vocab <= kMaxVocab, "cuda sample: vocab {} outside [1, {}]", vocab, kMaxVocab);
  if (rows <= 0) return;
  if (bf16_logits)
    sample_kernel<<<rows, kThreads, 0, st>>>(static_cast<const bf16_t*>(logits), vocab, a, tokens);
  else
    sample_kernel<<<rows, kThreads, 0, st>>>(static_cast<const float*>(logits), vocab, a, tokens);
  check_launch("sample");
}

}  // namespace kf::cuda

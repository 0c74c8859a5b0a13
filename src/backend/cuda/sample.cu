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
// The two-stage top-k path (rows with 1 <= top_k <= kMaxFastK, greedy or
// forced): stage 1 keeps each chunk's top k logits, stage 2 ranks the
// candidates of a row and draws. Many blocks per row instead of one.
constexpr int kMaxFastK = 64;
constexpr int kChunk = 8192;            // logits per stage-1 block
constexpr int kChunkThreads = 256;
constexpr int kCandCap = 2048;           // stage-2 candidates per row (ceil(vocab / kChunk) * k <= this)
constexpr int kRankThreads = 512;

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

// Rows the two-stage top-k path serves (when the vocabulary fits it): forced,
// greedy, or 1 <= top_k <= kMaxFastK.
__device__ __forceinline__ bool fast_row(const SampleRows& a, int r) {
  return a.fast_path && (a.forced[r] >= 0 || a.temperature[r] <= 0.f || (a.top_k[r] >= 1 && a.top_k[r] <= kMaxFastK));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const T* logits, int n, SampleRows a, int32_t* tokens) {
  __shared__ Shared sh;
  const int r = blockIdx.x;
  if (fast_row(a, r)) return;  // topk_chunks_kernel / topk_draw_kernel serve it
  if (a.forced[r] >= 0) {      // budget forcing and the like: no draw
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


__device__ __forceinline__ float as_float(bf16_t h) { return bf(h); }
__device__ __forceinline__ float as_float(float f) { return f; }

// Order key of a logit: larger logit, larger key; NaN lowest, -0 == +0.
__device__ __forceinline__ uint32_t logit_key(float f) {
  if (f != f) return 0u;
  if (f == 0.f) f = 0.f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_logit(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

struct ChunkSmem {
  uint32_t keys[kChunk];
  int hist[256];
  uint32_t prefix;
  int krem, n_gt, n_eq;
};

// Stage 1: block (row, chunk) writes the chunk's k largest logits (ties ->
// lower id) as (key, id) pairs to cand[row][chunk][0..k), padded with key 0.
template <typename T>
__global__ void __launch_bounds__(kChunkThreads)
    topk_chunks_kernel(const T* logits, int n, SampleRows a, int n_chunks, uint32_t* cand_key, int32_t* cand_id) {
  __shared__ ChunkSmem sm;
  const int r = blockIdx.x, chunk = blockIdx.y, tid = threadIdx.x;
  if (!fast_row(a, r) || a.forced[r] >= 0) return;
  const int k = a.temperature[r] <= 0.f ? 1 : a.top_k[r];
  const T* row = logits + static_cast<int64_t>(a.logit_row[r]) * n;
  const int c0 = chunk * kChunk, m = min(kChunk, n - c0);
  for (int i = tid; i < kChunk; i += kChunkThreads) sm.keys[i] = i < m ? logit_key(as_float(row[c0 + i])) : 0u;
  // Radix select of the k-th largest key, 8 bits at a time from the top.
  uint32_t prefix = 0, mask = 0;
  int krem = min(k, m);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += kChunkThreads) sm.hist[b] = 0;
    __syncthreads();
    for (int i = tid; i < m; i += kChunkThreads)
      if ((sm.keys[i] & mask) == prefix) atomicAdd(&sm.hist[(sm.keys[i] >> shift) & 255u], 1);
    __syncthreads();
    if (tid == 0) {
      int above = 0, b = 255;
      while (b > 0 && above + sm.hist[b] < krem) above += sm.hist[b--];
      sm.prefix = prefix | (static_cast<uint32_t>(b) << shift);
      sm.krem = krem - above;
    }
    __syncthreads();
    prefix = sm.prefix;
    krem = sm.krem;
    mask |= 255u << shift;
    __syncthreads();
  }
  // Keys above the threshold, then the first krem keys equal to it (ascending id).
  uint32_t* ok = cand_key + (static_cast<int64_t>(r) * n_chunks + chunk) * kMaxFastK;
  int32_t* oi = cand_id + (static_cast<int64_t>(r) * n_chunks + chunk) * kMaxFastK;
  if (tid == 0) sm.n_gt = 0, sm.n_eq = 0;
  __syncthreads();
  for (int i = tid; i < m; i += kChunkThreads)
    if (sm.keys[i] > prefix) {
      const int at = atomicAdd(&sm.n_gt, 1);
      ok[at] = sm.keys[i];
      oi[at] = c0 + i;
    }
  __syncthreads();
  const int n_gt = sm.n_gt;
  if (tid < 32) {  // ties at the threshold, in id order, by one warp
    int taken = 0;
    for (int base = 0; base < m && taken < krem; base += 32) {
      const int i = base + tid;
      const bool eq = i < m && sm.keys[i] == prefix;
      const unsigned ballot = __ballot_sync(0xffffffffu, eq);
      const int rank = __popc(ballot & ((1u << tid) - 1u));
      if (eq && taken + rank < krem) {
        ok[n_gt + taken + rank] = prefix;
        oi[n_gt + taken + rank] = c0 + i;
      }
      taken += __popc(ballot);
    }
  }
  for (int j = n_gt + krem + tid; j < kMaxFastK; j += kChunkThreads) ok[j] = 0u, oi[j] = 0x7fffffff;  // padding
}

// Stage 2: block per row ranks its chunks' candidates by (logit desc, id asc),
// keeps the top k, applies temperature, top-p and min-p on fixed-point masses
// as sample_kernel does, and draws over the kept ids in ascending id order.
__global__ void __launch_bounds__(kRankThreads)
    topk_draw_kernel(SampleRows a, int n_chunks, const uint32_t* cand_key, const int32_t* cand_id, int32_t* tokens) {
  __shared__ unsigned long long sk[kCandCap];  // (key << 32) | ~id: descending = (logit desc, id asc)
  __shared__ unsigned long long mass[kMaxFastK];
  __shared__ int ids[kMaxFastK];
  const int r = blockIdx.x, tid = threadIdx.x;
  if (!fast_row(a, r)) return;
  if (a.forced[r] >= 0) {
    if (tid == 0) tokens[r] = a.forced[r];
    return;
  }
  const bool greedy = a.temperature[r] <= 0.f;
  const int k = greedy ? 1 : a.top_k[r];
  const int total = n_chunks * kMaxFastK;
  int size = 1;
  while (size < total) size <<= 1;
  const uint32_t* ck = cand_key + static_cast<int64_t>(r) * total;
  const int32_t* ci = cand_id + static_cast<int64_t>(r) * total;
  for (int i = tid; i < size; i += kRankThreads)
    sk[i] = i < total && ck[i] ? (static_cast<unsigned long long>(ck[i]) << 32) | (0xffffffffu - static_cast<uint32_t>(ci[i]))
                               : 0ull;
  __syncthreads();
  // Bitonic sort, descending.
  for (int len = 2; len <= size; len <<= 1)
    for (int stride = len >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < size; i += kRankThreads) {
        const int j = i ^ stride;
        if (j > i) {
          const bool desc = (i & len) == 0;
          const unsigned long long x = sk[i], y = sk[j];
          if (desc ? x < y : x > y) sk[i] = y, sk[j] = x;
        }
      }
      __syncthreads();
    }
  const float mx = key_logit(static_cast<uint32_t>(sk[0] >> 32));
  if (greedy || k == 1) {
    if (tid == 0) tokens[r] = static_cast<int>(0xffffffffu - static_cast<uint32_t>(sk[0]));
    return;
  }
  const float k2 = 1.4426950408889634f / a.temperature[r];
  if (tid < kMaxFastK) {
    const bool in = tid < k && sk[tid] != 0ull;
    const float p = in ? prob(key_logit(static_cast<uint32_t>(sk[tid] >> 32)), mx, k2) : 0.f;
    mass[tid] = in ? mass_of(p) : 0ull;
    ids[tid] = in ? static_cast<int>(0xffffffffu - static_cast<uint32_t>(sk[tid])) : 0x7fffffff;
  }
  __syncthreads();
  if (tid == 0) {  // top-p over the ranked prefix, then min-p (k <= 64: one thread is cheap)
    unsigned long long tot = 0;
    for (int j = 0; j < k; ++j) tot += mass[j];
    int keep = k;
    const float top_p = a.top_p[r];
    if (top_p < 1.f && tot > 0) {
      unsigned long long target = static_cast<unsigned long long>(ceil(static_cast<double>(top_p) * tot));
      target = min(max(target, 1ull), tot);
      unsigned long long cum = 0;
      for (int j = 0; j < k; ++j) {
        cum += mass[j];
        if (cum >= target) {
          keep = j + 1;
          break;
        }
      }
    }
    const float min_p = a.min_p[r];
    const unsigned long long min_mass = min_p > 0.f ? mass_of(min_p) : 0ull;
    int n = 0;
    for (int j = 0; j < keep; ++j)
      if (mass[j] > 0 && (min_p <= 0.f || mass[j] >= min_mass)) mass[n] = mass[j], ids[n] = ids[j], ++n;
    // Ascending id order (insertion sort of <= 64), then the inverse-CDF draw.
    for (int j = 1; j < n; ++j) {
      const int id = ids[j];
      const unsigned long long q = mass[j];
      int i = j - 1;
      while (i >= 0 && ids[i] > id) ids[i + 1] = ids[i], mass[i + 1] = mass[i], --i;
      ids[i + 1] = id, mass[i + 1] = q;
    }
    unsigned long long kept = 0;
    for (int j = 0; j < n; ++j) kept += mass[j];
    const double u = a.uniform[r];
    unsigned long long target = u > 0.0 ? static_cast<unsigned long long>(u * static_cast<double>(kept)) : 0;
    if (kept > 0 && target >= kept) target = kept - 1;
    int tok = ids[0];
    unsigned long long cum = 0;
    for (int j = 0; j < n; ++j) {
      cum += mass[j];
      if (cum > target) {
        tok = ids[j];
        break;
      }
    }
    tokens[r] = n > 0 ? tok : static_cast<int>(0xffffffffu - static_cast<uint32_t>(sk[0]));
  }
}

}  // namespace

int64_t sample_scratch_words(int rows, int vocab) {
  return static_cast<int64_t>(rows) * ((vocab + kChunk - 1) / kChunk) * kMaxFastK;
}

void sample(const void* logits, bool bf16_logits, int rows, int vocab, const SampleRows& rows_in, int32_t* tokens,
            uint32_t* scratch, cudaStream_t st) {
  KF_CHECK(vocab > 0 && vocab <= kMaxVocab, "cuda sample: vocab {} outside [1, {}]", vocab, kMaxVocab);
  const int n_chunks = (vocab + kChunk - 1) / kChunk;
  if (rows <= 0) return;
  SampleRows a = rows_in;
  a.fast_path = n_chunks * kMaxFastK <= kCandCap;  // else every row takes the general kernel
  // Rows with a small top-k (the Qwen3 defaults), greedy or forced rows: two
  // stages with many blocks per row; the general kernel skips them.
  uint32_t* cand_key = scratch;
  int32_t* cand_id = reinterpret_cast<int32_t*>(scratch + sample_scratch_words(rows, vocab));
  if (a.fast_path) {
    const dim3 grid(rows, n_chunks);
    if (bf16_logits)
      topk_chunks_kernel<<<grid, kChunkThreads, 0, st>>>(static_cast<const bf16_t*>(logits), vocab, a, n_chunks,
                                                         cand_key, cand_id);
    else
      topk_chunks_kernel<<<grid, kChunkThreads, 0, st>>>(static_cast<const float*>(logits), vocab, a, n_chunks,
                                                         cand_key, cand_id);
    check_launch("sample top-k chunks");
    topk_draw_kernel<<<rows, kRankThreads, 0, st>>>(a, n_chunks, cand_key, cand_id, tokens);
    check_launch("sample top-k draw");
  }
  if (bf16_logits)
    sample_kernel<<<rows, kThreads, 0, st>>>(static_cast<const bf16_t*>(logits), vocab, a, tokens);
  else
    sample_kernel<<<rows, kThreads, 0, st>>>(static_cast<const float*>(logits), vocab, a, tokens);
  check_launch("sample");
}

}  // namespace kf::cuda

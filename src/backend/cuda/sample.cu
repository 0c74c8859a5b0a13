// Token sampling on the GPU (Backend::sample): no sort, no allocation,
// deterministic. The reference is kf::Sampler without penalties
// (engine/sampler.cpp). Two kernels, each skipping the other's rows:
// topk_kernel for rows with 1 <= top_k <= 64, greedy or forced (the Qwen3
// defaults; see "The top-k path" below), sample_kernel for the others, one
// block per row; its steps per row:
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
// topk_kernel ranks logits instead of p (same order up to fp32 exp rounding)
// and applies the same fixed-point rules to its k best.
#include <algorithm>
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
constexpr int kMaxFastK = 64;           // top_k up to this takes topk_kernel

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

// Rows topk_kernel serves: forced, greedy, or 1 <= top_k <= kMaxFastK.
__device__ __forceinline__ bool fast_row(const SampleRows& a, int r) {
  return a.forced[r] >= 0 || a.temperature[r] <= 0.f || (a.top_k[r] >= 1 && a.top_k[r] <= kMaxFastK);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const T* logits, int n, SampleRows a, int32_t* tokens) {
  __shared__ Shared sh;
  const int r = blockIdx.x;
  if (fast_row(a, r)) return;  // topk_kernel serves it (forced rows too)
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
  const float k2 = kLog2e / temp;

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

// ---- The top-k path ----------------------------------------------------------
// Rows with 1 <= top_k <= kMaxFastK, greedy (k = 1) or forced. Block (chunk,
// row) of topk_kernel ranks the k best of its chunk into a list; the last
// block of the row to finish (a counter per row) merges the row's n_chunks
// lists (merge_topk) and draws (draw_topk). One launch; on an H200 a serial
// loop of warp collectives costs ~100 cycles a step, so the loops are short
// (16 bisection steps, k merge steps).
// With many rows (more blocks than the GPU runs at once) topk_long_kernel
// serves them instead: a block reads a long chunk (with more than 264 rows on
// an H200, its whole row) as sub-chunks of kChunk logits, in id order,
// through a ring of bulk copies into shared memory, several in flight.
// The first sub-chunk's k best come from select_topk; after that the
// block's list is full, and a sub-chunk only adds its keys above the list's
// k-th (its ties there have larger ids, so they never enter): few, once the
// list is good.
constexpr int kTopThreads = 256;
constexpr int kTopWarps = kTopThreads / 32;
constexpr int kPer = 16;                      // logits per thread: two runs of kV
constexpr int kChunk = kTopThreads * kPer;    // 4096 logits per block
constexpr int kGather = 512;                  // candidates ranked in shared memory
constexpr int kMaxChunks = kMaxVocab / kChunk;
constexpr int kListsPerLane = kMaxChunks / 32;  // stage 2's merge
constexpr int kIdBits = 19;                   // ids < kMaxVocab = 2^19
static_assert(kPer % kV == 0 && kTopWarps * 32 == kTopThreads && (1 << kIdBits) == kMaxVocab &&
              kListsPerLane * 32 == kMaxChunks);

struct TopSmem {
  uint32_t tmax[kTopThreads];  // each thread's largest key
  uint32_t key[kGather];       // gathered candidates (unordered)
  int id[kGather];
  uint32_t top_key[kMaxFastK];  // the block's (stage 2: the row's) k best so far, ranked
  int top_id[kMaxFastK];
  uint32_t sub_key[kMaxFastK];  // a sub-chunk's own k best (add_subchunk)
  int sub_id[kMaxFastK];
  unsigned long long mass[kMaxFastK];
  int part[kTopWarps];
  int n;                        // candidates gathered (may exceed kGather)
  uint32_t t;
  bool last;
};

// Count over the block; every thread gets it.
__device__ int block_count(int c, TopSmem& sm) {
  c = __reduce_add_sync(0xffffffffu, c);
  if ((threadIdx.x & 31) == 0) sm.part[threadIdx.x / 32] = c;
  __syncthreads();
  int s = 0;
#pragma unroll
  for (int w = 0; w < kTopWarps; ++w) s += sm.part[w];
  __syncthreads();
  return s;
}

// Appends the items with pred(key, id) to sm.key/id; sm.n counts all of them,
// also past kGather. `each(f)` calls f(key, id) for each of this thread's
// items, as many times on every thread (the ballots need whole warps).
template <typename Each, typename Pred>
__device__ void gather(Each each, Pred pred, TopSmem& sm) {
  const int lane = threadIdx.x & 31;
  each([&](uint32_t key, int id) {
    const bool p = pred(key, id);
    const unsigned b = __ballot_sync(0xffffffffu, p);
    if (b == 0) return;
    const int leader = __ffs(b) - 1;
    int at = 0;
    if (lane == leader) at = atomicAdd(&sm.n, __popc(b));
    at = __shfl_sync(0xffffffffu, at, leader) + __popc(b & ((1u << lane) - 1u));
    if (p && at < kGather) sm.key[at] = key, sm.id[at] = id;
  });
}

// The block's k best items in the order (key desc, id asc), key 0 = no item:
// out(rank, key, id) for rank < min(k, items), which it returns. A lower bound
// t on the k-th best key is the k-th largest per-thread max (to 16 bits): at
// least k items reach it, and with spread-out keys few more. Those are
// gathered and ranked by counting. Past kGather of them (many ties), the
// exact k-th key and the last id kept among its ties are bisected first.
template <typename Each, typename Out>
__device__ int select_topk(Each each, int k, TopSmem& sm, Out out) {
  const int tid = threadIdx.x;
  uint32_t mx = 0;
  each([&](uint32_t key, int) { mx = max(mx, key); });
  sm.tmax[tid] = mx;
  if (tid == 0) sm.n = 0;
  __syncthreads();
  if (tid < 32) {  // warp 0: the largest x with #{threads: max >> 16 >= x} >= k
    uint32_t v[kTopWarps];
#pragma unroll
    for (int j = 0; j < kTopWarps; ++j) v[j] = sm.tmax[tid * kTopWarps + j] >> 16;
    uint32_t x = 0;
    for (int bit = 15; bit >= 0; --bit) {
      const uint32_t y = x | 1u << bit;
      int c = 0;
#pragma unroll
      for (int j = 0; j < kTopWarps; ++j) c += v[j] >= y;
      if (__reduce_add_sync(0xffffffffu, c) >= k) x = y;
    }
    if (tid == 0) sm.t = x << 16;
  }
  __syncthreads();
  const uint32_t t = max(sm.t, 1u);
  gather(each, [&](uint32_t key, int) { return key >= t; }, sm);
  __syncthreads();
  int n = sm.n;
  if (n > kGather) {
    uint32_t tau = 0;  // the largest key with >= k items at or above it (0: fewer than k items)
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t y = tau | 1u << bit;
      int c = 0;
      each([&](uint32_t key, int) { c += key >= y; });
      if (block_count(c, sm) >= k) tau = y;
    }
    int last = 0;  // ties at tau are kept up to this id
    if (tau > 0) {
      int c = 0;
      each([&](uint32_t key, int) { c += key > tau; });
      const int need = k - block_count(c, sm);
      for (int bit = kIdBits - 1; bit >= 0; --bit) {  // the largest z with #{key == tau, id < z} < need
        const int y = last | 1 << bit;
        int c2 = 0;
        each([&](uint32_t key, int id) { c2 += key == tau && id < y; });
        if (block_count(c2, sm) < need) last = y;
      }
    }
    if (tid == 0) sm.n = 0;
    __syncthreads();
    gather(each, [&](uint32_t key, int id) { return key > tau || (key == tau && key > 0 && id <= last); }, sm);
    __syncthreads();
    n = sm.n;  // min(k, items)
  }
  for (int i = tid; i < n; i += kTopThreads) {
    const uint32_t key = sm.key[i];
    const int id = sm.id[i];
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += sm.key[j] > key || (sm.key[j] == key && sm.id[j] < id);
    if (rank < k) out(rank, key, id);
  }
  return min(n, k);
}

// Ranks the pool sm.key/id[0, n) (distinct ids) into the list sm.top_*; its
// length, min(n, k), is returned to every thread.
__device__ int rank_pool(int n, int k, TopSmem& sm) {
  for (int i = threadIdx.x; i < n; i += kTopThreads) {
    const uint32_t key = sm.key[i];
    const int id = sm.id[i];
    int rank = 0;
    for (int j = 0; j < n; ++j) rank += sm.key[j] > key || (sm.key[j] == key && sm.id[j] < id);
    if (rank < k) sm.top_key[rank] = key, sm.top_id[rank] = id;
  }
  __syncthreads();
  return min(n, k);
}

// The block's list (sm.top_*, m items, ranked) after one more sub-chunk, whose
// ids are all above the list's; returns its new length. A full list (m == k)
// takes the sub-chunk's keys above its k-th, gathered next to it; when more
// pass than the pool holds, or the list is not full, the sub-chunk's own k
// best (select_topk) are ranked with the list.
template <typename Each>
__device__ int add_subchunk(Each each, int k, int m, TopSmem& sm) {
  const int tid = threadIdx.x;
  if (m == k) {
    const uint32_t t = sm.top_key[k - 1];
    if (tid < m) sm.key[tid] = sm.top_key[tid], sm.id[tid] = sm.top_id[tid];
    if (tid == 0) sm.n = m;
    __syncthreads();
    gather(each, [&](uint32_t key, int) { return key > t; }, sm);
    __syncthreads();
    const int n = sm.n;
    if (n == m) return m;  // none above the k-th: the list stands
    if (n <= kGather) return rank_pool(n, k, sm);
    __syncthreads();  // every thread has read sm.n before select_topk resets it
  }
  const int got = select_topk(each, k, sm, [&](int rank, uint32_t key, int id) {
    sm.sub_key[rank] = key, sm.sub_id[rank] = id;
  });
  __syncthreads();
  if (tid < m) sm.key[tid] = sm.top_key[tid], sm.id[tid] = sm.top_id[tid];
  if (tid < got) sm.key[m + tid] = sm.sub_key[tid], sm.id[m + tid] = sm.sub_id[tid];
  __syncthreads();
  return rank_pool(m + got, k, sm);
}

// Warp 0: the k best (key desc, id asc) of n_lists ranked lists (list c:
// lists[c * k, c * k + k), key 0 ends it) into sm.top_*; returns how many.
// Lane l holds the heads of lists l, l + 32, ...; each step takes the warp's
// best head (two warp reductions) and advances its list.
__device__ int merge_topk(const uint2* lists, int n_lists, int k, TopSmem& sm) {
  const int lane = threadIdx.x;
  const uint2 kNone = make_uint2(0u, 0x7fffffffu);
  int head[kListsPerLane];
  uint2 h[kListsPerLane];
#pragma unroll
  for (int i = 0; i < kListsPerLane; ++i) {
    const int c = lane + 32 * i;
    head[i] = 0;
    h[i] = c < n_lists ? lists[c * k] : kNone;
  }
  int m = 0;
  for (; m < k; ++m) {
    uint2 b = kNone;
    int bi = 0;
#pragma unroll
    for (int i = 0; i < kListsPerLane; ++i)
      if (h[i].x > b.x || (h[i].x == b.x && h[i].y < b.y)) b = h[i], bi = i;
    const uint32_t wk = __reduce_max_sync(0xffffffffu, b.x);
    if (wk == 0) break;
    const uint32_t wid = __reduce_min_sync(0xffffffffu, b.x == wk ? b.y : 0xffffffffu);
    if (b.x == wk && b.y == wid) {  // this lane's list bi holds the step's best
      sm.top_key[m] = wk;
      sm.top_id[m] = static_cast<int>(wid);
#pragma unroll
      for (int i = 0; i < kListsPerLane; ++i)
        if (i == bi) {
          const int c = lane + 32 * i;
          h[i] = ++head[i] < k ? lists[c * k + head[i]] : kNone;
        }
    }
  }
  return m;
}

// Warp 0: temperature, top-p and min-p over the row's m best (sm.top_*,
// ranked), then the inverse-CDF draw over the kept ids in ascending order;
// fixed-point masses as in sample_kernel. Lane l holds ranks 2l and 2l + 1.
__device__ void draw_topk(const SampleRows& a, int r, int m, TopSmem& sm, int32_t* tokens) {
  const int lane = threadIdx.x;
  const float mx = order_key_float(sm.top_key[0]), k2 = kLog2e / a.temperature[r];
  unsigned long long q[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = 2 * lane + h;
    q[h] = j < m ? mass_of(prob(order_key_float(sm.top_key[j]), mx, k2)) : 0ull;
  }
  unsigned long long incl = q[0] + q[1];
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long x = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += x;
  }
  const unsigned long long tot = __shfl_sync(0xffffffffu, incl, 31);
  int keep = m;  // top-p: the first rank where the cumulative mass reaches top_p * tot
  const float top_p = a.top_p[r];
  if (top_p < 1.f && tot > 0) {
    unsigned long long target = static_cast<unsigned long long>(ceil(static_cast<double>(top_p) * tot));
    target = min(max(target, 1ull), tot);
    const unsigned long long c1 = incl, c0 = incl - q[1];
    const int first = c0 >= target ? 2 * lane : c1 >= target ? 2 * lane + 1 : kMaxFastK;
    keep = static_cast<int>(__reduce_min_sync(0xffffffffu, static_cast<unsigned>(first))) + 1;
  }
  const float min_p = a.min_p[r];
  const unsigned long long min_mass = min_p > 0.f ? mass_of(min_p) : 0ull;
  unsigned long long w[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int j = 2 * lane + h;
    w[h] = j < keep && q[h] > 0 && q[h] >= min_mass ? q[h] : 0ull;
    sm.mass[j] = w[h];
  }
  unsigned long long kept = w[0] + w[1];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) kept += __shfl_xor_sync(0xffffffffu, kept, o);
  __syncwarp();
  if (kept == 0) {  // every kept mass underflowed: the best id
    if (lane == 0) tokens[r] = sm.top_id[0];
    return;
  }
  const double u = a.uniform[r];
  unsigned long long target = u > 0.0 ? static_cast<unsigned long long>(u * static_cast<double>(kept)) : 0;
  if (target >= kept) target = kept - 1;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (w[h] == 0) continue;
    const int id = sm.top_id[2 * lane + h];
    unsigned long long before = 0;  // kept mass at lower ids
    for (int i = 0; i < m; ++i)
      if (sm.top_id[i] < id) before += sm.mass[i];
    if (before <= target && target < before + w[h]) tokens[r] = id;  // exactly one item
  }
}

// After a block's list (m items in sm.top_*, ranked) for chunk `chunk` of
// row r: with one chunk a row it is the row's; else it goes to cand and the
// row's last block to finish (the usual fence + counter) merges the n_chunks
// lists (stage 2). Then warp 0 draws.
__device__ void finish_row(const SampleRows& a, int r, int chunk, int n_chunks, int k, int m, uint2* cand,
                           unsigned* arrived, int32_t* tokens, TopSmem& sm) {
  const int tid = threadIdx.x;
  if (n_chunks > 1) {
    uint2* out = cand + (static_cast<int64_t>(r) * n_chunks + chunk) * kMaxFastK;  // [k] (key, id), ranked
    for (int j = tid; j < k; j += kTopThreads)
      out[j] = j < m ? make_uint2(sm.top_key[j], static_cast<uint32_t>(sm.top_id[j])) : make_uint2(0u, 0x7fffffffu);
    __threadfence();
    __syncthreads();
    if (tid == 0) sm.last = atomicAdd(&arrived[r], 1u) == static_cast<unsigned>(n_chunks - 1);
    __syncthreads();
    if (!sm.last) return;
    __threadfence();
    if (tid == 0) arrived[r] = 0;  // every block of the row has counted: ready for the next call

    // Stage 2: the k best of the row's n_chunks ranked lists of k, staged in
    // shared memory (after the ring, if any) and merged by warp 0.
    extern __shared__ __align__(16) unsigned char dyn[];
    uint2* lists = reinterpret_cast<uint2*>(dyn);  // [n_chunks][k]
    const uint2* rc = cand + static_cast<int64_t>(r) * n_chunks * kMaxFastK;
    for (int s = tid; s < n_chunks * k; s += kTopThreads) lists[s] = __ldcg(&rc[(s / k) * kMaxFastK + s % k]);
    __syncthreads();
    if (tid >= 32) return;
    m = merge_topk(lists, n_chunks, k, sm);
    __syncwarp();
  }
  if (tid >= 32) return;
  if (m == 0 || a.temperature[r] <= 0.f || k == 1) {  // argmax (ties -> lowest id); no item (all NaN): 0
    if (tid == 0) tokens[r] = m > 0 ? sm.top_id[0] : 0;
    return;
  }
  draw_topk(a, r, m, sm, tokens);
}

// The row's k (greedy: 1), or 0 for a row this kernel does not draw
// (sample_kernel's, or forced: its token is written here by block 0).
__device__ __forceinline__ int topk_of_row(const SampleRows& a, int r, int chunk, int32_t* tokens) {
  if (!fast_row(a, r)) return 0;
  if (a.forced[r] >= 0) {  // budget forcing and the like: no draw
    if (chunk == 0 && threadIdx.x == 0) tokens[r] = a.forced[r];
    return 0;
  }
  return a.temperature[r] <= 0.f ? 1 : a.top_k[r];
}

// Element j of this thread's kPer in a sub-chunk starting at s0: kV
// consecutive logits at each of kPer / kV strides of kV * kTopThreads
// (coalesced).
__device__ __forceinline__ int element_id(int s0, int j) {
  return s0 + ((j / kV) * kTopThreads + static_cast<int>(threadIdx.x)) * kV + j % kV;
}

// This thread's keys of the sub-chunk [s0, s1), key 0 past s1. Runs whose kV
// logits lie in the first `staged` of `stage` (the sub-chunk's copy in shared
// memory) are read there, the others from the row.
template <typename T>
__device__ __forceinline__ void subchunk_keys(const T* row, int s0, int s1, const T* stage, int staged,
                                              uint32_t (&keys)[kPer]) {
#pragma unroll
  for (int q = 0; q < kPer / kV; ++q) {
    const int rel = element_id(0, q * kV);
    float v[kV];
    if (rel + kV <= staged)
      load8(stage, rel, staged, v);
    else
      load8(row, s0 + rel, s1, v);
#pragma unroll
    for (int e = 0; e < kV; ++e) keys[q * kV + e] = s0 + rel + e < s1 ? order_key(v[e]) : 0u;
  }
}

// One sub-chunk a block (few rows).
template <typename T>
__global__ void __launch_bounds__(kTopThreads, 5)
    topk_kernel(const T* logits, int n, SampleRows a, int n_chunks, int chunk_len, uint2* cand, unsigned* arrived,
                int32_t* tokens) {
  __shared__ TopSmem sm;
  const int chunk = blockIdx.x, r = blockIdx.y;
  const int k = topk_of_row(a, r, chunk, tokens);
  if (k == 0) return;
  const T* row = logits + static_cast<int64_t>(a.logit_row[r]) * n;
  const int c0 = chunk * chunk_len, c1 = min(c0 + chunk_len, n);
  uint32_t keys[kPer];
  subchunk_keys(row, c0, c1, static_cast<const T*>(nullptr), 0, keys);
  auto each_logit = [&](auto f) {
#pragma unroll
    for (int j = 0; j < kPer; ++j) f(keys[j], element_id(c0, j));
  };
  const int m = select_topk(each_logit, k, sm, [&](int rank, uint32_t key, int id) {
    sm.top_key[rank] = key, sm.top_id[rank] = id;
  });
  __syncthreads();
  finish_row(a, r, chunk, n_chunks, k, m, cand, arrived, tokens, sm);
}

// Sub-chunks in flight a block: 32 KB of ring.
template <typename T>
constexpr int kRingStages = 32 * 1024 / (kChunk * static_cast<int>(sizeof(T)));

// Many rows: a longer chunk a block, read sub-chunk by sub-chunk through a
// ring of bulk copies (dynamic shared memory: the ring, then stage 2's
// lists). Needs rows of 16-byte multiples (the copies' alignment); a
// sub-chunk's last < kV logits are read from global memory.
template <typename T>
__global__ void __launch_bounds__(kTopThreads, 4)
    topk_long_kernel(const T* logits, int n, SampleRows a, int n_chunks, int chunk_len, uint2* cand,
                     unsigned* arrived, int32_t* tokens) {
  constexpr int kStages = kRingStages<T>;
  __shared__ TopSmem sm;
  __shared__ __align__(8) uint64_t full[kStages];
  extern __shared__ __align__(16) unsigned char dyn[];
  const int chunk = blockIdx.x, r = blockIdx.y, tid = threadIdx.x;
  const int k = topk_of_row(a, r, chunk, tokens);
  if (k == 0) return;
  const T* row = logits + static_cast<int64_t>(a.logit_row[r]) * n;
  const int c0 = chunk * chunk_len, c1 = min(c0 + chunk_len, n);
  const int n_sub = (c1 - c0 + kChunk - 1) / kChunk;
  T* ring = reinterpret_cast<T*>(dyn + static_cast<size_t>(n_chunks > 1 ? n_chunks : 0) * kMaxFastK * sizeof(uint2));
  auto copied = [&](int i) { return (min(kChunk, c1 - c0 - i * kChunk)) & ~(kV - 1); };  // whole runs of sub-chunk i
  auto issue = [&](int i) {  // thread 0: sub-chunk i into its stage
    uint64_t* bar = &full[i % kStages];
    const unsigned bytes = static_cast<unsigned>(copied(i) * sizeof(T));
    mbar_expect_bytes(bar, bytes);
    if (bytes) bulk_copy(ring + (i % kStages) * kChunk, row + c0 + i * kChunk, bytes, bar);
  };
  if (tid == 0) {
    for (int i = 0; i < kStages; ++i) mbar_init(&full[i]);
    for (int i = 0; i < min(kStages, n_sub); ++i) issue(i);
  }
  __syncthreads();
  int m = 0;
  for (int i = 0; i < n_sub; ++i) {
    const int s0 = c0 + i * kChunk, s1 = min(s0 + kChunk, c1), in_ring = copied(i);
    const T* stage = ring + (i % kStages) * kChunk;
    mbar_wait(&full[i % kStages], (i / kStages) & 1);
    uint32_t keys[kPer];
    subchunk_keys(row, s0, s1, stage, in_ring, keys);
    auto each_logit = [&](auto f) {
#pragma unroll
      for (int j = 0; j < kPer; ++j) f(keys[j], element_id(s0, j));
    };
    m = add_subchunk(each_logit, k, m, sm);  // its barriers come after every thread has read the stage
    if (tid == 0 && i + kStages < n_sub) {
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // those reads before the copy's writes
      issue(i + kStages);
    }
  }
  finish_row(a, r, chunk, n_chunks, k, m, cand, arrived, tokens, sm);
}

// Dynamic shared memory beyond 48 KB less the kernel's static TopSmem (and
// barriers: the 1 KB margin) needs the kernel's opt-in.
template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes + sizeof(TopSmem) + 1024 > 48 * 1024)
    KF_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <typename T>
void launch_topk(bool long_chunks, const T* logits, int n, const SampleRows& a, int n_chunks, int chunk_len,
                 uint2* cand, unsigned* arrived, int32_t* tokens, dim3 grid, cudaStream_t st) {
  const size_t lists = n_chunks > 1 ? static_cast<size_t>(n_chunks) * kMaxFastK * sizeof(uint2) : 0;
  if (!long_chunks) {
    allow_dynamic_smem(topk_kernel<T>, lists);
    topk_kernel<<<grid, kTopThreads, lists, st>>>(logits, n, a, n_chunks, chunk_len, cand, arrived, tokens);
    return;
  }
  const size_t smem = lists + static_cast<size_t>(kRingStages<T>) * kChunk * sizeof(T);
  allow_dynamic_smem(topk_long_kernel<T>, smem);
  topk_long_kernel<<<grid, kTopThreads, smem, st>>>(logits, n, a, n_chunks, chunk_len, cand, arrived, tokens);
}

}  // namespace

int64_t sample_scratch_words(int rows, int vocab) {
  return static_cast<int64_t>(rows) * ((vocab + kChunk - 1) / kChunk) * kMaxFastK * 2;  // a (key, id) per candidate
}

void sample(const void* logits, bool bf16_logits, int rows, int vocab, const SampleRows& a, int32_t* tokens,
            uint32_t* scratch, uint32_t* arrived, int num_sms, cudaStream_t st, int sub_chunks) {
  KF_CHECK(vocab > 0 && vocab <= kMaxVocab, "cuda sample: vocab {} outside [1, {}]", vocab, kMaxVocab);
  KF_CHECK(rows <= 65535, "cuda sample: {} rows (at most 65535)", rows);
  KF_CHECK(sub_chunks >= 0, "cuda sample: {} sub-chunks a block", sub_chunks);
  if (rows <= 0) return;
  // Chunks a row: one per kChunk logits while the grid has at most
  // kTopBlocks blocks (topk_kernel). With more rows, rows of 16-byte
  // multiples take topk_long_kernel, in as few chunks a row as keep one wave
  // of its blocks (4 an SM) on the GPU: its first sub-chunk (select_topk)
  // costs a block more than the others do. On the H200 (`kinfer bench sample`,
  // docs/cuda.md): B64 x 151,936 39.4 us by topk_kernel against 42.1-51.7 by
  // long chunks; B128 66.4 against 60.0 in 4 chunks a row (74.1 in 8); B1024
  // x 49,152 158.5 against 116.6 in whole rows (177.8 in 4). Chunks of equal
  // length (a multiple of kV, at most sub * kChunk), so that every thread of
  // a block has logits.
  const int n_sub = (vocab + kChunk - 1) / kChunk;
  constexpr int64_t kTopBlocks = 4096;
  const bool aligned =
      static_cast<int64_t>(vocab) * (bf16_logits ? 2 : 4) % 16 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0;
  int sub = 1;
  if (sub_chunks > 0) {
    sub = sub_chunks;
  } else if (static_cast<int64_t>(rows) * n_sub > kTopBlocks) {
    const int per_row = std::max(1, 4 * num_sms / rows);  // chunks a row in one wave
    sub = (n_sub + per_row - 1) / per_row;
  }
  sub = std::min(sub, n_sub);
  const bool long_chunks = sub > 1 && aligned;
  if (!long_chunks) sub = 1;
  const int n_chunks = (n_sub + sub - 1) / sub;
  const int chunk_len = ((vocab + n_chunks - 1) / n_chunks + kV - 1) / kV * kV;
  uint2* cand = reinterpret_cast<uint2*>(scratch);
  // Small top-k (the Qwen3 defaults), greedy and forced rows: topk_kernel;
  // the other rows: sample_kernel. Each kernel's blocks skip the other's rows.
  const dim3 grid(n_chunks, rows);
  if (bf16_logits)
    launch_topk(long_chunks, static_cast<const bf16_t*>(logits), vocab, a, n_chunks, chunk_len, cand, arrived, tokens,
                grid, st);
  else
    launch_topk(long_chunks, static_cast<const float*>(logits), vocab, a, n_chunks, chunk_len, cand, arrived, tokens,
                grid, st);
  check_launch("sample top-k");
  if (bf16_logits)
    sample_kernel<<<rows, kThreads, 0, st>>>(static_cast<const bf16_t*>(logits), vocab, a, tokens);
  else
    sample_kernel<<<rows, kThreads, 0, st>>>(static_cast<const float*>(logits), vocab, a, tokens);
  check_launch("sample");
}

}  // namespace kf::cuda

// Backend::token_logprobs on the GPU: one block per entry, no allocation, one
// download of [m, k+1] values and ids instead of m vocabulary-sized rows.
// Per entry (a logits row and a target token):
//   1. one pass over the row: the block max, and each thread's own top k
//      (k <= 20) of the ids it reads, kept sorted by (value desc, id asc);
//   2. a second pass: the sum of exp(l - max) -> lse = max + log(sum);
//   3. the target's l - lse (a negative target names a token sampled in this
//      step: sampled[-t-1]);
//   4. k rounds of a block argmax over the threads' list heads (the winner
//      pops its head): the row's top k in (value desc, id asc) order.
// The reference is CpuBackend::token_logprobs (double log-sum-exp; here fp32
// with a fixed reduction order, so the same inputs give the same bits).
#include <cfloat>
#include <climits>
#include <cmath>

#include "backend/cuda/common.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxK = 20;  // Backend::kMaxTopLogprobs

__device__ __forceinline__ float load(const float* row, int i) { return row[i]; }
__device__ __forceinline__ float load(const bf16_t* row, int i) { return bf(row[i]); }

// The order of the top list: larger value first, then lower id. NaN is never better.
__device__ __forceinline__ bool better(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

// Every lane gets the best valid (v, i) of the warp.
__device__ __forceinline__ void warp_best(float& v, int& i, int& ok) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
    const int i2 = __shfl_xor_sync(0xffffffffu, i, o);
    const int ok2 = __shfl_xor_sync(0xffffffffu, ok, o);
    if (ok2 && (!ok || better(v2, i2, v, i))) {
      v = v2;
      i = i2;
      ok = 1;
    }
  }
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) logprobs_kernel(const T* __restrict__ logits, int vocab,
                                                             const int32_t* __restrict__ rows,
                                                             const int32_t* __restrict__ targets,
                                                             const int32_t* __restrict__ sampled, int k,
                                                             float* __restrict__ values, int32_t* __restrict__ ids) {
  __shared__ float s_f[kWarps];
  __shared__ int s_i[kWarps], s_ok[kWarps];
  __shared__ float s_best_v;
  __shared__ int s_best_i, s_best_ok;
  const int e = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* row = logits + static_cast<int64_t>(rows[e]) * vocab;

  // 1. max and this thread's top k (its ids ascend, so equal values keep the lower id first).
  float lv[kMaxK];
  int li[kMaxK];
  int have = 0;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = load(row, i);
    mx = fmaxf(mx, x);
    if (k == 0 || (have == k && !(x > lv[k - 1]))) continue;
    int at = have < k ? have++ : k - 1;
    for (; at > 0 && x > lv[at - 1]; --at) {
      lv[at] = lv[at - 1];
      li[at] = li[at - 1];
    }
    lv[at] = x;
    li[at] = i;
  }
  mx = warp_max(mx);
  if (lane == 0) s_f[warp] = mx;
  __syncthreads();
  mx = s_f[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) mx = fmaxf(mx, s_f[w]);
  __syncthreads();

  // 2. log-sum-exp, reduced in a fixed order.
  float sum = 0.f;
  for (int i = threadIdx.x; i < vocab; i += kThreads) sum += __expf(load(row, i) - mx);
  sum = warp_sum(sum);
  if (lane == 0) s_f[warp] = sum;
  __syncthreads();
  sum = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) sum += s_f[w];
  const float lse = mx + logf(sum);

  // 3. the target.
  float* val = values + static_cast<int64_t>(e) * (k + 1);
  int32_t* id = ids + static_cast<int64_t>(e) * (k + 1);
  if (threadIdx.x == 0) {
    int t = targets[e];
    if (t < 0) t = sampled[-t - 1];
    const bool in = t >= 0 && t < vocab;
    val[0] = in ? load(row, t) - lse : NAN;
    id[0] = t;
  }

  // 4. k rounds of a block argmax over the list heads.
  int pos = 0;
  for (int r = 0; r < k; ++r) {
    float v = pos < have ? lv[pos] : -INFINITY;
    int i = pos < have ? li[pos] : INT_MAX;
    int ok = pos < have ? 1 : 0;
    warp_best(v, i, ok);
    __syncthreads();  // the previous round's readers are done with s_*
    if (lane == 0) {
      s_f[warp] = v;
      s_i[warp] = i;
      s_ok[warp] = ok;
    }
    __syncthreads();
    if (warp == 0) {
      v = lane < kWarps ? s_f[lane] : -INFINITY;
      i = lane < kWarps ? s_i[lane] : INT_MAX;
      ok = lane < kWarps ? s_ok[lane] : 0;
      warp_best(v, i, ok);
      if (lane == 0) {
        s_best_v = v;
        s_best_i = i;
        s_best_ok = ok;
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      val[r + 1] = s_best_ok ? s_best_v - lse : -INFINITY;
      id[r + 1] = s_best_ok ? s_best_i : -1;
    }
    if (s_best_ok && pos < have && li[pos] == s_best_i) ++pos;  // ids are unique: one thread pops
  }
}

}  // namespace

void token_logprobs(const void* logits, bool bf16_logits, int vocab, const int32_t* rows, const int32_t* targets,
                    const int32_t* sampled, int m, int k, float* values, int32_t* ids, cudaStream_t st) {
  KF_CHECK(k >= 0 && k <= kMaxK, "token_logprobs: k {} outside [0, {}]", k, kMaxK);
  if (m <= 0) return;
  if (bf16_logits)
    logprobs_kernel<<<m, kThreads, 0, st>>>(static_cast<const bf16_t*>(logits), vocab, rows, targets, sampled, k,
                                            values, ids);
  else
    logprobs_kernel<<<m, kThreads, 0, st>>>(static_cast<const float*>(logits), vocab, rows, targets, sampled, k,
                                            values, ids);
  check_launch("token_logprobs");
}

}  // namespace kf::cuda

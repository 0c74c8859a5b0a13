// Token-level kernels of the CUDA backend: the step's input tokens (resolved
// from the previous step's samples, recorded in the token pool), penalties
// over a sequence's history read back from the token pool, and row copies
// (the token pool's copy-on-write).
#include "backend/cuda/common.cuh"
#include "util/error.h"

namespace kf::cuda {
namespace {

constexpr int kPenaltyThreads = 512;

__global__ void resolve_tokens_kernel(int32_t* ids, const int32_t* prev, const int32_t* slots, int n,
                                      int32_t* pool, int64_t pool_slots) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int32_t id = ids[i];
  if (id < 0) id = prev[-static_cast<int64_t>(id) - 1];
  ids[i] = id;
  const int32_t slot = slots[i];
  if (slot >= 0 && slot < pool_slots) pool[slot] = id;
}

// One block per logits row, as kf::Sampler::apply_penalties: the repetition
// penalty on every distinct token of the history, then presence on every
// distinct generated token (both through bitmaps of the vocabulary), then
// frequency once per generated occurrence. The frequency subtractions are
// atomic but all add the same -f, so the result is the sequential one.
__global__ void __launch_bounds__(kPenaltyThreads) penalty_kernel(PenaltyArgs a, int words) {
  const int r = blockIdx.x;
  const float rep = a.repetition[r], pres = a.presence[r], freq = a.frequency[r];
  if (rep == 1.f && pres == 0.f && freq == 0.f) return;
  uint32_t* seen = a.bits + static_cast<int64_t>(r) * 2 * words;  // [words] history, then [words] generated
  uint32_t* seen_gen = seen + words;
  for (int w = threadIdx.x; w < 2 * words; w += blockDim.x) seen[w] = 0u;
  __syncthreads();
  const int s = a.seq[r];
  const int T = a.ctx_len[s], prompt_len = min(a.prompt_len[r], T), P = a.page_size;
  const int32_t* pt = a.page_table + static_cast<int64_t>(s) * a.max_pages;
  auto token_at = [&](int t) { return a.token_pool[static_cast<int64_t>(pt[t / P]) * P + t % P]; };
  for (int t = threadIdx.x; t < T; t += blockDim.x) {
    const int tok = token_at(t);
    if (tok < 0 || tok >= a.vocab) continue;
    atomicOr(&seen[tok >> 5], 1u << (tok & 31));
    if (t >= prompt_len) atomicOr(&seen_gen[tok >> 5], 1u << (tok & 31));
  }
  __syncthreads();
  float* row = a.logits + static_cast<int64_t>(r) * a.vocab;
  for (int w = threadIdx.x; w < words; w += blockDim.x) {
    uint32_t bits = seen[w];
    const uint32_t gen = seen_gen[w];
    while (bits) {
      const int b = __ffs(bits) - 1;
      bits &= bits - 1;
      const int tok = w * 32 + b;
      float l = row[tok];
      if (rep != 1.f) l = l > 0.f ? l / rep : l * rep;
      if (pres != 0.f && ((gen >> b) & 1u)) l -= pres;
      row[tok] = l;
    }
  }
  if (freq == 0.f) return;
  __syncthreads();
  for (int t = prompt_len + threadIdx.x; t < T; t += blockDim.x) {
    const int tok = token_at(t);
    if (tok >= 0 && tok < a.vocab) atomicAdd(&row[tok], -freq);
  }
}

__global__ void copy_rows_kernel(char* base, int64_t row_bytes, const int32_t* src, const int32_t* dst) {
  const int64_t s = src[blockIdx.x], d = dst[blockIdx.x];
  if (s == d) return;
  const char* from = base + s * row_bytes;
  char* to = base + d * row_bytes;
  if (row_bytes % 4 == 0) {
    for (int64_t i = threadIdx.x; i < row_bytes / 4; i += blockDim.x)
      reinterpret_cast<uint32_t*>(to)[i] = reinterpret_cast<const uint32_t*>(from)[i];
  } else {
    for (int64_t i = threadIdx.x; i < row_bytes; i += blockDim.x) to[i] = from[i];
  }
}

}  // namespace

int64_t penalty_scratch_words(int rows, int vocab) { return static_cast<int64_t>(rows) * 2 * ((vocab + 31) / 32); }

void apply_penalties(const PenaltyArgs& a, cudaStream_t st) {
  if (a.rows <= 0) return;
  penalty_kernel<<<a.rows, kPenaltyThreads, 0, st>>>(a, (a.vocab + 31) / 32);
  check_launch("apply_penalties");
}

void resolve_tokens(int32_t* ids, const int32_t* prev, const int32_t* slots, int n, int32_t* token_pool,
                    int64_t pool_slots, cudaStream_t st) {
  if (n <= 0) return;
  resolve_tokens_kernel<<<blocks_for(n, 256), 256, 0, st>>>(ids, prev, slots, n, token_pool, pool_slots);
  check_launch("resolve_tokens");
}

void copy_rows(void* base, int64_t row_bytes, const int32_t* src, const int32_t* dst, int n, cudaStream_t st) {
  if (n <= 0) return;
  copy_rows_kernel<<<n, 128, 0, st>>>(static_cast<char*>(base), row_bytes, src, dst);
  check_launch("copy_rows");
}

}  // namespace kf::cuda

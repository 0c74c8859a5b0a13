// CPU reference for the paged KV cache ops of the Backend interface:
// kv_write, kv_copy_pages and attention (F32), with exactly the semantics of
// backend/backend.h and DESIGN.md. The CUDA kernels are checked against these.
//
// Determinism: a query row's output depends only on its own query, the keys
// it reads and their order. Keys are visited page by page in position order,
// in chunks that never cross a page, so the same row gives bit-identical
// output whether it is computed in a prefill chunk or as a decode row, and
// whatever else is in the batch or on which thread it runs.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "attn/policy.h"
#include "backend/backend.h"

namespace kf {

// Runs fn(i) for every i in [0, n), possibly in parallel; empty = serial.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t)>& fn)>;

// Scratch reused across calls (grows, never shrinks), so steady-state decode
// does not allocate. One per backend; not shared by concurrent calls.
struct CpuAttnWorkspace {
  std::vector<attn::Span> spans;   // [n_seqs * n_kv_heads * span_cap]
  std::vector<int> span_counts;    // [n_seqs * n_kv_heads]
  std::vector<int> ints;           // selection scratch
  std::vector<float> floats;       // scores scratch
  std::vector<uint8_t> keep;       // topk token mask scratch
  std::vector<int16_t> q16;        // q̄ in 16 bits against int8 summaries [n_seqs * n_kv_heads * head_dim]
};

// k, v [n, n_kv_heads, head_dim] F32 -> slots [n] I32 (slot = page*page_size + offset).
// Pages whose last offset is written get summary = mean of their page_size keys.
void cpu_kv_write(const KvLayer& kv, const Tensor& k, const Tensor& v, const Tensor& slots);
// Whole pages src[i] -> dst[i] (K, V, summary). src, dst [n] I32.
void cpu_kv_copy_pages(const KvLayer& kv, const Tensor& src, const Tensor& dst);
// Paged attention, see Backend::attention. For a sequence with several rows
// (prefill) `sel` gets every page of its cache.
void cpu_attention(const Tensor& q, const KvLayer& kv, const AttnBatch& batch,
                   const AttnPolicy& policy, float scale, const Tensor& out, PageSelection* sel,
                   CpuAttnWorkspace& ws, const ParallelFor& parallel_for = {});

}  // namespace kf

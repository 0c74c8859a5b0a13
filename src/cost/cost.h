// The Kinetics cost model (arXiv 2506.05333, section 3): the price of
// generating N samples of L tokens after a shared prompt of Lin tokens, in
// compute (FLOPs), memory traffic (bytes) and eFLOPs = compute + memory * I,
// where I is the hardware's arithmetic intensity (FLOP per byte).
//
// Symbols (docs/cost-model.md has the derivations):
//   P   parameters (Kinetics convention), Hq / Hkv query / KV heads,
//   D   head_dim * layers, B   KV budget in tokens per decode step.
//   dense:     compute = N(2PL + 2(2Lin+L)L Hq D)
//              memory  = 2(2Lin + N L) L Hkv D          (prompt KV shared)
//   sparse:    kv = B L - 1/2 max(0, B-Lin)^2, or Lin L + L^2/2 when Lin+L <= B
//              compute = N(2PL + 4 kv Hq D), memory = 4 N kv Hkv D
//   blocktopk: sparse with B = local + page * topk, plus page scoring:
//              compute += N floor((2Lin+L)/page) L Hq D
//              memory  += floor((2Lin+N L)/page) L Hkv D
// Parameter memory traffic is not counted (amortised over a batch, as in the paper).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "attn/policy.h"
#include "model/config.h"

namespace kf::cost {

// Which of the paper's formulas prices a run: dense, zero-overhead sparse
// with a KV budget, or block top-k (sparse plus the page-scoring search).
enum class Formula { Dense, Sparse, BlockTopk };

const char* formula_name(Formula kind);
// "dense", "sparse", "blocktopk"; throws kf::Error listing them otherwise.
Formula parse_formula(std::string_view name);

// What the cost model needs from a model.
struct ModelShape {
  std::string name;
  double params = 0;     // P
  int n_heads = 0;       // Hq
  int n_kv_heads = 0;    // Hkv
  int head_dim = 0;
  int n_layers = 0;
  double d() const { return double(head_dim) * n_layers; }  // D
};

ModelShape shape_of(const ModelConfig& config, double params);

struct AttnSpec {
  Formula formula = Formula::Dense;
  int64_t budget = 0;        // sparse: KV tokens read per step
  int64_t local_tokens = 0;  // blocktopk: tokens always read (sink + local window)
  int64_t page_size = 16;    // blocktopk: P_s
  int64_t topk_pages = 0;    // blocktopk: K
  bool int8_summaries = false;  // blocktopk: page summaries as int8 codes + a float scale (--summary-dtype int8)
  // B: `budget` for sparse, local_tokens + page_size * topk_pages for blocktopk, 0 for dense.
  int64_t kv_budget() const;
  std::string label() const;  // "dense", "sparse B=1024", "blocktopk T=80 P=16 K=64"
  void validate() const;      // throws kf::Error on non-positive sizes
};

// The engine's attention policy in the cost model's terms: blocktopk as
// itself (local = the sink page + local_pages pages), local and the topk
// oracle as sparse with their per-step KV budget in tokens, dense as dense.
AttnSpec spec_of(const AttnPolicy& policy, int page_size, bool int8_summaries = false);

// One price, split into its parts. All parts are totals for the N samples.
struct Cost {
  double param_flops = 0;    // 2PL per sample
  double attn_flops = 0;     // attention over the KV read
  double search_flops = 0;   // blocktopk page scoring
  double attn_bytes = 0;     // KV reads
  double search_bytes = 0;   // page summary reads
  double intensity = 0;      // I, FLOP per byte

  double compute() const { return param_flops + attn_flops + search_flops; }
  double memory() const { return attn_bytes + search_bytes; }
  double efflops() const { return compute() + memory() * intensity; }
};

// Tokens of KV read over L steps of decoding with a budget of B after Lin
// prompt tokens (the sum the sparse formulas multiply).
double sparse_kv_tokens(int64_t budget, int64_t prompt_len, int64_t gen_len);

// The price of N samples of gen_len tokens each after a shared prompt.
Cost cost(const ModelShape& model, const AttnSpec& attn, double intensity, int64_t prompt_len,
          int64_t gen_len, int64_t n_samples);

// The expected price when a sample's length is drawn from `gen_lens`: every
// part is the mean of the per-length costs (as the paper prices a problem from
// its samples' real lengths). Throws on an empty list.
Cost expected_cost(const ModelShape& model, const AttnSpec& attn, double intensity, int64_t prompt_len,
                   std::span<const int64_t> gen_lens, int64_t n_samples);

// The price of one engine request: N = gen_lens.size() samples of a model
// (parameters in the Kinetics convention) under an engine policy, priced by
// their real lengths (expected_cost). An empty list costs nothing.
Cost price_samples(const ModelConfig& model, const AttnPolicy& policy, int page_size, double intensity,
                   int64_t prompt_len, std::span<const int64_t> gen_lens, bool int8_summaries = false);

// {"compute", "memory", "intensity", "efflops", "breakdown": {...}, "tera": {...}}
nlohmann::json cost_json(const Cost& c);

}  // namespace kf::cost

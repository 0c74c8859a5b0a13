#include "cost/cost.h"

#include <algorithm>

#include "util/error.h"

namespace kf::cost {

const char* formula_name(Formula kind) {
  switch (kind) {
    case Formula::Sparse: return "sparse";
    case Formula::BlockTopk: return "blocktopk";
    default: return "dense";
  }
}

Formula parse_formula(std::string_view name) {
  if (name == "dense") return Formula::Dense;
  if (name == "sparse") return Formula::Sparse;
  if (name == "blocktopk") return Formula::BlockTopk;
  fail("unknown attention '{}' for the cost model (known: dense, sparse, blocktopk)", name);
}

ModelShape shape_of(const ModelConfig& config, double params) {
  ModelShape s;
  s.name = config.name;
  s.params = params;
  s.n_heads = config.n_heads;
  s.n_kv_heads = config.n_kv_heads;
  s.head_dim = config.head_dim;
  s.n_layers = config.n_layers;
  return s;
}

int64_t AttnSpec::kv_budget() const {
  switch (formula) {
    case Formula::Sparse: return budget;
    case Formula::BlockTopk: return local_tokens + page_size * topk_pages;
    default: return 0;
  }
}

std::string AttnSpec::label() const {
  switch (formula) {
    case Formula::Sparse: return fmt::format("sparse B={}", budget);
    case Formula::BlockTopk:
      return fmt::format("blocktopk T={} P={} K={}{}", local_tokens, page_size, topk_pages,
                         int8_summaries ? " int8" : "");
    default: return "dense";
  }
}

AttnSpec spec_of(const AttnPolicy& policy, int page_size, bool int8_summaries) {
  const int64_t P = page_size, window = P * (1 + policy.local_pages);
  AttnSpec spec;
  switch (policy.kind) {
    case AttnKind::Dense: spec.formula = Formula::Dense; break;
    case AttnKind::Local:
      spec.formula = Formula::Sparse;
      spec.budget = window;
      break;
    case AttnKind::TopK:
      spec.formula = Formula::Sparse;
      spec.budget = window + P * policy.topk_pages;
      break;
    case AttnKind::BlockTopK:
      spec.formula = Formula::BlockTopk;
      spec.local_tokens = window;
      spec.page_size = P;
      spec.topk_pages = policy.topk_pages;
      spec.int8_summaries = int8_summaries;
      break;
  }
  return spec;
}

void AttnSpec::validate() const {
  KF_CHECK(!int8_summaries || formula == Formula::BlockTopk, "int8 page summaries apply to blocktopk only");
  if (formula == Formula::Sparse) KF_CHECK(budget > 0, "sparse attention needs a KV budget > 0 (got {})", budget);
  if (formula == Formula::BlockTopk) {
    KF_CHECK(page_size > 0, "blocktopk needs a page size > 0 (got {})", page_size);
    KF_CHECK(local_tokens >= 0 && topk_pages >= 0, "blocktopk needs local tokens and top-k pages >= 0 (got {}, {})",
             local_tokens, topk_pages);
    KF_CHECK(kv_budget() > 0, "blocktopk reads no tokens (local 0 and top-k 0)");
  }
}

double sparse_kv_tokens(int64_t budget, int64_t prompt_len, int64_t gen_len) {
  const double b = double(budget), lin = double(prompt_len), l = double(gen_len);
  // Everything fits in the budget: the step reading Lin+t tokens is dense.
  // (The closed form below would go negative for short generations.)
  if (prompt_len + gen_len <= budget) return lin * l + 0.5 * l * l;
  const double grow = std::max(0.0, b - lin);  // steps before the cache reaches B
  return b * l - 0.5 * grow * grow;
}

Cost cost(const ModelShape& m, const AttnSpec& attn, double intensity, int64_t prompt_len, int64_t gen_len,
          int64_t n_samples) {
  KF_CHECK(prompt_len >= 0, "prompt length must be >= 0 (got {})", prompt_len);
  KF_CHECK(gen_len >= 0, "generation length must be >= 0 (got {})", gen_len);
  KF_CHECK(n_samples >= 1, "number of samples must be >= 1 (got {})", n_samples);
  KF_CHECK(intensity >= 0, "arithmetic intensity must be >= 0 (got {})", intensity);
  attn.validate();
  const double n = double(n_samples), lin = double(prompt_len), l = double(gen_len);
  const double hq_d = m.n_heads * m.d(), hkv_d = m.n_kv_heads * m.d();

  Cost c;
  c.intensity = intensity;
  c.param_flops = n * 2.0 * m.params * l;
  if (attn.formula == Formula::Dense) {
    c.attn_flops = n * 2.0 * (2.0 * lin + l) * l * hq_d;
    c.attn_bytes = 2.0 * (2.0 * lin + n * l) * l * hkv_d;  // the prompt's KV is read once for all N
    return c;
  }
  const double kv = sparse_kv_tokens(attn.kv_budget(), prompt_len, gen_len);
  c.attn_flops = n * 4.0 * kv * hq_d;
  c.attn_bytes = n * 4.0 * kv * hkv_d;  // no prefix sharing under sparsity (as the paper)
  if (attn.formula == Formula::BlockTopk) {
    // One page summary score per page and step; integer (floor) page counts as the paper.
    const int64_t ps = attn.page_size;
    const double pages_compute = double((2 * prompt_len + gen_len) / ps);
    const double pages_memory = double((2 * prompt_len + n_samples * gen_len) / ps);
    c.search_flops = n * pages_compute * l * hq_d;
    c.search_bytes = pages_memory * l * hkv_d;
    // The formula counts 2-byte summary elements; int8 summaries take 1 byte
    // each plus a 4-byte scale per (page, KV head): (head_dim + 4) bytes.
    if (attn.int8_summaries) c.search_bytes *= (m.head_dim + 4.0) / (2.0 * m.head_dim);
  }
  return c;
}

Cost expected_cost(const ModelShape& model, const AttnSpec& attn, double intensity, int64_t prompt_len,
                   std::span<const int64_t> gen_lens, int64_t n_samples) {
  KF_CHECK(!gen_lens.empty(), "expected cost needs at least one generation length");
  Cost sum;
  sum.intensity = intensity;
  for (int64_t l : gen_lens) {
    const Cost c = cost(model, attn, intensity, prompt_len, l, n_samples);
    sum.param_flops += c.param_flops;
    sum.attn_flops += c.attn_flops;
    sum.search_flops += c.search_flops;
    sum.attn_bytes += c.attn_bytes;
    sum.search_bytes += c.search_bytes;
  }
  const double k = double(gen_lens.size());
  sum.param_flops /= k;
  sum.attn_flops /= k;
  sum.search_flops /= k;
  sum.attn_bytes /= k;
  sum.search_bytes /= k;
  return sum;
}

nlohmann::json cost_json(const Cost& c) {
  const double t = 1e-12;
  return {{"compute", c.compute()},
          {"memory", c.memory()},
          {"intensity", c.intensity},
          {"efflops", c.efflops()},
          {"breakdown",
           {{"parameter_flops", c.param_flops},
            {"attention_flops", c.attn_flops},
            {"search_flops", c.search_flops},
            {"attention_bytes", c.attn_bytes},
            {"search_bytes", c.search_bytes}}},
          {"tera",
           {{"compute", c.compute() * t}, {"memory_efflops", c.memory() * c.intensity * t},
            {"efflops", c.efflops() * t}}}};
}

Cost price_samples(const ModelConfig& model, const AttnPolicy& policy, int page_size, double intensity,
                   int64_t prompt_len, std::span<const int64_t> gen_lens, bool int8_summaries) {
  if (gen_lens.empty()) return Cost{0, 0, 0, 0, 0, intensity};
  return expected_cost(shape_of(model, static_cast<double>(model.params_kinetics())),
                       spec_of(policy, page_size, int8_summaries), intensity, prompt_len, gen_lens,
                       static_cast<int64_t>(gen_lens.size()));
}

}  // namespace kf::cost

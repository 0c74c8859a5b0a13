// The Kinetics cost model against numbers worked out independently (by hand
// and with a few lines of Python from the DESIGN.md formulas), one test per branch.
#include <gtest/gtest.h>

#include <vector>

#include "cost/cost.h"
#include "cost/presets.h"
#include "util/error.h"

namespace kf::cost {
namespace {

// Qwen3-0.6B as the paper prices it: P 0.752e9, Hq 16, Hkv 8, D = 128 x 28.
ModelShape qwen06() {
  ModelShape m;
  m.name = "qwen3-0.6b";
  m.params = 0.752e9;
  m.n_heads = 16;
  m.n_kv_heads = 8;
  m.head_dim = 128;
  m.n_layers = 28;
  return m;
}

constexpr double kB200 = 562.5;

// Block top-k as the paper's Qwen3 runs: T 80 (sink + 4 local pages), P 16, K 64.
AttnSpec blocktopk_80_16_64() {
  AttnSpec b;
  b.formula = Formula::BlockTopk;
  b.local_tokens = 80;
  b.page_size = 16;
  b.topk_pages = 64;
  return b;
}

void expect_rel(double got, double want, const char* what) {
  EXPECT_NEAR(got, want, std::abs(want) * 1e-12 + 1e-9) << what;
}

TEST(CostPresets, QwenShapesAndPublishedParams) {
  const std::vector<std::string> names = model_preset_names();
  ASSERT_EQ(names, (std::vector<std::string>{"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b",
                                             "qwen3-32b"}));
  const double published[] = {0.752e9, 2.03e9, 4.02e9, 8.19e9, 14.77e9, 32.76e9};
  for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(*preset_params(names[i]), published[i]) << names[i];

  const ModelConfig c8 = preset_config("qwen3-8b");
  EXPECT_EQ(c8.n_layers, 36);
  EXPECT_EQ(c8.hidden_size, 4096);
  EXPECT_EQ(c8.n_heads, 32);
  EXPECT_EQ(c8.n_kv_heads, 8);
  EXPECT_EQ(c8.head_dim, 128);
  EXPECT_EQ(c8.intermediate_size, 12288);
  EXPECT_EQ(c8.vocab_size, 151936);
  EXPECT_FALSE(c8.tied_embeddings);
  EXPECT_TRUE(preset_config("qwen3-4b").tied_embeddings);
  EXPECT_EQ(preset_config("qwen3-32b").n_layers, 64);
  EXPECT_EQ(preset_config("qwen3-32b").n_heads, 64);
  EXPECT_EQ(preset_config("qwen3-14b").intermediate_size, 17408);
}

TEST(CostPresets, ShapesReproduceThePaperCounts) {
  // The shapes are right when counting their tensors gives the paper's P
  // (embedding and lm_head both counted). The paper's 4B figure is its tied count.
  for (const ModelPreset& p : model_presets()) {
    const double counted = p.name == "qwen3-4b" ? double(p.config.params_plain()) : double(p.config.params_kinetics());
    EXPECT_NEAR(counted / p.params, 1.0, 0.003) << p.name << " counted " << counted;
    EXPECT_NO_THROW(p.config.validate(p.name));
  }
}

TEST(CostPresets, NameMatching) {
  EXPECT_TRUE(find_model_preset("Qwen/Qwen3-0.6B").has_value());
  EXPECT_TRUE(find_model_preset("QWEN3-1.7B").has_value());
  EXPECT_TRUE(find_model_preset("qwen3-1-7b").has_value());
  EXPECT_FALSE(find_model_preset("qwen3-7b").has_value());
  EXPECT_EQ(detect_model_preset("aime24_qwen3-1-7b_blocktopk.jsonl")->name, "qwen3-1.7b");
  EXPECT_EQ(detect_model_preset("results/Qwen3-14B/aime24.jsonl")->name, "qwen3-14b");
  EXPECT_EQ(detect_model_preset("/models/Qwen3-4B-GGUF")->name, "qwen3-4b");
  EXPECT_FALSE(detect_model_preset("smollm2-135m").has_value());
}

TEST(CostPresets, Hardware) {
  EXPECT_EQ(*hardware_intensity("b200"), 562.5);
  EXPECT_EQ(*hardware_intensity("H200"), 206.0);
  EXPECT_EQ(*hardware_intensity("h100"), 295.0);
  EXPECT_FALSE(hardware_intensity("a100").has_value());
}

TEST(Cost, TinyDenseByHand) {
  // P 1000, Hq 2, Hkv 1, head_dim 2, 1 layer (D 2); Lin 1, L 2, N 1, I 10:
  // compute = 2*1000*2 + 2*(2*1+2)*2*2*2 = 4000 + 64; memory = 2*(2*1+1*2)*2*1*2 = 32.
  ModelShape m{"tiny", 1000, 2, 1, 2, 1};
  const Cost c = cost(m, AttnSpec{}, 10, 1, 2, 1);
  EXPECT_EQ(c.param_flops, 4000);
  EXPECT_EQ(c.attn_flops, 64);
  EXPECT_EQ(c.compute(), 4064);
  EXPECT_EQ(c.memory(), 32);
  EXPECT_EQ(c.efflops(), 4064 + 320);
  // N 3 shares the prompt: memory = 2*(2*1 + 3*2)*2*1*2 = 64 (not 3 x 32).
  EXPECT_EQ(cost(m, AttnSpec{}, 10, 1, 2, 3).memory(), 64);
}

TEST(Cost, DenseQwen) {
  const Cost c = cost(qwen06(), AttnSpec{}, kB200, 100, 1000, 4);
  expect_rel(c.compute(), 6566502400000.0, "compute");
  expect_rel(c.memory(), 240844800000.0, "memory");
  expect_rel(c.efflops(), 142041702400000.0, "efflops");
  expect_rel(c.param_flops, 4 * 2 * 0.752e9 * 1000, "param part");
  EXPECT_EQ(c.search_flops, 0);
}

TEST(Cost, SparseKvTokens) {
  EXPECT_EQ(sparse_kv_tokens(1024, 100, 200), 40000.0);      // Lin+L <= B: dense count Lin L + L^2/2
  EXPECT_EQ(sparse_kv_tokens(1024, 100, 5000), 4693112.0);   // B L - (B-Lin)^2/2
  EXPECT_EQ(sparse_kv_tokens(1024, 3000, 5000), 5120000.0);  // B < Lin: B L
  EXPECT_EQ(sparse_kv_tokens(1024, 100, 924), 100 * 924 + 0.5 * 924 * 924);  // boundary: both forms agree
  EXPECT_EQ(sparse_kv_tokens(1024, 100, 924), 1024.0 * 924 - 0.5 * 924 * 924);
  // The paper code's closed form goes negative here; ours does not.
  EXPECT_GT(sparse_kv_tokens(4096, 0, 10), 0);
}

TEST(Cost, SparseWithinBudgetEqualsDense) {
  AttnSpec s;
  s.formula = Formula::Sparse;
  s.budget = 1024;
  const Cost c = cost(qwen06(), s, kB200, 100, 200, 1);
  expect_rel(c.compute(), 309975040000.0, "compute");
  expect_rel(c.memory(), 4587520000.0, "memory");
  const Cost d = cost(qwen06(), AttnSpec{}, kB200, 100, 200, 1);
  expect_rel(c.efflops(), d.efflops(), "equals dense for one sample");
}

TEST(Cost, SparseBeyondBudget) {
  AttnSpec s;
  s.formula = Formula::Sparse;
  s.budget = 1024;
  const Cost c = cost(qwen06(), s, kB200, 100, 5000, 2);
  expect_rel(c.compute(), 17192974516224.0, "compute");
  expect_rel(c.memory(), 1076487258112.0, "memory");
  expect_rel(c.efflops(), 622717057204224.0, "efflops");
  // With the paper code's "+" sign memory would be 4*2*(1024*5000 + 924^2/2)*8*3584.
  EXPECT_LT(c.memory(), 4.0 * 2 * (1024.0 * 5000 + 0.5 * 924 * 924) * 8 * 3584);

  const Cost long_prompt = cost(qwen06(), s, kB200, 3000, 5000, 2);
  expect_rel(long_prompt.compute(), 17388810240000.0, "compute, B < Lin");
  expect_rel(long_prompt.memory(), 1174405120000.0, "memory, B < Lin");
}

TEST(Cost, BlockTopkFloorsTheSearchTerms) {
  AttnSpec b = blocktopk_80_16_64();
  EXPECT_EQ(b.kv_budget(), 1104);
  // Lin 100, L 1001, N 3: floor((200+1001)/16) = 75, floor((200+3*1001)/16) = 200.
  const Cost c = cost(qwen06(), b, kB200, 100, 1001, 3);
  expect_rel(c.search_flops, 3.0 * 75 * 1001 * 16 * 3584, "search compute");
  expect_rel(c.search_bytes, 200.0 * 1001 * 8 * 3584, "search memory");
  expect_rel(c.compute(), 4943061387264.0, "compute");
  expect_rel(c.memory(), 212557176832.0, "memory");
  expect_rel(c.efflops(), 124506473355264.0, "efflops");
}

// int8 page summaries: the search reads head_dim + 4 bytes per (page, KV
// head) instead of 2 x head_dim; nothing else changes.
TEST(Cost, BlockTopkInt8SummariesReadHalfTheSearchBytes) {
  AttnSpec b = blocktopk_80_16_64();
  const Cost c16 = cost(qwen06(), b, kB200, 100, 1001, 3);
  b.int8_summaries = true;
  const Cost c8 = cost(qwen06(), b, kB200, 100, 1001, 3);
  expect_rel(c8.search_bytes, 200.0 * 1001 * 8 * 28 * 132 / 2, "search memory: 132 bytes a page and head of 28 layers");
  expect_rel(c8.search_bytes, c16.search_bytes * 132.0 / 256.0, "vs bf16");
  expect_rel(c8.attn_bytes, c16.attn_bytes, "KV reads");
  expect_rel(c8.compute(), c16.compute(), "compute");
  EXPECT_EQ(b.label(), "blocktopk T=80 P=16 K=64 int8");
  AttnPolicy pol;
  pol.kind = AttnKind::BlockTopK;
  EXPECT_TRUE(spec_of(pol, 16, true).int8_summaries);
  pol.kind = AttnKind::Local;
  EXPECT_FALSE(spec_of(pol, 16, true).int8_summaries);  // only block top-k scores summaries
  AttnSpec d;
  d.int8_summaries = true;
  EXPECT_THROW(d.validate(), Error);
}

TEST(Cost, MeanOverGenerationLengths) {
  const std::vector<int64_t> lens = {1000, 3000};
  const Cost c = expected_cost(qwen06(), AttnSpec{}, kB200, 50, lens, 2);
  expect_rel(c.compute(), 7208755200000.0, "compute");
  expect_rel(c.memory(), 584908800000.0, "memory");
  expect_rel(c.efflops(), 336219955200000.0, "efflops");
  const std::vector<int64_t> one = {1000};
  expect_rel(expected_cost(qwen06(), AttnSpec{}, kB200, 50, one, 2).efflops(),
             cost(qwen06(), AttnSpec{}, kB200, 50, 1000, 2).efflops(), "one length");
  EXPECT_THROW(expected_cost(qwen06(), AttnSpec{}, kB200, 50, std::vector<int64_t>{}, 2), Error);
}

TEST(Cost, RejectsBadInput) {
  AttnSpec s;
  s.formula = Formula::Sparse;  // no budget
  EXPECT_THROW(cost(qwen06(), s, kB200, 10, 10, 1), Error);
  EXPECT_THROW(cost(qwen06(), AttnSpec{}, kB200, 10, 10, 0), Error);
  EXPECT_THROW(cost(qwen06(), AttnSpec{}, kB200, -1, 10, 1), Error);
  EXPECT_THROW(parse_formula("quest"), Error);
  AttnSpec b;
  b.formula = Formula::BlockTopk;
  b.page_size = 0;
  EXPECT_THROW(b.validate(), Error);
}

TEST(Cost, Json) {
  const Cost c = cost(qwen06(), AttnSpec{}, kB200, 100, 1000, 4);
  const nlohmann::json j = cost_json(c);
  EXPECT_DOUBLE_EQ(j["compute"].get<double>(), c.compute());
  EXPECT_DOUBLE_EQ(j["memory"].get<double>(), c.memory());
  EXPECT_DOUBLE_EQ(j["intensity"].get<double>(), 562.5);
  EXPECT_DOUBLE_EQ(j["efflops"].get<double>(), c.compute() + c.memory() * 562.5);
  EXPECT_NEAR(j["tera"]["efflops"].get<double>(), 142.0417024, 1e-9);
}

}  // namespace
}  // namespace kf::cost

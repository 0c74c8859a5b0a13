// Logits parity with HF transformers on the tiny random-weight checkpoints
// made by tools/make_model_fixtures.py (tests/fixtures/models/*): prefill of
// the whole sequence, chunked prefill and token-by-token decode must each be
// within 1e-3 of HF's fp32 logits at every position. Decode and chunked
// prefill must also equal the one-shot prefill bitwise (batch invariance).
// Where the fixture has HF's greedy continuation, greedy decoding must give
// the same ids. The *_v5 fixtures keep config.json as transformers >= 5
// writes it (RoPE only in rope_parameters).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hf_fixture.h"
#include "io/checkpoint.h"
#include "model/config_load.h"
#include "model/model.h"
#include "step_driver.h"

namespace kf {
namespace {

using test::HfFixture;
const std::string& kDir = test::kHfFixtureDir;

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

class HfParity : public ::testing::TestWithParam<const char*> {};

TEST_P(HfParity, PrefillAndDecodeMatchTransformers) {
  const std::string name = GetParam();
  const HfFixture fx = test::read_hf_fixture(name);
  auto be = make_cpu_backend(2);
  Model model = Model::load(kDir + name, *be);
  const ModelConfig& cfg = model.config();
  ASSERT_EQ(cfg.vocab_size, fx.vocab);
  const size_t n = fx.tokens.size(), vocab = fx.vocab;

  // RoPE frequencies (with llama3 scaling where configured) as HF computed them.
  const std::vector<float> inv = cfg.rope_inv_freq();
  ASSERT_EQ(inv.size(), fx.inv_freq.size());
  for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(inv[i], fx.inv_freq[i], 1e-6 * fx.inv_freq[i]) << i;

  // 1) one prefill of the whole sequence (page size 16: one full page, one partial).
  test::StepDriver full(model, *be, 1, static_cast<int>(n), 16);
  const std::vector<float> prefill = full.prefill(0, fx.tokens, true);
  ASSERT_EQ(prefill.size(), n * vocab);
  for (size_t t = 0; t < n; ++t)
    EXPECT_LE(max_abs_diff(prefill.data() + t * vocab, fx.logits.data() + t * vocab, vocab), 1e-3)
        << name << " prefill, position " << t;
  std::printf("%s: max |logit - HF| over %zu positions = %.3g\n", name.c_str(), n,
              max_abs_diff(prefill.data(), fx.logits.data(), prefill.size()));

  // 2) token-by-token decode, with page size 16 and 4 (many pages, reversed
  // in the pool). Attention visits keys page by page, so only the same page
  // size promises identical bits.
  std::vector<float> decoded;
  for (int page_size : {16, 4}) {
    test::StepDriver dec(model, *be, 1, static_cast<int>(n), page_size);
    for (size_t t = 0; t < n; ++t) {
      const std::vector<float>& l = t == 0 ? dec.prefill(0, {fx.tokens[0]}, true) : dec.decode({fx.tokens[t]});
      ASSERT_EQ(l.size(), vocab);
      EXPECT_LE(max_abs_diff(l.data(), fx.logits.data() + t * vocab, vocab), 1e-3)
          << name << " decode, page size " << page_size << ", position " << t;
      if (page_size == 16) decoded.insert(decoded.end(), l.begin(), l.end());
    }
  }

  // 3) chunked prefill (chunks of 5 rows).
  test::StepDriver chunked(model, *be, 1, static_cast<int>(n), 16, 5);
  const std::vector<float> chunks = chunked.prefill(0, fx.tokens, true);

  // A row's logits do not depend on how it was batched.
  EXPECT_EQ(0, std::memcmp(decoded.data(), prefill.data(), prefill.size() * sizeof(float)))
      << name << ": decode differs from prefill (max " << max_abs_diff(decoded.data(), prefill.data(), prefill.size())
      << ")";
  EXPECT_EQ(0, std::memcmp(chunks.data(), prefill.data(), prefill.size() * sizeof(float)))
      << name << ": chunked prefill differs from prefill";

  // 4) greedy decoding after the sequence gives HF's ids.
  if (fx.greedy.empty()) return;
  test::StepDriver gen(model, *be, 1, static_cast<int>(n + fx.greedy.size()), 16);
  std::vector<float> l = gen.prefill(0, fx.tokens, false);
  std::vector<int32_t> ids;
  while (ids.size() < fx.greedy.size()) {
    ids.push_back(static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin()));
    l = gen.decode({ids.back()});
  }
  EXPECT_EQ(ids, fx.greedy) << name << ": greedy ids differ from HF's";
}

// The *_v5 fixtures test the transformers >= 5 layout only if they have it.
TEST(HfParityFixtures, V5ConfigsHaveRopeOnlyInRopeParameters) {
  for (const char* name : {"qwen3_v5", "qwen2_v5", "llama3_v5", "llama_partial_v5", "qwen3_v5_hd128",
                           "llama3_v5_hd64"}) {
    std::ifstream in(kDir + name + "/config.json");
    ASSERT_TRUE(in.good()) << name;
    const auto j = nlohmann::json::parse(in);
    EXPECT_FALSE(j.contains("rope_theta")) << name;
    EXPECT_FALSE(j.contains("rope_scaling")) << name;
    ASSERT_TRUE(j.contains("rope_parameters")) << name;
    EXPECT_NE(j["rope_parameters"]["rope_theta"].get<double>(), 10000.0) << name;  // a default would not show
    EXPECT_NE(j["head_dim"].get<int>(), j["hidden_size"].get<int>() / j["num_attention_heads"].get<int>()) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParity,
                         ::testing::Values("qwen3_tied", "qwen2_untied", "llama3_untied", "llama_tied", "qwen3_hd128",
                                           "llama_hd64", "qwen3_v5", "qwen2_v5", "llama3_v5", "llama_partial_v5",
                                           "qwen3_v5_hd128", "llama3_v5_hd64"));

TEST(HfParityErrors, MissingTensorNamesTensorAndFile) {
  // A config that promises more layers than the safetensors holds.
  auto be = make_cpu_backend(1);
  Checkpoint ckpt = open_checkpoint(kDir + "llama_tied");
  ModelConfig cfg = load_config(ckpt);
  cfg.n_layers += 1;
  try {
    load_weights(ckpt, cfg, *be);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.layers.4."), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace kf

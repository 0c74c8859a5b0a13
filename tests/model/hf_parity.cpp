// Logits parity with HF transformers on the tiny random-weight checkpoints
// made by tools/make_model_fixtures.py (tests/fixtures/models/*): prefill of
// the whole sequence, chunked prefill and token-by-token decode must each be
// within 1e-3 of HF's fp32 logits at every position with F32 weights
// (--cpu-weights f32). The default storage of these F32 safetensors is BF16
// (BF16 kernels); its reference is the F32 path (checked against HF above)
// on the same weights rounded to bf16, also within 1e-3. Decode and chunked
// prefill must equal the one-shot prefill bitwise (batch invariance) in both.
// Where the fixture has HF's greedy continuation, greedy decoding (F32
// weights) must give the same ids. The *_v5 fixtures keep config.json as
// transformers >= 5 writes it (RoPE only in rope_parameters).
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

// The logits of every position [n, vocab] computed four ways.
struct Runs {
  std::vector<float> prefill;           // one prefill of the whole sequence (page size 16)
  std::vector<float> decode16, decode4;  // token by token, page size 16 and 4 (many pages, reversed in the pool)
  std::vector<float> chunked;           // prefill in chunks of 5 rows
};

Runs run_all(const Model& model, Backend& be, const std::vector<int>& tokens) {
  const int n = static_cast<int>(tokens.size());
  Runs r;
  test::StepDriver full(model, be, 1, n, 16);
  r.prefill = full.prefill(0, tokens, true);
  for (int page_size : {16, 4}) {
    test::StepDriver dec(model, be, 1, n, page_size);
    std::vector<float>& out = page_size == 16 ? r.decode16 : r.decode4;
    for (int t = 0; t < n; ++t) {
      const std::vector<float>& l = t == 0 ? dec.prefill(0, {tokens[0]}, true) : dec.decode({tokens[t]});
      out.insert(out.end(), l.begin(), l.end());
    }
  }
  test::StepDriver chunked(model, be, 1, n, 16, 5);
  r.chunked = chunked.prefill(0, tokens, true);
  return r;
}

// Every run within `bound` of `ref` at every position, and (attention visits
// keys page by page, so only the same page size promises identical bits)
// decode with page size 16 and chunked prefill equal to the prefill bitwise.
void expect_runs_match(const Runs& r, const std::vector<float>& ref, size_t vocab, double bound, const std::string& what) {
  ASSERT_EQ(r.prefill.size(), ref.size()) << what;
  const size_t n = ref.size() / vocab;
  for (const auto& [name, v] : {std::pair{"prefill", &r.prefill}, std::pair{"decode (page 16)", &r.decode16},
                                std::pair{"decode (page 4)", &r.decode4}, std::pair{"chunked prefill", &r.chunked}}) {
    ASSERT_EQ(v->size(), ref.size()) << what << " " << name;
    for (size_t t = 0; t < n; ++t)
      EXPECT_LE(max_abs_diff(v->data() + t * vocab, ref.data() + t * vocab, vocab), bound)
          << what << " " << name << ", position " << t;
  }
  std::printf("%s: max |logit - reference| over %zu positions = %.3g\n", what.c_str(), n,
              max_abs_diff(r.prefill.data(), ref.data(), ref.size()));
  EXPECT_EQ(0, std::memcmp(r.decode16.data(), r.prefill.data(), r.prefill.size() * sizeof(float)))
      << what << ": decode differs from prefill (max "
      << max_abs_diff(r.decode16.data(), r.prefill.data(), r.prefill.size()) << ")";
  EXPECT_EQ(0, std::memcmp(r.chunked.data(), r.prefill.data(), r.prefill.size() * sizeof(float)))
      << what << ": chunked prefill differs from prefill";
}

// Rounds an F32 weight matrix to bf16 precision in place.
void round_to_bf16(Buffer& b) {
  if (b.empty()) return;
  ASSERT_EQ(b.view().dtype, DType::F32);
  float* p = b.ptr<float>();
  for (int64_t i = 0; i < b.view().numel(); ++i) p[i] = bf16_to_f32(f32_to_bf16(p[i]));
}

class HfParity : public ::testing::TestWithParam<const char*> {};

TEST_P(HfParity, PrefillAndDecodeMatchTransformers) {
  const std::string name = GetParam();
  const HfFixture fx = test::read_hf_fixture(name);
  auto be = make_cpu_backend(2);
  const Model model = Model::load(kDir + name, *be, {}, WeightFormat::F32);
  const ModelConfig& cfg = model.config();
  ASSERT_EQ(cfg.vocab_size, fx.vocab);
  EXPECT_EQ(model.weights().matrix_dtypes(), "F32");

  // RoPE frequencies (with llama3 scaling where configured) as HF computed them.
  const std::vector<float> inv = cfg.rope_inv_freq();
  ASSERT_EQ(inv.size(), fx.inv_freq.size());
  for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(inv[i], fx.inv_freq[i], 1e-6 * fx.inv_freq[i]) << i;

  expect_runs_match(run_all(model, *be, fx.tokens), fx.logits, fx.vocab, 1e-3, name + " (F32 weights) vs HF");

  // Greedy decoding after the sequence gives HF's ids.
  if (fx.greedy.empty()) return;
  const size_t n = fx.tokens.size();
  test::StepDriver gen(model, *be, 1, static_cast<int>(n + fx.greedy.size()), 16);
  std::vector<float> l = gen.prefill(0, fx.tokens, false);
  std::vector<int32_t> ids;
  while (ids.size() < fx.greedy.size()) {
    ids.push_back(static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin()));
    l = gen.decode({ids.back()});
  }
  EXPECT_EQ(ids, fx.greedy) << name << ": greedy ids differ from HF's";
}

TEST_P(HfParity, Bf16WeightsMatchTheF32PathOnRoundedWeights) {
  const std::string name = GetParam();
  const HfFixture fx = test::read_hf_fixture(name);
  auto be = make_cpu_backend(2);
  const Model bf16 = Model::load(kDir + name, *be);  // the default storage
  EXPECT_EQ(bf16.weights().matrix_dtypes(), "BF16");

  const Checkpoint ckpt = open_checkpoint(kDir + name);
  const ModelConfig cfg = load_config(ckpt);
  Weights w = load_weights(ckpt, cfg, *be, WeightFormat::F32);
  round_to_bf16(w.embed);
  round_to_bf16(w.lm_head_own);
  for (LayerWeights& l : w.layers)
    for (Buffer* b : {&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down}) round_to_bf16(*b);
  const Model rounded(cfg, std::move(w));
  const Runs ref = run_all(rounded, *be, fx.tokens);
  expect_runs_match(run_all(bf16, *be, fx.tokens), ref.prefill, fx.vocab, 1e-3,
                    name + " (BF16 weights) vs F32 path on bf16-rounded weights");
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

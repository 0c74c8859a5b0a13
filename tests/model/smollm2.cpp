// The real model: SmolLM2-135M-Instruct (Q4_1 GGUF, the embedded default)
// greedy-completes "The capital of France is" with a continuation naming Paris.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/model.h"
#include "step_driver.h"
#include "tokenizer/tokenizer.h"

namespace kf {
namespace {

int argmax(const float* v, int n) { return static_cast<int>(std::max_element(v, v + n) - v); }

TEST(SmolLM2, GreedyCompletesCapitalOfFrance) {
  std::string path;
  try {
    path = resolve_default_model();
  } catch (const Error& e) {
    GTEST_SKIP() << "default model not installed: " << e.what();
  }
  auto be = make_cpu_backend(0);
  const auto t0 = std::chrono::steady_clock::now();
  const Model model = Model::load(path, *be);
  const ModelConfig& cfg = model.config();
  EXPECT_EQ(cfg.n_layers, 30);
  EXPECT_EQ(cfg.vocab_size, 49152);
  EXPECT_TRUE(model.weights().tied());

  // "The capital of France is" in SmolLM2's BPE vocabulary (GGUF tokenizer.ggml.tokens:
  // The, Ġcapital, Ġof, ĠFrance, Ġis); " Paris" is 7042.
  const Tokenizer tok = load_tokenizer(path);
  const std::vector<int32_t> prompt = tok.encode("The capital of France is");
  ASSERT_EQ(prompt, (std::vector<int32_t>{504, 3575, 282, 4649, 314}));
  const int kParis = 7042, kNew = 8;
  test::StepDriver run(model, *be, 1, 64);
  std::vector<float> logits = run.prefill(0, prompt, false);
  std::vector<int> out;
  for (int i = 0; i < kNew; ++i) {
    const int next = argmax(logits.data(), cfg.vocab_size);
    out.push_back(next);
    if (i + 1 < kNew) logits = run.decode({next});
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string ids;
  for (int t : out) ids += std::to_string(t) + " ";
  const std::string text = tok.decode(std::vector<int32_t>(out.begin(), out.end()));
  std::printf("greedy continuation: \"%s\" (ids %s; %.2f s incl. load)\n", text.c_str(), ids.c_str(), secs);
  EXPECT_NE(std::find(out.begin(), out.end(), kParis), out.end()) << "continuation: " << ids;
  EXPECT_NE(text.find("Paris"), std::string::npos) << text;
}

TEST(SmolLM2, GenerateCliGreedyJson) {
  try {
    resolve_default_model();
  } catch (const Error& e) {
    GTEST_SKIP() << "default model not installed: " << e.what();
  }
  const std::string cmd = std::string(KINFER_BIN) +
                          " generate --model default --prompt 'The capital of France is' --max-tokens 4 "
                          "--temp 0 --json";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t k = fread(buf, 1, sizeof buf, p)) out.append(buf, k);
  ASSERT_EQ(pclose(p), 0) << out;
  const auto j = nlohmann::json::parse(out);
  const auto& tokens = j["samples"][0]["tokens"];
  ASSERT_EQ(tokens.size(), 4u) << out;
  EXPECT_EQ(tokens[0].get<int>(), 7042) << out;  // " Paris"
  EXPECT_NE(j["samples"][0]["text"].get<std::string>().find("Paris"), std::string::npos) << out;
  EXPECT_EQ(j["samples"][0]["stop_reason"], "length");
  EXPECT_GT(j["stats"]["decode_tok_s"].get<double>(), 0.0);
}

}  // namespace
}  // namespace kf

// SmolLM2-135M-Instruct (the embedded Q4_1 GGUF) on the quantised CPU path
// against llama.cpp, an independent implementation: the fixture
// tests/fixtures/llamacpp/smollm2_greedy.json holds llama.cpp's greedy
// continuations (32 tokens) of 5 prompts, with its default flash attention
// (on for the CPU: the output summed in f16) and with flash attention off
// (f32 sums), made by tools/make_llamacpp_greedy.py.
//
// Teacher-forced on llama.cpp's tokens, at every step our greedy token must be
// llama.cpp's, or a near tie: llama.cpp's token within kNoise of our largest
// logit. Our free-running greedy text then equals llama.cpp's up to the first
// near tie. kNoise is the rounding noise between two Q8-activation
// implementations, measured, not assumed: kinfer and llama.cpp logits differ
// by 0.11 on average (both are 0.2 from the exact F32 computation on the same
// weights), and llama.cpp's own two attention paths by 0.45 on average (1.07
// at most) on these prompts; their greedy texts part in 3 of the 5 prompts, at
// top-2 gaps of 0.017 to 0.17. A tighter near-tie bound (1e-3) is below that
// noise: the test prints how many steps meet it. At least 150 of the 160
// steps must agree exactly with each reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/model.h"
#include "step_driver.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace kf {
namespace {

constexpr float kNoise = 0.5f;
constexpr int kMinExact = 150;

TEST(LlamaCppGreedy, QuantizedPathFollowsLlamaCppUpToNearTies) {
  std::string why;
  const std::string path = default_model_path(&why);
  if (path.empty()) GTEST_SKIP() << "default model not installed: " << why;
  std::ifstream in(std::string(KINFER_SOURCE_DIR) + "/tests/fixtures/llamacpp/smollm2_greedy.json");
  ASSERT_TRUE(in) << "missing fixture tests/fixtures/llamacpp/smollm2_greedy.json";
  const nlohmann::json fx = nlohmann::json::parse(in);
  if (static_cast<int64_t>(std::filesystem::file_size(path)) != fx["model_bytes"].get<int64_t>())
    GTEST_SKIP() << path << " is not the file the fixture was made with (" << fx["model"] << ")";

  auto be = make_cpu_backend(0);
  const Model model = Model::load(path, *be);
  // The GGUF's own formats, not dequantised (Q4_1x4: the same blocks, rows interleaved for the AVX2 kernels).
  std::string dtypes = model.weights().matrix_dtypes();
  for (size_t at; (at = dtypes.find("x4")) != std::string::npos;) dtypes.erase(at, 2);
  EXPECT_EQ(dtypes, "Q4_1, Q8_0");
  const Tokenizer tok = load_tokenizer(path);
  const int vocab = model.config().vocab_size;

  for (const auto& [run_name, prompts] : fx["runs"].items()) {
    int steps = 0, exact = 0, within_1e3 = 0;
    for (const auto& p : prompts) {
      const auto prompt = p["prompt_ids"].get<std::vector<int32_t>>();
      const auto ref = p["greedy_ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(tok.encode(p["prompt"].get<std::string>(), true), prompt) << "tokenizer differs on " << p["prompt"];
      test::StepDriver run(model, *be, 1, static_cast<int>(prompt.size() + ref.size()));
      std::vector<float> logits = run.prefill(0, prompt, false);
      for (size_t t = 0; t < ref.size(); ++t) {
        ASSERT_TRUE(ref[t] >= 0 && ref[t] < vocab);
        const int ours = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        const float gap = logits[ours] - logits[ref[t]];
        ++steps;
        exact += ours == ref[t];
        within_1e3 += gap <= 1e-3f;
        if (ours != ref[t])
          std::printf("%s: step %zu of %s: ours %d, llama.cpp %d: our top-2 gap %.4f, llama.cpp's %.4f\n",
                      run_name.c_str(), t, p["prompt"].dump().c_str(), ours, ref[t], gap,
                      p["top2_gap"][t].get<double>());
        EXPECT_LE(gap, kNoise) << run_name << ": step " << t << " of " << p["prompt"] << ": our token " << ours
                               << ", llama.cpp's " << ref[t];
        if (t + 1 < ref.size()) logits = run.decode({ref[t]});
      }
    }
    std::printf("%s: %d of %d greedy tokens equal to llama.cpp's, %d within 1e-3 of our top logit\n", run_name.c_str(),
                exact, steps, within_1e3);
    EXPECT_EQ(steps, 5 * 32);
    EXPECT_GE(exact, kMinExact) << run_name;
  }
}

}  // namespace
}  // namespace kf

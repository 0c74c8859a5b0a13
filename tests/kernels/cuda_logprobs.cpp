// CUDA Backend::token_logprobs against the CPU reference: the same top-k ids
// in the same order (both compare the same bf16-exact floats; ties -> lower
// id), the same targets (token ids and tokens sampled in the step), and
// log-probabilities within fp32 log-sum-exp rounding; F32 and BF16 logits;
// Qwen3's vocabulary size and a small one.
#include <cmath>

#include "kernels/cuda_test_util.h"

namespace kf {
namespace {

struct Out {
  std::vector<float> values;
  std::vector<int32_t> ids;
};

Out run(Backend& b, const std::vector<float>& logits, int rows, int vocab, bool bf16, const std::vector<int32_t>& row,
        const std::vector<int32_t>& target, const std::vector<int32_t>& sampled, int k) {
  const int64_t m = static_cast<int64_t>(row.size());
  Buffer lg(bf16 ? DType::BF16 : DType::F32, {rows, vocab}, b);
  if (bf16) {
    std::vector<uint16_t> h = test::to_bf16(logits);
    b.upload(lg, h.data());
  } else {
    b.upload(lg, logits.data());
  }
  Buffer br(DType::I32, {m}, b), bt(DType::I32, {m}, b), bs(DType::I32, {int64_t(sampled.size())}, b);
  b.upload(br, row.data());
  b.upload(bt, target.data());
  b.upload(bs, sampled.data());
  Buffer vals(DType::F32, {m, k + 1}, b), ids(DType::I32, {m, k + 1}, b);
  b.token_logprobs(lg, br, bt, bs, k, vals, ids);
  Out o;
  o.values = test::host_f32(b, vals);
  o.ids = test::host_i32(b, ids);
  return o;
}

TEST(CudaLogprobs, MatchesCpuReference) {
  KF_REQUIRE_CUDA();
  std::unique_ptr<Backend> gpu = make_cuda_backend(0), cpu = make_cpu_backend(1);
  std::mt19937 rng(7);
  for (int vocab : {1000, 151936}) {
    const int rows = 5;
    std::vector<float> logits = test::rand_bf16(size_t(rows) * vocab, rng, -8.f, 8.f);
    logits[2 * vocab + 17] = logits[2 * vocab + 900] = 12.f;  // a tie at the top of row 2
    const std::vector<int32_t> row = {0, 1, 2, 2, 3, 4, 4}, sampled = {5, vocab - 1, 17};
    const std::vector<int32_t> target = {3, -1, -3, 900, vocab - 1, -2, 0};
    for (int k : {0, 1, 5, 20}) {
      for (bool bf16 : {false, true}) {
        SCOPED_TRACE("vocab " + std::to_string(vocab) + " k " + std::to_string(k) + (bf16 ? " bf16" : " f32"));
        const Out want = run(*cpu, logits, rows, vocab, false, row, target, sampled, k);
        const Out got = run(*gpu, logits, rows, vocab, bf16, row, target, sampled, k);
        ASSERT_EQ(got.ids, want.ids);
        for (size_t i = 0; i < want.values.size(); ++i)
          EXPECT_NEAR(got.values[i], want.values[i], 2e-3) << "entry " << i / (k + 1) << " column " << i % (k + 1);
      }
    }
  }
}

}  // namespace
}  // namespace kf

// Batch invariance of the whole forward (issue 5's determinism requirement):
// a sequence's logits are bit-identical whether its tokens run as one
// prefill, as chunks, one by one, or mixed into steps with other sequences'
// prefill chunks and decode rows, on 1 or 3 threads. Random weights with every
// architecture quirk on (GQA, qkv bias, qk-norm, untied head).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "model/model.h"
#include "step_driver.h"

namespace kf {
namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.arch = "qwen3";
  c.name = "tiny";
  c.vocab_size = 97;
  c.hidden_size = 40;
  c.intermediate_size = 72;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 12;
  c.max_position = 256;
  c.qk_norm = true;
  c.qkv_bias = true;
  c.tied_embeddings = false;
  return c;
}

std::vector<int32_t> random_tokens(int n, uint32_t seed, int vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

TEST(ForwardInvariance, RowsDoNotDependOnBatching) {
  auto be1 = make_cpu_backend(1);
  const Model model = Model::random(tiny_config(), *be1, 7);
  const int vocab = model.config().vocab_size;
  const int page = 8;
  const std::vector<int> lens = {29, 17, 40};
  std::vector<std::vector<int32_t>> toks;
  for (int s = 0; s < 3; ++s) toks.push_back(random_tokens(lens[s], 100 + s, vocab));

  // Reference: each sequence alone, one prefill, one thread.
  std::vector<std::vector<float>> ref(3);
  for (int s = 0; s < 3; ++s) {
    test::StepDriver r(model, *be1, 1, lens[s], page);
    ref[s] = r.prefill(0, toks[s], true);
    ASSERT_EQ(ref[s].size(), size_t(lens[s]) * vocab);
  }

  for (int threads : {1, 3}) {
    CpuOptions o;
    o.n_threads = threads;
    auto be = make_cpu_backend(o);
    // Mixed steps: sequence 0 decodes token by token, sequence 1 prefills in
    // chunks of 5, sequence 2 alternates chunks of 3 and single rows.
    test::StepDriver r(model, *be, 3, 40, page);
    std::vector<size_t> done(3, 0);
    std::vector<std::vector<float>> got(3);
    for (int step = 0; done[0] < 29 || done[1] < 17 || done[2] < 40; ++step) {
      std::vector<int> seqs;
      std::vector<std::vector<int32_t>> chunk;
      for (int s = 0; s < 3; ++s) {
        const size_t want = s == 0 ? 1 : s == 1 ? 5 : (step % 2 ? 1 : 3);
        const size_t k = std::min(want, toks[s].size() - done[s]);
        if (k == 0) continue;
        seqs.push_back(s);
        chunk.emplace_back(toks[s].begin() + done[s], toks[s].begin() + done[s] + k);
      }
      const std::vector<float>& l = r.run(seqs, chunk);
      size_t row = 0;
      for (size_t i = 0; i < seqs.size(); ++i) {
        const int s = seqs[i];
        got[s].insert(got[s].end(), l.begin() + row * vocab, l.begin() + (row + chunk[i].size()) * vocab);
        row += chunk[i].size();
        done[s] += chunk[i].size();
      }
    }
    for (int s = 0; s < 3; ++s) {
      ASSERT_EQ(got[s].size(), ref[s].size());
      for (int t = 0; t < lens[s]; ++t)
        ASSERT_EQ(0, std::memcmp(got[s].data() + size_t(t) * vocab, ref[s].data() + size_t(t) * vocab,
                                 vocab * sizeof(float)))
            << "threads " << threads << ", sequence " << s << ", position " << t;
    }
  }
}

// Decode logits after a 30-token prefill and 6 decode steps under `policy`.
std::vector<float> decode_under(Model& model, Backend& be, const AttnPolicy& policy, std::vector<int> dense = {}) {
  const std::vector<int32_t> toks = random_tokens(36, 5, model.config().vocab_size);
  test::StepDriver r(model, be, 1, 36, 4, 0, true, policy, std::move(dense));
  r.prefill(0, std::vector<int32_t>(toks.begin(), toks.begin() + 30), false);
  std::vector<float> out;
  for (int t = 30; t < 36; ++t) out = r.decode({toks[t]});
  return out;
}

TEST(ForwardInvariance, DenseLayersOverrideThePolicy) {
  auto be = make_cpu_backend(1);
  Model model = Model::random(tiny_config(), *be, 7);
  AttnPolicy dense, local;
  local.kind = AttnKind::Local;
  local.local_pages = 1;  // sink + the last page of 4 tokens: far from dense at 36 tokens
  const std::vector<float> ref = decode_under(model, *be, dense);
  EXPECT_NE(decode_under(model, *be, local), ref);
  EXPECT_EQ(decode_under(model, *be, local, {0, 1, 2}), ref);
  const std::vector<float> partial = decode_under(model, *be, local, {1});
  EXPECT_NE(partial, ref);
  EXPECT_NE(decode_under(model, *be, local), partial);
}

TEST(ForwardInvariance, DenseLayersOptionValidates) {
  auto be = make_cpu_backend(1);
  Model model = Model::random(tiny_config(), *be, 7);
  EXPECT_EQ(parse_layer_list("0,2"), (std::vector<int>{0, 2}));
  AttnPolicy local;
  local.kind = AttnKind::Local;
  EXPECT_THROW(decode_under(model, *be, local, {3}), Error);
  EXPECT_THROW(parse_layer_list("0,x"), Error);
  EXPECT_TRUE(parse_layer_list("").empty());
}

}  // namespace
}  // namespace kf

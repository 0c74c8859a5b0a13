// The HF logits fixtures made by tools/make_model_fixtures.py
// (tests/fixtures/models/NAME/{config.json, model.safetensors, meta.json,
// logits.bin}): the token ids, transformers' fp32 logits [n, vocab], its
// RoPE inverse frequencies and (newer fixtures) its greedy continuation. Shared by tests/model/hf_parity.cpp (CPU) and
// tests/kernels/cuda_model.cpp (GPU).
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kf::test {

inline const std::string kHfFixtureDir = std::string(KINFER_SOURCE_DIR) + "/tests/fixtures/models/";

struct HfFixture {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [n, vocab]
  std::vector<double> inv_freq;
  std::vector<int32_t> greedy;  // HF's greedy ids after `tokens`; empty in older fixtures
  int vocab = 0;
};

inline HfFixture read_hf_fixture(const std::string& name) {
  HfFixture f;
  std::ifstream meta(kHfFixtureDir + name + "/meta.json");
  EXPECT_TRUE(meta.good()) << "missing " << kHfFixtureDir + name + "/meta.json";
  if (!meta.good()) return f;
  const auto j = nlohmann::json::parse(meta);
  for (int t : j["tokens"]) f.tokens.push_back(t);
  f.vocab = j["logits_shape"][1];
  for (double v : j["hf_inv_freq"]) f.inv_freq.push_back(v);
  for (int t : j.value("greedy", std::vector<int>{})) f.greedy.push_back(t);
  f.logits.resize(f.tokens.size() * f.vocab);
  std::ifstream bin(kHfFixtureDir + name + "/logits.bin", std::ios::binary);
  bin.read(reinterpret_cast<char*>(f.logits.data()), static_cast<std::streamsize>(f.logits.size() * sizeof(float)));
  EXPECT_EQ(bin.gcount(), static_cast<std::streamsize>(f.logits.size() * sizeof(float)));
  return f;
}

}  // namespace kf::test

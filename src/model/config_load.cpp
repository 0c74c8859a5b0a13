#include "model/config_load.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "util/error.h"
#include "util/file.h"

namespace kf {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// model_type or architectures[0] -> our family name; "" if unknown.
std::string family_of(const std::string& s) {
  if (s == "llama" || s == "LlamaForCausalLM") return "llama";
  if (s == "qwen2" || s == "Qwen2ForCausalLM") return "qwen2";
  if (s == "qwen3" || s == "Qwen3ForCausalLM") return "qwen3";
  return "";
}

// Typed field access; every error names the source and the field.
struct Fields {
  const json& j;
  const std::string& src;

  bool present(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  int get_int(const char* k) const {
    KF_CHECK(present(k), "{}: missing field '{}'", src, k);
    return to_int(j[k], k);
  }
  int get_int_or(const char* k, int def) const { return present(k) ? to_int(j[k], k) : def; }
  int to_int(const json& v, const std::string& k) const {
    KF_CHECK(v.is_number_integer(), "{}: field '{}' must be an integer (got {})", src, k, v.dump());
    const int64_t x = v.get<int64_t>();
    KF_CHECK(x >= -1 && x <= (int64_t(1) << 31) - 1, "{}: field '{}' = {} is out of range", src, k, x);
    return static_cast<int>(x);
  }
  float get_float_or(const char* k, float def) const {
    if (!present(k)) return def;
    KF_CHECK(j[k].is_number(), "{}: field '{}' must be a number (got {})", src, k, j[k].dump());
    return j[k].get<float>();
  }
  bool get_bool_or(const char* k, bool def) const {
    if (!present(k)) return def;
    KF_CHECK(j[k].is_boolean(), "{}: field '{}' must be true or false (got {})", src, k, j[k].dump());
    return j[k].get<bool>();
  }
};

void parse_rope_scaling(const json& rs, const std::string& src, ModelConfig* c) {
  if (rs.is_null()) return;
  KF_CHECK(rs.is_object(), "{}: field 'rope_scaling' must be an object or null", src);
  const Fields f{rs, src};
  std::string type;
  if (f.present("rope_type")) type = rs["rope_type"].is_string() ? rs["rope_type"].get<std::string>() : "?";
  else if (f.present("type")) type = rs["type"].is_string() ? rs["type"].get<std::string>() : "?";
  RopeScaling& s = c->rope_scaling;
  if (type == "default" || type.empty()) return;
  if (type == "linear") {
    s.type = RopeScalingType::Linear;
    s.factor = f.get_float_or("factor", 1.f);
  } else if (type == "llama3") {
    s.type = RopeScalingType::Llama3;
    s.factor = f.get_float_or("factor", 8.f);
    s.low_freq_factor = f.get_float_or("low_freq_factor", 1.f);
    s.high_freq_factor = f.get_float_or("high_freq_factor", 4.f);
    s.original_max_position = f.get_int_or("original_max_position_embeddings", 8192);
    KF_CHECK(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0 && s.original_max_position > 0,
             "{}: field 'rope_scaling' has invalid llama3 parameters {}", src, rs.dump());
  } else {
    fail("{}: field 'rope_scaling' type '{}' is not supported (kinfer supports linear and llama3)", src, type);
  }
  KF_CHECK(s.factor > 0, "{}: field 'rope_scaling.factor' = {} must be positive", src, s.factor);
}

std::string read_text(const std::string& path) {
  std::optional<std::string> text = read_file(path);
  KF_CHECK(text, "{}: cannot open", path);
  return std::move(*text);
}

}  // namespace

ModelConfig parse_hf_config(const std::string& text, const std::string& src) {
  const json j = json::parse(text, nullptr, false);
  KF_CHECK(!j.is_discarded(), "{}: not valid JSON", src);
  KF_CHECK(j.is_object(), "{}: not a JSON object", src);
  const Fields f{j, src};
  ModelConfig c;

  std::string declared;
  if (f.present("model_type")) {
    KF_CHECK(j["model_type"].is_string(), "{}: field 'model_type' must be a string", src);
    declared = j["model_type"].get<std::string>();
  } else if (f.present("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
             j["architectures"][0].is_string()) {
    declared = j["architectures"][0].get<std::string>();
  }
  KF_CHECK(!declared.empty(), "{}: missing field 'model_type' (and no 'architectures')", src);
  c.arch = family_of(declared);
  KF_CHECK(!c.arch.empty(), "{}: unsupported architecture '{}' (kinfer supports llama, qwen2, qwen3)", src, declared);
  if (f.present("hidden_act")) {
    KF_CHECK(j["hidden_act"] == "silu", "{}: field 'hidden_act' = {} is not supported (only silu)", src,
             j["hidden_act"].dump());
  }

  c.vocab_size = f.get_int("vocab_size");
  c.hidden_size = f.get_int("hidden_size");
  c.intermediate_size = f.get_int("intermediate_size");
  c.n_layers = f.get_int("num_hidden_layers");
  c.n_heads = f.get_int("num_attention_heads");
  c.n_kv_heads = f.get_int_or("num_key_value_heads", c.n_heads);
  KF_CHECK(c.n_heads > 0, "{}: field 'num_attention_heads' must be positive (got {})", src, c.n_heads);
  c.head_dim = f.get_int_or("head_dim", c.hidden_size / c.n_heads);
  c.max_position = f.get_int_or("max_position_embeddings", 0);
  c.rms_eps = f.get_float_or("rms_norm_eps", 1e-6f);
  c.rope_theta = f.get_float_or("rope_theta", 10000.f);
  if (j.contains("rope_scaling")) parse_rope_scaling(j["rope_scaling"], src, &c);
  c.tied_embeddings = f.get_bool_or("tie_word_embeddings", false);
  c.qk_norm = c.arch == "qwen3";
  c.qkv_bias = c.arch == "qwen2" || f.get_bool_or("attention_bias", false);
  if (c.arch != "llama" && f.get_bool_or("use_sliding_window", false)) c.sliding_window = f.get_int_or("sliding_window", 0);
  c.bos_token_id = f.get_int_or("bos_token_id", -1);
  if (f.present("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_array()) {
      for (const json& v : e) c.eos_token_ids.push_back(f.to_int(v, "eos_token_id"));
    } else {
      c.eos_token_ids.push_back(f.to_int(e, "eos_token_id"));
    }
  }
  if (f.present("_name_or_path") && j["_name_or_path"].is_string()) {
    c.name = fs::path(j["_name_or_path"].get<std::string>()).filename().string();
  }
  c.validate(src);
  return c;
}

ModelConfig load_hf_config(const std::string& path) {
  fs::path p(path);
  if (fs::is_directory(p)) p /= "config.json";
  ModelConfig c = parse_hf_config(read_text(p.string()), p.string());
  if (c.name.empty()) c.name = fs::absolute(p).parent_path().filename().string();
  return c;
}

ModelConfig config_from_gguf(const GgufFile& g) {
  const std::string& src = g.path();
  ModelConfig c;
  const std::string declared = g.get_str("general.architecture");
  c.arch = family_of(declared);
  KF_CHECK(!c.arch.empty(), "{}: general.architecture '{}' is not supported (kinfer supports llama, qwen2, qwen3)",
           src, declared);
  const std::string a = declared + ".";
  auto u32 = [&](const std::string& k) { return static_cast<int>(std::min<uint32_t>(g.get_u32(a + k), 1u << 30)); };
  c.name = g.get_str_or("general.name", "");
  c.n_layers = u32("block_count");
  c.hidden_size = u32("embedding_length");
  c.intermediate_size = u32("feed_forward_length");
  c.n_heads = u32("attention.head_count");
  KF_CHECK(c.n_heads > 0, "{}: metadata key '{}attention.head_count' must be positive", src, a);
  c.n_kv_heads = g.has(a + "attention.head_count_kv") ? u32("attention.head_count_kv") : c.n_heads;
  c.head_dim = g.has(a + "attention.key_length") ? u32("attention.key_length") : c.hidden_size / c.n_heads;
  if (g.has(a + "attention.value_length")) {
    KF_CHECK(u32("attention.value_length") == c.head_dim, "{}: {}attention.value_length {} differs from key_length {}",
             src, a, u32("attention.value_length"), c.head_dim);
  }
  c.max_position = g.has(a + "context_length") ? u32("context_length") : 0;
  c.rms_eps = g.get_f32_or(a + "attention.layer_norm_rms_epsilon", 1e-6f);
  c.rope_theta = g.get_f32_or(a + "rope.freq_base", 10000.f);
  const std::string scaling = g.get_str_or(a + "rope.scaling.type", "none");
  if (scaling == "linear") {
    c.rope_scaling.type = RopeScalingType::Linear;
    c.rope_scaling.factor = g.get_f32_or(a + "rope.scaling.factor", 1.f);
    KF_CHECK(c.rope_scaling.factor > 0, "{}: metadata key '{}rope.scaling.factor' must be positive", src, a);
  } else if (scaling != "none") {
    fail("{}: metadata key '{}rope.scaling.type' = '{}' is not supported (kinfer supports none and linear)", src, a,
         scaling);
  }
  // llama.cpp stores llama3 rope scaling as per-frequency factors in a tensor.
  KF_CHECK(!g.find_tensor("rope_freqs.weight"),
           "{}: tensor 'rope_freqs.weight' (llama3-style rope scaling baked into GGUF) is not supported; "
           "use the HF checkpoint", src);
  if (g.has("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int>(std::min<uint64_t>(g.get_array_size("tokenizer.ggml.tokens"), 1u << 30));
  } else if (g.has(a + "vocab_size")) {
    c.vocab_size = u32("vocab_size");
  } else if (const GgufTensor* e = g.find_tensor("token_embd.weight")) {
    c.vocab_size = static_cast<int>(e->shape[0]);
  }
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;
  c.qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = g.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
  if (g.has("tokenizer.ggml.bos_token_id")) c.bos_token_id = static_cast<int>(g.get_i64("tokenizer.ggml.bos_token_id"));
  for (const char* k : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (!g.has(k)) continue;
    const int id = static_cast<int>(g.get_i64(k));
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
      c.eos_token_ids.push_back(id);
  }
  c.validate(src);
  return c;
}

ModelConfig load_config(const Checkpoint& ckpt) {
  if (ckpt.gguf()) return config_from_gguf(*ckpt.gguf());
  return load_hf_config(ckpt.path());
}

}  // namespace kf

#include "model/config_load.h"

#include <algorithm>
#include <cmath>
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

// The documented defaults of the transformers configs (LlamaConfig,
// Qwen2Config, Qwen3Config in transformers 5.24) for fields whose absence
// changes the math; every family also defaults rms_norm_eps 1e-6, rope_theta
// 10000 (default_theta), tie_word_embeddings false and hidden_act silu.
struct FamilyDefaults {
  int n_kv_heads;    // 0: = num_attention_heads
  int head_dim;      // 0: = hidden_size / num_attention_heads
  int max_position;  // max_position_embeddings
};

FamilyDefaults family_defaults(const std::string& arch) {
  if (arch == "qwen2") return {32, 0, 32768};
  if (arch == "qwen3") return {32, 128, 32768};
  return {0, 0, 2048};  // llama
}

// Typed field access; every error names the source and the field. The *_def
// getters record a field they default in `defaulted`.
struct Fields {
  const json& j;
  const std::string& src;
  std::vector<std::string>* defaulted = nullptr;

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
  double to_double(const json& v, const std::string& k) const {
    KF_CHECK(v.is_number(), "{}: field '{}' must be a number (got {})", src, k, v.dump());
    return v.get<double>();
  }
  float to_float(const json& v, const std::string& k) const { return static_cast<float>(to_double(v, k)); }
  bool get_bool_or(const char* k, bool def) const {
    if (!present(k)) return def;
    KF_CHECK(j[k].is_boolean(), "{}: field '{}' must be true or false (got {})", src, k, j[k].dump());
    return j[k].get<bool>();
  }
  int get_int_def(const char* k, int def) const { return present(k) ? to_int(j[k], k) : record(k, def); }
  float get_float_def(const char* k, float def) const { return present(k) ? to_float(j[k], k) : record(k, def); }
  bool get_bool_def(const char* k, bool def) const { return present(k) ? get_bool_or(k, def) : record(k, def); }
  template <typename T>
  T record(const char* k, T def) const {
    defaulted->push_back(k);
    return def;
  }
};

// A RoPE value and the config.json field it came from ("" if absent).
struct RopeValue {
  std::string field;
  const json* v = nullptr;
};

// One place a RoPE value may sit: an object of config.json and the path prefix naming it in errors.
struct RopePlace {
  const json* obj;
  const char* prefix;  // "rope_parameters.", "rope_scaling." or "" (top level)
};

// `keys` looked up in every place (transformers >= 5 writes rope_parameters,
// older configs the top-level keys and rope_scaling). A value given in more
// than one place must be the same everywhere, or the config is ambiguous.
RopeValue rope_value(const std::string& src, std::initializer_list<RopePlace> places,
                     std::initializer_list<const char*> keys) {
  RopeValue found;
  for (const RopePlace& p : places) {
    for (const char* k : keys) {
      if (!p.obj || !p.obj->contains(k) || (*p.obj)[k].is_null()) continue;
      const json& v = (*p.obj)[k];
      const std::string field = std::string(p.prefix) + k;
      if (!found.v) {
        found = {field, &v};
        continue;
      }
      const bool same = v.is_number() && found.v->is_number() ? v.get<double>() == found.v->get<double>() : v == *found.v;
      KF_CHECK(same, "{}: field '{}' = {} disagrees with field '{}' = {}; fix the config so they agree", src,
               found.field, found.v->dump(), field, v.dump());
    }
  }
  return found;
}

// RoPE from either config layout into c (needs head_dim and max_position set).
void parse_rope(const json& j, const Fields& f, ModelConfig* c) {
  const std::string& src = f.src;
  const json* params = f.present("rope_parameters") ? &j["rope_parameters"] : nullptr;
  const json* scaling = f.present("rope_scaling") ? &j["rope_scaling"] : nullptr;
  KF_CHECK(!params || params->is_object(), "{}: field 'rope_parameters' must be an object or null", src);
  KF_CHECK(!scaling || scaling->is_object(), "{}: field 'rope_scaling' must be an object or null", src);
  if (params) {
    for (const auto& [k, v] : params->items()) {
      KF_CHECK(!v.is_object(), "{}: field 'rope_parameters.{}': RoPE per layer type is not supported", src, k);
    }
  }
  const RopePlace p{params, "rope_parameters."}, s{scaling, "rope_scaling."}, top{&j, ""};
  auto number = [&](const RopeValue& r) { return f.to_float(*r.v, r.field); };

  const RopeValue type_v = rope_value(src, {p, s}, {"rope_type", "type"});
  KF_CHECK(!type_v.v || type_v.v->is_string(), "{}: field '{}' must be a string (got {})", src, type_v.field,
           type_v.v ? type_v.v->dump() : "");
  const std::string type = type_v.v ? type_v.v->get<std::string>() : "default";
  // The scaling fields of `type`, each required as transformers requires it.
  auto need = [&](const char* k) {
    const RopeValue r = rope_value(src, {p, s}, {k});
    KF_CHECK(r.v, "{}: {} '{}' needs field '{}' (in 'rope_parameters' or 'rope_scaling')", src, type_v.field, type,
             k);
    return number(r);
  };
  RopeScaling& rs = c->rope_scaling;
  if (type == "linear") {
    rs.type = RopeScalingType::Linear;
    rs.factor = need("factor");
  } else if (type == "llama3") {
    rs.type = RopeScalingType::Llama3;
    rs.factor = need("factor");
    rs.low_freq_factor = need("low_freq_factor");
    rs.high_freq_factor = need("high_freq_factor");
    // transformers fills it from max_position_embeddings when absent.
    const RopeValue orig = rope_value(src, {p, s}, {"original_max_position_embeddings"});
    if (orig.v) {
      rs.original_max_position = f.to_int(*orig.v, orig.field);
    } else {
      rs.original_max_position = c->max_position;
      c->defaulted.push_back("original_max_position_embeddings");
    }
    KF_CHECK(rs.high_freq_factor > rs.low_freq_factor && rs.low_freq_factor > 0 && rs.original_max_position > 0,
             "{}: llama3 RoPE needs 0 < low_freq_factor ({}) < high_freq_factor ({}) and "
             "original_max_position_embeddings ({}) > 0",
             src, rs.low_freq_factor, rs.high_freq_factor, rs.original_max_position);
  } else if (type != "default") {
    fail("{}: field '{}' = '{}' is not supported (kinfer implements default, linear and llama3 RoPE)", src,
         type_v.field, type);
  }
  KF_CHECK(rs.factor > 0 && std::isfinite(rs.factor), "{}: RoPE factor {} must be positive", src, rs.factor);

  const RopeValue theta = rope_value(src, {p, top}, {"rope_theta"});
  if (theta.v) {
    c->rope_theta = number(theta);
  } else {
    c->rope_theta = 10000.f;
    c->defaulted.push_back("rope_theta");
  }

  // Rotate only the first int(head_dim * factor) dims, as vLLM's Llama and
  // transformers' partial-rotary models (Phi-3) do. transformers 5's Llama and
  // Qwen ignore the factor with default RoPE: the config means it, so we don't.
  const RopeValue partial = rope_value(src, {p, top}, {"partial_rotary_factor"});
  if (partial.v) {
    const double prf = f.to_double(*partial.v, partial.field);
    const int dim = static_cast<int>(c->head_dim * prf);
    KF_CHECK(prf > 0 && prf <= 1 && dim >= 2 && dim % 2 == 0,
             "{}: field '{}' = {} gives {} rotary dims of head_dim {}: need a factor in (0, 1] giving an even "
             "number >= 2", src, partial.field, partial.v->dump(), dim, c->head_dim);
    if (dim < c->head_dim) c->rotary_dim = dim;
  }
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
  ModelConfig c;
  const Fields f{j, src, &c.defaulted};

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
  } else {
    c.defaulted.push_back("hidden_act");
  }
  KF_CHECK(!f.get_bool_or("mlp_bias", false), "{}: field 'mlp_bias' = true is not supported (MLP biases)", src);

  const FamilyDefaults fd = family_defaults(c.arch);
  c.vocab_size = f.get_int("vocab_size");
  c.hidden_size = f.get_int("hidden_size");
  c.intermediate_size = f.get_int("intermediate_size");
  c.n_layers = f.get_int("num_hidden_layers");
  c.n_heads = f.get_int("num_attention_heads");
  KF_CHECK(c.n_heads > 0, "{}: field 'num_attention_heads' must be positive (got {})", src, c.n_heads);
  // null means "same as the heads" in every family; absent means the family default.
  if (j.contains("num_key_value_heads") && j["num_key_value_heads"].is_null()) c.n_kv_heads = c.n_heads;
  else c.n_kv_heads = f.get_int_def("num_key_value_heads", fd.n_kv_heads > 0 ? fd.n_kv_heads : c.n_heads);
  c.head_dim = f.get_int_def("head_dim", fd.head_dim > 0 ? fd.head_dim : c.hidden_size / c.n_heads);
  c.max_position = f.get_int_def("max_position_embeddings", fd.max_position);
  c.rms_eps = f.get_float_def("rms_norm_eps", 1e-6f);
  parse_rope(j, f, &c);
  c.tied_embeddings = f.get_bool_def("tie_word_embeddings", false);
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
  // Absent keys take llama.cpp's defaults, recorded under the HF field names.
  auto u32_def = [&](const std::string& k, const char* hf_field, int def) {
    if (g.has(a + k)) return u32(k);
    c.defaulted.push_back(hf_field);
    return def;
  };
  c.n_kv_heads = u32_def("attention.head_count_kv", "num_key_value_heads", c.n_heads);
  c.head_dim = u32_def("attention.key_length", "head_dim", c.hidden_size / c.n_heads);
  if (g.has(a + "attention.value_length")) {
    KF_CHECK(u32("attention.value_length") == c.head_dim, "{}: {}attention.value_length {} differs from key_length {}",
             src, a, u32("attention.value_length"), c.head_dim);
  }
  c.max_position = g.has(a + "context_length") ? u32("context_length") : 0;
  // The families differ (1e-5, 1e-6) and llama.cpp requires the key too.
  KF_CHECK(g.has(a + "attention.layer_norm_rms_epsilon"),
           "{}: missing metadata key '{}attention.layer_norm_rms_epsilon' (no safe default)", src, a);
  c.rms_eps = g.get_f32(a + "attention.layer_norm_rms_epsilon");
  if (g.has(a + "rope.freq_base")) {
    c.rope_theta = g.get_f32(a + "rope.freq_base");
  } else {
    c.rope_theta = 10000.f;
    c.defaulted.push_back("rope_theta");
  }
  if (g.has(a + "rope.dimension_count")) {
    KF_CHECK(u32("rope.dimension_count") == c.head_dim,
             "{}: metadata key '{}rope.dimension_count' = {} differs from head_dim {}: partial RoPE from GGUF is not "
             "supported (llama.cpp rejects it for llama too); use the HF checkpoint",
             src, a, u32("rope.dimension_count"), c.head_dim);
  }
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

#include "model/presets.h"

#include <algorithm>
#include <cctype>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "util/error.h"

namespace kf {


// Lower case, with '.', '_' and '/' turned into '-' so "Qwen3-0.6B",
// "qwen3_0_6b" and "qwen3-0-6b" compare equal.
std::string canonical_name(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    out.push_back(c == '.' || c == '_' || c == '/' ? '-' : c);
  }
  return out;
}

namespace {

ModelPreset qwen3(const char* name, const char* hf_name, double params, int hidden, int intermediate,
                  int layers, int heads, bool tied) {
  ModelConfig c;
  c.arch = "qwen3";
  c.name = hf_name;
  c.vocab_size = 151936;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = 8;  // every Qwen3 dense model
  c.head_dim = 128;
  c.max_position = 40960;
  c.rms_eps = 1e-6f;
  c.rope_theta = 1000000.f;
  c.qk_norm = true;
  c.tied_embeddings = tied;
  c.bos_token_id = -1;
  c.eos_token_ids = {151645, 151643};
  return {name, params, c};
}

}  // namespace

std::vector<ModelPreset> model_presets() {
  // Shapes from each model's config.json on the Hugging Face hub; P from the paper.
  return {
      qwen3("qwen3-0.6b", "Qwen3-0.6B", 0.752e9, 1024, 3072, 28, 16, true),
      qwen3("qwen3-1.7b", "Qwen3-1.7B", 2.03e9, 2048, 6144, 28, 16, true),
      qwen3("qwen3-4b", "Qwen3-4B", 4.02e9, 2560, 9728, 36, 32, true),
      qwen3("qwen3-8b", "Qwen3-8B", 8.19e9, 4096, 12288, 36, 32, false),
      qwen3("qwen3-14b", "Qwen3-14B", 14.77e9, 5120, 17408, 40, 40, false),
      qwen3("qwen3-32b", "Qwen3-32B", 32.76e9, 5120, 25600, 64, 64, false),
  };
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const ModelPreset& p : model_presets()) names.push_back(p.name);
  return names;
}

std::optional<ModelPreset> find_model_preset(std::string_view name) {
  std::string key = canonical_name(name);
  if (key.starts_with("qwen-")) key = key.substr(5);  // "Qwen/Qwen3-8B"
  for (ModelPreset& p : model_presets()) {
    if (canonical_name(p.name) == key) return std::move(p);
  }
  return std::nullopt;
}

std::optional<double> preset_params(std::string_view name) {
  if (auto p = find_model_preset(name)) return p->params;
  return std::nullopt;
}

std::optional<ModelPreset> detect_model_preset(std::string_view text) {
  const std::string hay = canonical_name(text);
  std::optional<ModelPreset> best;
  size_t best_len = 0;
  for (ModelPreset& p : model_presets()) {
    const std::string needle = canonical_name(p.name);
    size_t pos = hay.find(needle);
    while (pos != std::string::npos) {
      // "qwen3-1-7b" must not match inside "qwen3-1-7b0"; require a non-alphanumeric end.
      const size_t end = pos + needle.size();
      const bool clean_end = end == hay.size() || !std::isalnum(static_cast<unsigned char>(hay[end]));
      if (clean_end && needle.size() > best_len) {
        best_len = needle.size();
        best = p;
        break;
      }
      pos = hay.find(needle, pos + 1);
    }
  }
  return best;
}

std::optional<ModelConfig> random_model_config(const std::string& spec) {
  constexpr std::string_view kPrefix = "random:";
  if (spec.rfind(kPrefix, 0) != 0) return std::nullopt;
  return preset_config(spec.substr(kPrefix.size()));
}

ModelConfig preset_config(const std::string& name) {
  if (auto p = find_model_preset(name)) return p->config;  // the Qwen3 family
  // SmolLM2-135M (the embedded default's shapes), for quick CPU benchmarks.
  if (name == "smollm2-135m") {
    ModelConfig c;
    c.arch = "llama";
    c.name = "SmolLM2-135M";
    c.vocab_size = 49152;
    c.hidden_size = 576;
    c.intermediate_size = 1536;
    c.n_layers = 30;
    c.n_heads = 9;
    c.n_kv_heads = 3;
    c.head_dim = 64;
    c.max_position = 8192;
    c.rms_eps = 1e-5f;
    c.rope_theta = 100000.f;
    c.tied_embeddings = true;
    return c;
  }
  fail("unknown model preset '{}' (known: {}, smollm2-135m)", name, fmt::join(model_preset_names(), ", "));
}

}  // namespace kf

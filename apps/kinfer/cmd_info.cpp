// kinfer info --model M [--json]: config (and which fields took defaults),
// parameter counts, tensor dtypes and the memory the weights and the KV cache
// need. Every tensor is checked against the config exactly as loading does.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/ranges.h>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "commands.h"
#include "io/checkpoint.h"
#include "model/config_load.h"
#include "model/presets.h"
#include "model/weights.h"

namespace kf::cli {

namespace {

const char* rope_scaling_name(RopeScalingType t) {
  switch (t) {
    case RopeScalingType::Linear: return "linear";
    case RopeScalingType::Llama3: return "llama3";
    default: return "none";
  }
}

nlohmann::json config_json(const ModelConfig& c) {
  nlohmann::json rs = {{"type", rope_scaling_name(c.rope_scaling.type)}};
  if (c.rope_scaling.type != RopeScalingType::None) rs["factor"] = c.rope_scaling.factor;
  if (c.rope_scaling.type == RopeScalingType::Llama3) {
    rs["low_freq_factor"] = c.rope_scaling.low_freq_factor;
    rs["high_freq_factor"] = c.rope_scaling.high_freq_factor;
    rs["original_max_position_embeddings"] = c.rope_scaling.original_max_position;
  }
  return {{"arch", c.arch},
          {"name", c.name},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"head_dim", c.head_dim},
          {"max_position_embeddings", c.max_position},
          {"hidden_act", "silu"},
          {"rms_norm_eps", c.rms_eps},
          {"rope_theta", c.rope_theta},
          {"rope_scaling", rs},
          {"rotary_dim", c.rope_dim()},
          {"qk_norm", c.qk_norm},
          {"qkv_bias", c.qkv_bias},
          {"tie_word_embeddings", c.tied_embeddings},
          {"sliding_window", c.sliding_window},
          {"bos_token_id", c.bos_token_id},
          {"eos_token_ids", c.eos_token_ids},
          {"defaulted", c.defaulted}};
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  return fmt::format("{:.1f} {}", b, units[u]);
}

}  // namespace

int cmd_info(int argc, char** argv) {
  CLI::App app{"Print a model's config, parameter counts and memory needs", "kinfer info"};
  std::string model = "default";
  bool json = false;
  app.add_option("--model,-m", model, "GGUF file, HF directory, 'default' or random:PRESET (shapes only)")
      ->capture_default_str();
  app.add_flag("--json", json, "print JSON");
  CLI11_PARSE(app, argc, argv);

  // A random: model has no file: its preset's config, and the tensors that config reads.
  const std::optional<ModelConfig> preset = random_model_config(model);
  const bool random = preset.has_value();
  std::optional<Checkpoint> ck;
  if (!random) ck.emplace(open_checkpoint(model));
  const ModelConfig c = random ? *preset : load_config(*ck);
  ParamCounts params;
  size_t n_tensors = 0, stored_bytes = 0;
  std::map<std::string, int> by_dtype;
  if (random) {
    const WeightsSpec spec = weights_spec(c);
    params = spec_params(spec);
    n_tensors = spec.all().size();
  } else {
    check_weights(*ck, c);  // exactly what loading checks: a bad tensor fails here too
    params = count_params(*ck);
    n_tensors = ck->tensors().size();
    for (const TensorInfo& t : ck->tensors()) {
      ++by_dtype[dtype_name(t.dtype)];
      stored_bytes += dtype_bytes(t.dtype, t.numel);
    }
  }
  const std::string path = random ? model : ck->path(), format = random ? "random" : ck->format();
  const int64_t kv_elems_per_token = int64_t(2) * c.n_layers * c.n_kv_heads * c.head_dim;  // K and V
  nlohmann::json j = {
      {"model", path},
      {"format", format},
      {"config", config_json(c)},
      {"params", {{"kinetics", params.kinetics}, {"plain", params.plain}}},
      {"tensors", {{"count", n_tensors}, {"by_dtype", by_dtype}}},
      {"memory",
       {{"weights_stored_bytes", stored_bytes},
        {"weights_f32_cpu_bytes", params.plain * 4},
        {"weights_bf16_gpu_bytes", params.plain * 2},
        {"kv_bytes_per_token_f32", kv_elems_per_token * 4},
        {"kv_bytes_per_token_bf16", kv_elems_per_token * 2}}},
  };
  if (json) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model      %s (%s)\n", path.c_str(),
              random ? "random weights with the preset's shapes, made in memory: nothing stored" : format.c_str());
  const bool gguf = ck && ck->gguf();
  const char* missing = gguf ? "not in the GGUF metadata" : "not in config.json";
  for (const auto& [k, v] : j["config"].items()) {
    if (k == "defaulted") continue;
    std::printf("  %-26s %s%s\n", k.c_str(), v.dump().c_str(),
                c.was_defaulted(k) ? fmt::format(" (default: {})", missing).c_str() : "");
  }
  if (!c.defaulted.empty()) {
    std::printf("defaulted  %s: %s, so %s defaults were used\n", fmt::format("{}", fmt::join(c.defaulted, ", ")).c_str(),
                missing, gguf ? "llama.cpp's" : "the family's transformers");
  }
  std::printf("parameters %.4g (Kinetics convention, embedding and lm_head both counted), %.4g %s\n",
              double(params.kinetics), double(params.plain), random ? "in the model" : "stored");
  std::printf("tensors    %zu%s", n_tensors, random ? " (f32 on CPU, bf16 on GPU)" : ":");
  for (const auto& [d, n] : by_dtype) std::printf(" %s %d", d.c_str(), n);
  std::printf("\nmemory     weights on disk %s, f32 on CPU %s, bf16 on GPU %s\n",
              random ? "none" : human_bytes(stored_bytes).c_str(),
              human_bytes(params.plain * 4.0).c_str(), human_bytes(params.plain * 2.0).c_str());
  std::printf("KV cache   %lld bytes/token in f32 (CPU), %lld in bf16 (GPU)\n",
              static_cast<long long>(kv_elems_per_token * 4), static_cast<long long>(kv_elems_per_token * 2));
  return 0;
}

}  // namespace kf::cli

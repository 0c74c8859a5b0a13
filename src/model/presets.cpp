#include "model/presets.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cost/presets.h"
#include "util/error.h"

namespace kf {

ModelConfig preset_config(const std::string& name) {
  if (auto cfg = cost::preset_config(name)) return *cfg;  // the Qwen3 family (cost/presets.h)
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
  fail("unknown model preset '{}' (known: {}, smollm2-135m)", name,
       fmt::join(cost::model_preset_names(), ", "));
}

}  // namespace kf

// The model zoo: the six Qwen3 dense models of the Kinetics study (real
// shapes from their Hugging Face config.json, and the parameter counts the
// paper prices them with: embedding and lm_head counted separately even when
// tied; the paper's 4B figure, 4.02e9, is in fact its tied count, kept so our
// eFLOPs match the paper's plots), plus smollm2-135m for `random:` models.
// `--model random:PRESET` builds these shapes with random weights; the cost
// model (cost/) reads the same presets.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"

namespace kf {

struct ModelPreset {
  std::string name;    // "qwen3-0.6b"
  double params = 0;   // the Kinetics parameter count P
  ModelConfig config;  // real shapes (head_dim 128, vocab 151936)
};

// The Qwen3 presets, smallest first.
std::vector<ModelPreset> model_presets();
std::vector<std::string> model_preset_names();

// Case-insensitive; accepts "qwen3-0.6b", "Qwen/Qwen3-0.6B", "qwen3-0-6b".
std::optional<ModelPreset> find_model_preset(std::string_view name);
std::optional<double> preset_params(std::string_view name);

// The preset whose name occurs somewhere in `text` (a trace's model field or a
// file name such as "aime24_qwen3-1-7b_dense.jsonl"); the longest match wins.
std::optional<ModelPreset> detect_model_preset(std::string_view text);

// The shapes of a preset (the Qwen3 family or "smollm2-135m"); throws kf::Error
// listing the known names otherwise.
ModelConfig preset_config(const std::string& name);
// The preset shapes of a `--model random:PRESET` spec (preset_config of PRESET);
// nullopt for any other spec (a file, a directory, 'default').
std::optional<ModelConfig> random_model_config(const std::string& spec);

// Lower case, with '.', '_' and '/' turned into '-' ("Qwen3-0.6B" -> "qwen3-0-6b").
std::string canonical_name(std::string_view s);

}  // namespace kf

// Built-in model and hardware presets for the Kinetics cost model.
//
// Model presets are the six Qwen3 dense models of the Kinetics study with the
// shapes of their Hugging Face config.json and the parameter counts the paper
// prices them with (embedding and lm_head counted separately even when tied;
// the paper's 4B figure, 4.02e9, is in fact its tied count: we keep the
// published numbers so our eFLOPs match the paper's plots).
// Hardware presets are arithmetic intensities: peak bf16 FLOP/s divided by
// memory bandwidth in bytes/s, as the paper uses them.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"

namespace kf::cost {

struct ModelPreset {
  std::string name;       // "qwen3-0.6b"
  double params = 0;      // the Kinetics parameter count P
  ModelConfig config;     // real shapes (head_dim 128, vocab 151936)
};

// All model presets, smallest first.
std::vector<ModelPreset> model_presets();
std::vector<std::string> model_preset_names();

// Case-insensitive; accepts "qwen3-0.6b", "Qwen/Qwen3-0.6B", "qwen3-0-6b".
std::optional<ModelPreset> find_model_preset(std::string_view name);
std::optional<ModelConfig> preset_config(std::string_view name);
std::optional<double> preset_params(std::string_view name);

// The preset whose name occurs somewhere in `text` (a trace's model field or a
// file name such as "aime24_qwen3-1-7b_dense.jsonl"); the longest match wins.
std::optional<ModelPreset> detect_model_preset(std::string_view text);

struct HardwarePreset {
  std::string name;        // "b200"
  double intensity = 0;    // FLOP per byte
  std::string description;
};

std::vector<HardwarePreset> hardware_presets();
// Case-insensitive name lookup ("B200", "h100").
std::optional<double> hardware_intensity(std::string_view name);

inline constexpr const char* kDefaultHardware = "b200";

}  // namespace kf::cost

// Model shapes for `--model random:PRESET` (real shapes, random weights).
#pragma once
#include <string>

#include "model/config.h"

namespace kf {

// The Qwen3 presets of cost/presets.h ("qwen3-0.6b", ...) plus "smollm2-135m".
// Throws kf::Error listing the known names when `name` is unknown.
ModelConfig preset_config(const std::string& name);

}  // namespace kf

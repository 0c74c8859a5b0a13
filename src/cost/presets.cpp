#include "cost/presets.h"

namespace kf::cost {

std::vector<HardwarePreset> hardware_presets() {
  return {
      {"b200", 562.5, "NVIDIA B200 (the paper's default)"},
      {"h200", 206.0, "NVIDIA H200: 989 TFLOP/s bf16 / 4.8 TB/s"},
      {"h100", 295.0, "NVIDIA H100 SXM: 989 TFLOP/s bf16 / 3.35 TB/s"},
  };
}

std::optional<double> hardware_intensity(std::string_view name) {
  const std::string key = canonical_name(name);
  for (const HardwarePreset& h : hardware_presets()) {
    if (h.name == key) return h.intensity;
  }
  return std::nullopt;
}

}  // namespace kf::cost

// Hardware presets for the Kinetics cost model: arithmetic intensities, peak
// bf16 FLOP/s divided by memory bandwidth in bytes/s, as the paper uses them.
// The model presets live below, in model/presets.h.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/presets.h"

namespace kf::cost {

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

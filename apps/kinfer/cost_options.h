// Command-line flags for the cost model's options (cost/options.h), shared by
// `kinfer cost`, `frontier` and `plan`.
#pragma once
#include <CLI/CLI.hpp>

#include "cost/options.h"

namespace kf::cli {

void add_attn_options(CLI::App& app, cost::AttnOptions& o);
void add_hardware_options(CLI::App& app, cost::HardwareOptions& o);

}  // namespace kf::cli

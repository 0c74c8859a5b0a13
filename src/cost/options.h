// The option values shared by `kinfer cost`, `frontier` and `plan` (the
// attention and hardware choices; apps/kinfer/cost_options.h binds them to
// the command line), model resolution (preset or checkpoint) and the
// human-readable cost breakdown.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cost/cost.h"

namespace kf::cost {

struct AttnOptions {
  std::string attn = "dense";
  int64_t budget = 0;         // sparse
  int64_t local_tokens = 80;  // blocktopk: sink page + 4 local pages of 16
  int64_t page_size = 16;
  int64_t topk_pages = 64;
  std::string summary_dtype = "auto";  // blocktopk: auto | int8
};
AttnSpec attn_from_options(const AttnOptions& o);  // validates (sparse needs --budget)

struct HardwareOptions {
  std::string hardware;   // preset name ("" -> b200 unless intensity is set)
  double intensity = -1;  // explicit FLOP/byte
  std::string label() const;
};
double intensity_from_options(const HardwareOptions& o);

struct ResolvedModel {
  ModelShape shape;
  int64_t params_plain = 0;  // checkpoints: each stored tensor once (0 for presets)
  bool preset = false;
};
// A preset name, else a checkpoint spec (GGUF, HF directory, "default")
// counted with the Kinetics convention.
ResolvedModel resolve_model(const std::string& spec);

// "1000,2500, 4000" -> {1000, 2500, 4000}; each >= 0; errors name the option.
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& option);
std::vector<double> parse_double_list(const std::string& text, const std::string& option);

// Numbers for people: 1.23e+15 -> "1.230 P".
std::string si(double v);

std::string describe_cost(const Cost& c, const ResolvedModel& model, const AttnSpec& attn, const std::string& hardware,
                          int64_t prompt_len, const std::vector<int64_t>& gen_lens, int64_t n_samples);

}  // namespace kf::cost

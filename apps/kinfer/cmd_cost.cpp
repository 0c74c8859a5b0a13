// kinfer cost: the Kinetics price (compute, memory traffic, eFLOPs) of N
// samples of L tokens after an Lin-token prompt, for a preset or a checkpoint.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_checks.h"
#include "commands.h"
#include "cost_options.h"
#include "cost/cost.h"
#include "util/error.h"

namespace kf::cli {

int cmd_cost(int argc, char** argv) {
  CLI::App app{"Price test-time scaling with the Kinetics cost model (eFLOPs = compute + memory x intensity)",
               "kinfer cost"};
  std::string model_spec;
  int64_t prompt_len = 0, n_samples = 1;
  std::string gen_lens_text;
  cost::AttnOptions attn_opts;
  cost::HardwareOptions hw;
  bool json = false;
  app.add_option("--model,-m", model_spec,
                 "a preset (qwen3-0.6b, qwen3-1.7b, qwen3-4b, qwen3-8b, qwen3-14b, qwen3-32b), an HF directory or "
                 "a GGUF file")
      ->required();
  app.add_option("--prompt-len", prompt_len, "prompt tokens Lin (shared by the N samples)")->required()
      ->check(kf::cli::kNonNegative);
  app.add_option("--gen-len", gen_lens_text,
                 "generated tokens per sample L; a list (1000,2500,...) prices the mean over those lengths")
      ->required();
  app.add_option("-n,--samples", n_samples, "samples N")->capture_default_str()->check(kf::cli::kPositive);
  add_attn_options(app, attn_opts);
  add_hardware_options(app, hw);
  app.add_flag("--json", json, "print the numbers as JSON (plain FLOPs and bytes; a 'tera' block in 1e12)");
  CLI11_PARSE(app, argc, argv);

  const cost::ResolvedModel model = cost::resolve_model(model_spec);
  const cost::AttnSpec attn = cost::attn_from_options(attn_opts);
  const double intensity = cost::intensity_from_options(hw);
  const std::vector<int64_t> gen_lens = cost::parse_int_list(gen_lens_text, "--gen-len");
  const cost::Cost c = cost::expected_cost(model.shape, attn, intensity, prompt_len, gen_lens, n_samples);

  if (json) {
    nlohmann::json j = cost::cost_json(c);
    j["model"] = model.shape.name;
    j["params"] = model.shape.params;
    if (model.params_plain > 0) j["params_plain"] = model.params_plain;
    j["attn"] = cost::formula_name(attn.formula);
    j["attn_label"] = attn.label();
    if (attn.formula != cost::Formula::Dense) j["kv_budget"] = attn.kv_budget();
    j["prompt_len"] = prompt_len;
    j["gen_len"] = gen_lens;
    j["n"] = n_samples;
    j["hardware"] = hw.label();
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s", cost::describe_cost(c, model, attn, hw.label(), prompt_len, gen_lens, n_samples).c_str());
  return 0;
}

}  // namespace kf::cli

#include "cost_options.h"

#include <fmt/format.h>

#include "cost/presets.h"

namespace kf::cli {

void add_attn_options(CLI::App& app, cost::AttnOptions& o) {
  app.add_option("--attn", o.attn, "dense, sparse (zero-overhead, KV budget --budget) or blocktopk")
      ->capture_default_str()
      ->check(CLI::IsMember({"dense", "sparse", "blocktopk"}));
  app.add_option("--budget", o.budget, "sparse: KV tokens read per decode step (B)");
  app.add_option("--local-tokens", o.local_tokens, "blocktopk: tokens always read (sink + local window), T")
      ->capture_default_str();
  app.add_option("--page-size", o.page_size, "blocktopk: tokens per page, P")->capture_default_str();
  app.add_option("--topk-pages", o.topk_pages, "blocktopk: pages selected per step, K")->capture_default_str();
  app.add_option("--summary-dtype", o.summary_dtype,
                 "blocktopk: page summaries in the KV dtype (auto) or as int8 codes + a scale (int8)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "int8"}));
}

void add_hardware_options(CLI::App& app, cost::HardwareOptions& o) {
  std::string names;
  for (const cost::HardwarePreset& h : cost::hardware_presets()) names += fmt::format("{}{} ({})", names.empty() ? "" : ", ", h.name, h.intensity);
  auto* hw = app.add_option("--hardware", o.hardware, "arithmetic intensity preset: " + names + "; default b200");
  auto* in = app.add_option("--intensity", o.intensity, "arithmetic intensity I in FLOP/byte");
  hw->excludes(in);
}

}  // namespace kf::cli

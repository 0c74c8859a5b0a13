// kinfer frontier: accuracy (coverage pass@N, majority maj@N) against mean
// eFLOPs per problem for every trace and sample count, the Pareto frontier
// across them, and optionally a gnuplot PNG.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "cost/frontier.h"
#include "cost_options.h"
#include "cost/plot.h"
#include "cost/sweep.h"
#include "util/error.h"

namespace kf::cli {

int cmd_frontier(int argc, char** argv) {
  CLI::App app{"Accuracy vs eFLOPs across traces (Best-of-N and long-CoT), with the Pareto frontier",
               "kinfer frontier"};
  cost::SweepOptions o;
  cost::AttnOptions attn_opts;
  cost::HardwareOptions hw;
  std::string budgets, ns, metric_name = "coverage", plot, title;
  bool json = false, no_progress = false;
  app.add_option("traces", o.traces, "kinfer traces (kinfer eval --out) or Kinetics result files (.jsonl)")
      ->required();
  app.add_option("--model,-m", o.model,
                 "price every trace with this preset or checkpoint (default: the preset named in each trace's "
                 "model field or file name)");
  app.add_option("--tokenizer", o.tokenizer,
                 "tokenizer (HF dir, tokenizer.json or GGUF) to count tokens of traces that have none (Kinetics "
                 "files) and to cut samples at --budgets");
  app.add_option("--budgets", budgets, "long-CoT: cut every sample at each of these token budgets and re-grade");
  app.add_option("--ns", ns, "sample counts N (default 1, 2, 4, ... up to the samples per problem)");
  app.add_option("--metric", metric_name, "accuracy for the frontier and plot: coverage (pass@N) or majority")
      ->capture_default_str()
      ->check(CLI::IsMember({"coverage", "majority"}));
  add_attn_options(app, attn_opts);
  add_hardware_options(app, hw);
  app.add_option("--plot", plot, "write accuracy vs eFLOPs (log x) to this PNG with gnuplot");
  app.add_option("--title", title, "plot title");
  app.add_flag("--json", json, "print the points as JSON");
  app.add_flag("--progress", o.progress, "show progress bars even when stderr is not a terminal");
  app.add_flag("--no-progress", no_progress, "(progress bars only show on a terminal or with --progress)");
  CLI11_PARSE(app, argc, argv);

  if (app.count("--attn")) o.attn = cost::attn_from_options(attn_opts);
  o.intensity = cost::intensity_from_options(hw);
  if (!budgets.empty()) o.budgets = cost::parse_int_list(budgets, "--budgets");
  if (!ns.empty()) o.ns = cost::parse_int_list(ns, "--ns");
  if (no_progress) o.progress = false;
  const cost::Metric metric = cost::parse_metric(metric_name);

  std::vector<cost::FrontierPoint> points = cost::sweep_traces(o);
  cost::mark_frontier(points, metric);
  if (!plot.empty()) {
    if (title.empty()) title = fmt::format("{} vs eFLOPs ({})", cost::metric_name(metric), hw.label());
    cost::plot_frontier(points, metric, plot, title);
  }

  if (json) {
    nlohmann::json j = {{"metric", cost::metric_name(metric)}, {"intensity", o.intensity}, {"hardware", hw.label()}};
    j["points"] = nlohmann::json::array();
    j["frontier"] = nlohmann::json::array();
    for (const cost::FrontierPoint& p : points) {
      j["points"].push_back(cost::point_json(p));
      if (p.on_frontier) j["frontier"].push_back(cost::point_json(p));
    }
    if (!plot.empty()) j["plot"] = plot;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%-44s %7s %5s %9s %9s %9s %13s  %s\n", "configuration", "budget", "N", "coverage", "maj@N", "mean L",
              "eFLOPs/1e12", "frontier");
  for (const cost::FrontierPoint& p : points) {
    std::printf("%-44s %7s %5lld %9.4f %9.4f %9.0f %13.4f  %s\n", p.label.c_str(),
                p.gen_budget ? std::to_string(p.gen_budget).c_str() : "-", static_cast<long long>(p.n), p.coverage,
                p.majority, p.mean_gen_tokens, p.efflops * 1e-12, p.on_frontier ? "*" : "");
  }
  std::printf("\n%s: intensity %g FLOP/byte; * = on the Pareto frontier of %s vs eFLOPs\n", hw.label().c_str(),
              o.intensity, cost::metric_name(metric));
  if (!plot.empty()) std::printf("plot: %s\n", plot.c_str());
  return 0;
}

}  // namespace kf::cli

// kinfer plan: what to run for a budget of E eFLOPs per problem. With traces:
// the measured configuration (model, attention, N, generation budget) with the
// best accuracy within E, and the runners-up. Without traces (--prompt-len):
// the largest N and L each preset model and policy can afford.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_checks.h"
#include "commands.h"
#include "cost/frontier.h"
#include "cost_options.h"
#include "cost/plan.h"
#include "cost/presets.h"
#include "cost/sweep.h"
#include "util/error.h"

namespace kf::cli {

namespace {

int plan_from_traces(const cost::SweepOptions& o, double budget, cost::Metric metric, size_t top, bool json) {
  std::vector<cost::FrontierPoint> points = cost::sweep_traces(o);
  cost::mark_frontier(points, metric);
  const std::vector<cost::FrontierPoint> best = cost::best_within(points, budget, metric, top + 1);
  if (json) {
    nlohmann::json j = {{"budget", budget}, {"metric", cost::metric_name(metric)}, {"intensity", o.intensity}};
    j["best"] = best.empty() ? nlohmann::json(nullptr) : cost::point_json(best.front());
    j["runners_up"] = nlohmann::json::array();
    for (size_t i = 1; i < best.size(); ++i) j["runners_up"].push_back(cost::point_json(best[i]));
    j["configurations"] = points.size();
    std::printf("%s\n", j.dump(2).c_str());
    return best.empty() ? 1 : 0;
  }
  if (best.empty()) {
    double cheapest = -1;
    for (const cost::FrontierPoint& p : points)
      if (cheapest < 0 || p.efflops < cheapest) cheapest = p.efflops;
    std::printf("no configuration fits in %.4g eFLOPs per problem (cheapest: %.4g)\n", budget, cheapest);
    return 1;
  }
  std::printf("budget %.4g eFLOPs per problem (%.4f x 1e12), best %s among %zu configurations:\n\n", budget,
              budget * 1e-12, cost::metric_name(metric), points.size());
  std::printf("   %-44s %7s %5s %9s %9s %13s\n", "configuration", "budget", "N", "coverage", "maj@N", "eFLOPs/1e12");
  for (size_t i = 0; i < best.size(); ++i) {
    const cost::FrontierPoint& p = best[i];
    std::printf("%s %-44s %7s %5lld %9.4f %9.4f %13.4f\n", i == 0 ? "=>" : "  ", p.label.c_str(),
                p.gen_budget ? std::to_string(p.gen_budget).c_str() : "-", static_cast<long long>(p.n), p.coverage,
                p.majority, p.efflops * 1e-12);
  }
  return 0;
}

int plan_from_model(const std::vector<std::string>& models, const std::vector<cost::AttnSpec>& attns, double intensity,
                    int64_t prompt_len, double budget, int64_t max_n, int64_t max_len, bool json) {
  std::vector<cost::ModelShape> shapes;
  for (const std::string& m : models) shapes.push_back(cost::resolve_model(m).shape);
  const std::vector<cost::Affordable> rows =
      cost::affordable_configs(shapes, attns, intensity, prompt_len, budget, max_n, max_len);
  if (json) {
    nlohmann::json j = {{"budget", budget}, {"intensity", intensity}, {"prompt_len", prompt_len},
                        {"max_len", max_len}};
    j["configs"] = nlohmann::json::array();
    for (const cost::Affordable& a : rows) {
      j["configs"].push_back({{"model", a.model},
                              {"attn", a.attn},
                              {"n", a.n},
                              {"max_gen_len", a.max_gen_len},
                              {"efflops", a.cost.efflops()},
                              {"compute", a.cost.compute()},
                              {"memory", a.cost.memory()}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("budget %.4g eFLOPs per problem, prompt %lld tokens, I = %g; longest affordable generation L per N "
              "(capped at %lld):\n\n",
              budget, static_cast<long long>(prompt_len), intensity, static_cast<long long>(max_len));
  std::printf("%-12s %-28s %6s %10s %13s\n", "model", "attention", "N", "max L", "eFLOPs/1e12");
  std::string last;
  for (const cost::Affordable& a : rows) {
    const std::string key = a.model + a.attn;
    if (!last.empty() && key != last) std::printf("\n");
    last = key;
    std::printf("%-12s %-28s %6lld %10lld %13.4f\n", a.model.c_str(), a.attn.c_str(), static_cast<long long>(a.n),
                static_cast<long long>(a.max_gen_len), a.cost.efflops() * 1e-12);
  }
  if (rows.empty()) std::printf("(nothing fits: even one token of the smallest model costs more)\n");
  return 0;
}

}  // namespace

int cmd_plan(int argc, char** argv) {
  CLI::App app{"Best test-time scaling configuration within an eFLOPs budget per problem", "kinfer plan"};
  double budget = 0;
  cost::SweepOptions o;
  cost::AttnOptions attn_opts;
  cost::HardwareOptions hw;
  std::string budgets, ns, metric_name = "coverage", models_text, attns_text = "dense,blocktopk";
  int64_t prompt_len = -1, max_n = 1024, max_len = 32768;
  size_t top = 5;
  bool json = false;
  app.add_option("--budget,-E", budget, "eFLOPs per problem (e.g. 3e15)")->required()->check(kf::cli::kPositive);
  app.add_option("traces", o.traces, "kinfer traces or Kinetics result files (as kinfer frontier)");
  app.add_option("--prompt-len", prompt_len, "without traces: prompt tokens Lin to plan for");
  app.add_option("--models", models_text, "without traces: comma-separated presets or checkpoints (default: all presets)");
  app.add_option("--policies", attns_text,
                 "without traces: policies to compare, from dense, sparse, blocktopk, blocktopk-int8 (block top-k "
                 "with int8 page summaries; sizes from --budget-tokens, --local-tokens, --page-size, --topk-pages)")
      ->capture_default_str();
  app.add_option("--max-n", max_n, "without traces: largest N to list")->capture_default_str();
  app.add_option("--max-len", max_len, "without traces: longest generation considered")->capture_default_str();
  app.add_option("--model,-m", o.model, "traces: price every trace with this preset or checkpoint");
  app.add_option("--tokenizer", o.tokenizer, "traces: tokenizer for traces without token counts and for --budgets");
  app.add_option("--budgets", budgets, "traces: long-CoT token budgets to consider");
  app.add_option("--ns", ns, "traces: sample counts N (default 1, 2, 4, ...)");
  app.add_option("--metric", metric_name, "coverage (pass@N) or majority")
      ->capture_default_str()
      ->check(CLI::IsMember({"coverage", "majority"}));
  app.add_option("--top", top, "runners-up to show")->capture_default_str();
  app.add_option("--attn", attn_opts.attn, "traces: override the traces' attention policy (dense, sparse, blocktopk)")
      ->check(CLI::IsMember({"dense", "sparse", "blocktopk"}));
  app.add_option("--budget-tokens", attn_opts.budget, "sparse: KV tokens read per decode step (B)");
  app.add_option("--local-tokens", attn_opts.local_tokens, "blocktopk: sink + local tokens T")->capture_default_str();
  app.add_option("--page-size", attn_opts.page_size, "blocktopk: page size P")->capture_default_str();
  app.add_option("--topk-pages", attn_opts.topk_pages, "blocktopk: pages per step K")->capture_default_str();
  app.add_option("--summary-dtype", attn_opts.summary_dtype,
                 "traces: with --attn blocktopk, page summaries in the KV dtype (auto) or as int8 codes + a scale")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "int8"}));
  add_hardware_options(app, hw);
  app.add_flag("--json", json, "print JSON");
  app.add_flag("--progress", o.progress, "show progress bars even when stderr is not a terminal");
  CLI11_PARSE(app, argc, argv);

  o.intensity = cost::intensity_from_options(hw);
  const cost::Metric metric = cost::parse_metric(metric_name);
  if (!o.traces.empty()) {
    KF_CHECK(attn_opts.summary_dtype == "auto" || app.count("--attn"),
             "--summary-dtype prices the traces with --attn blocktopk; give --attn too");
    if (app.count("--attn")) o.attn = cost::attn_from_options(attn_opts);
    if (!budgets.empty()) o.budgets = cost::parse_int_list(budgets, "--budgets");
    if (!ns.empty()) o.ns = cost::parse_int_list(ns, "--ns");
    return plan_from_traces(o, budget, metric, top, json);
  }
  KF_CHECK(prompt_len >= 0, "give trace files, or --prompt-len to plan from the cost model alone");
  KF_CHECK(attn_opts.summary_dtype == "auto", "--summary-dtype applies to trace pricing (--attn); without traces, "
           "list blocktopk-int8 in --policies");
  KF_CHECK(max_n >= 1 && max_len >= 1, "--max-n and --max-len must be >= 1");
  std::vector<std::string> models;
  if (models_text.empty()) {
    models = model_preset_names();
  } else {
    for (size_t start = 0; start <= models_text.size();) {
      size_t end = models_text.find(',', start);
      if (end == std::string::npos) end = models_text.size();
      if (end > start) models.push_back(models_text.substr(start, end - start));
      start = end + 1;
    }
  }
  std::vector<cost::AttnSpec> attns;
  for (size_t start = 0; start <= attns_text.size();) {
    size_t end = attns_text.find(',', start);
    if (end == std::string::npos) end = attns_text.size();
    cost::AttnOptions a = attn_opts;
    a.attn = attns_text.substr(start, end - start);
    if (a.attn == "blocktopk-int8") {
      a.attn = "blocktopk";
      a.summary_dtype = "int8";
    }
    KF_CHECK(a.attn == "dense" || a.attn == "sparse" || a.attn == "blocktopk",
             "--policies: unknown policy '{}' (dense, sparse, blocktopk, blocktopk-int8)", a.attn);
    // Sparse defaults to blocktopk's budget so the two compare at equal B.
    if (a.attn == "sparse" && a.budget == 0) a.budget = a.local_tokens + a.page_size * a.topk_pages;
    if (a.attn != "sparse") a.budget = 0;
    attns.push_back(cost::attn_from_options(a));
    start = end + 1;
  }
  return plan_from_model(models, attns, o.intensity, prompt_len, budget, max_n, max_len, json);
}

}  // namespace kf::cli

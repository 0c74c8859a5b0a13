// Accuracy-vs-cost frontier: for each run configuration (model, attention
// policy, optional generation budget) and each sample count N, the mean
// coverage (pass@N) and majority-vote accuracy over problems and the mean
// eFLOPs per problem, each problem priced from its own samples' real lengths.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cost/cost.h"
#include "eval/metrics.h"

namespace kf::cost {

// One problem's samples as the frontier needs them.
struct ProblemRun {
  int64_t prompt_tokens = 0;
  std::vector<int64_t> gen_tokens;
  std::vector<bool> correct;
  std::vector<std::string> predictions;  // extracted answers for the vote ("" abstains)
};

struct RunConfig {
  std::string label;       // "qwen3-8b dense", shown in tables and the plot legend
  std::string source;      // the trace file
  ModelShape model;
  AttnSpec attn;
  int64_t gen_budget = 0;  // long-CoT truncation in tokens (0: none)
  std::vector<ProblemRun> problems;
};

enum class Metric { Coverage, Majority };
const char* metric_name(Metric m);
Metric parse_metric(const std::string& name);  // "coverage" | "majority"

struct FrontierPoint {
  std::string label;
  std::string source;
  std::string model;
  std::string attn;
  int64_t n = 1;
  int64_t gen_budget = 0;
  double coverage = 0;   // mean pass@N
  double majority = 0;   // mean maj@N
  double compute = 0;    // mean per problem
  double memory = 0;
  double efflops = 0;
  double mean_gen_tokens = 0;
  bool on_frontier = false;
  double accuracy(Metric m) const { return m == Metric::Coverage ? coverage : majority; }
};

// Sample counts 1, 2, 4, ... up to the smallest per-problem sample count.
std::vector<int64_t> default_sample_counts(const RunConfig& run);

// One point per N (ns empty: default_sample_counts). Throws kf::Error when a
// problem has fewer samples than an N asked for or no samples at all.
std::vector<FrontierPoint> evaluate_run(const RunConfig& run, double intensity, const std::vector<int64_t>& ns = {},
                                        const eval::SameAnswer& same = {});

// Marks the Pareto-optimal points: no other point costs no more and is at
// least as accurate, with one of the two strictly better.
void mark_frontier(std::vector<FrontierPoint>& points, Metric metric);

// Long-CoT: every sample cut at `budget` tokens. Samples that fit keep their
// grade; a longer one is re-graded by `regrade(problem, sample)` which returns
// {correct, prediction}; with no regrade function a cut sample counts wrong
// (a thinking model's cut response has no final answer yet).
using Regrade = std::function<std::pair<bool, std::string>(size_t problem, size_t sample)>;
RunConfig truncate_run(const RunConfig& run, int64_t budget, const Regrade& regrade = {});

nlohmann::json point_json(const FrontierPoint& p);

}  // namespace kf::cost

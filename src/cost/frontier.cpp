#include "cost/frontier.h"

#include <algorithm>

#include "util/error.h"

namespace kf::cost {

const char* metric_name(Metric m) { return m == Metric::Coverage ? "coverage" : "majority"; }

Metric parse_metric(const std::string& name) {
  if (name == "coverage") return Metric::Coverage;
  if (name == "majority") return Metric::Majority;
  fail("unknown metric '{}' (known: coverage, majority)", name);
}

std::vector<int64_t> default_sample_counts(const RunConfig& run) {
  KF_CHECK(!run.problems.empty(), "{}: no problems", run.source);
  size_t min_n = run.problems.front().gen_tokens.size();
  for (const ProblemRun& p : run.problems) min_n = std::min(min_n, p.gen_tokens.size());
  KF_CHECK(min_n > 0, "{}: a problem has no samples", run.source);
  std::vector<int64_t> ns;
  for (int64_t k = 1; k <= int64_t(min_n); k *= 2) ns.push_back(k);
  return ns;
}

std::vector<FrontierPoint> evaluate_run(const RunConfig& run, double intensity, const std::vector<int64_t>& ns_in,
                                        const eval::SameAnswer& same) {
  const std::vector<int64_t> ns = ns_in.empty() ? default_sample_counts(run) : ns_in;
  std::vector<FrontierPoint> points;
  for (int64_t n : ns) {
    FrontierPoint pt;
    pt.label = run.label;
    pt.source = run.source;
    pt.model = run.model.name;
    pt.attn = run.attn.label();
    pt.n = n;
    pt.gen_budget = run.gen_budget;
    double tokens = 0;
    size_t token_count = 0;
    for (size_t i = 0; i < run.problems.size(); ++i) {
      const ProblemRun& p = run.problems[i];
      const int64_t have = int64_t(p.gen_tokens.size());
      KF_CHECK(have >= n, "{}: problem {} has {} samples, fewer than N={}", run.source, i, have, n);
      KF_CHECK(p.correct.size() == p.gen_tokens.size(), "{}: problem {}: {} grades for {} samples", run.source, i,
               p.correct.size(), p.gen_tokens.size());
      const int64_t c = std::count(p.correct.begin(), p.correct.end(), true);
      pt.coverage += eval::pass_at_k(have, c, n);
      std::vector<std::string> preds = p.predictions;
      preds.resize(p.correct.size());  // missing predictions abstain
      pt.majority += eval::majority_at_k(preds, p.correct, n, same);
      const Cost cost = expected_cost(run.model, run.attn, intensity, p.prompt_tokens, p.gen_tokens, n);
      pt.compute += cost.compute();
      pt.memory += cost.memory();
      pt.efflops += cost.efflops();
      for (int64_t l : p.gen_tokens) tokens += double(l);
      token_count += p.gen_tokens.size();
    }
    const double k = double(run.problems.size());
    pt.coverage /= k;
    pt.majority /= k;
    pt.compute /= k;
    pt.memory /= k;
    pt.efflops /= k;
    pt.mean_gen_tokens = token_count ? tokens / double(token_count) : 0;
    points.push_back(std::move(pt));
  }
  return points;
}

void mark_frontier(std::vector<FrontierPoint>& points, Metric metric) {
  for (FrontierPoint& p : points) {
    p.on_frontier = true;
    for (const FrontierPoint& q : points) {
      const bool no_worse = q.efflops <= p.efflops && q.accuracy(metric) >= p.accuracy(metric);
      const bool better = q.efflops < p.efflops || q.accuracy(metric) > p.accuracy(metric);
      if (no_worse && better) {
        p.on_frontier = false;
        break;
      }
    }
  }
}

RunConfig truncate_run(const RunConfig& run, int64_t budget, const Regrade& regrade) {
  KF_CHECK(budget > 0, "generation budget must be > 0 (got {})", budget);
  RunConfig out = run;
  out.gen_budget = budget;
  for (size_t i = 0; i < out.problems.size(); ++i) {
    ProblemRun& p = out.problems[i];
    p.predictions.resize(p.gen_tokens.size());
    for (size_t s = 0; s < p.gen_tokens.size(); ++s) {
      if (p.gen_tokens[s] <= budget) continue;
      p.gen_tokens[s] = budget;
      if (regrade) {
        auto [correct, prediction] = regrade(i, s);
        p.correct[s] = correct;
        p.predictions[s] = std::move(prediction);
      } else {
        p.correct[s] = false;
        p.predictions[s].clear();
      }
    }
  }
  return out;
}

nlohmann::json point_json(const FrontierPoint& p) {
  return {{"label", p.label},
          {"source", p.source},
          {"model", p.model},
          {"attn", p.attn},
          {"n", p.n},
          {"gen_budget", p.gen_budget},
          {"coverage", p.coverage},
          {"majority", p.majority},
          {"compute", p.compute},
          {"memory", p.memory},
          {"efflops", p.efflops},
          {"mean_gen_tokens", p.mean_gen_tokens},
          {"on_frontier", p.on_frontier}};
}

}  // namespace kf::cost

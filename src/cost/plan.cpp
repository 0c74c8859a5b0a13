#include "cost/plan.h"

#include <algorithm>

#include "util/error.h"

namespace kf::cost {

std::vector<FrontierPoint> best_within(const std::vector<FrontierPoint>& points, double budget, Metric metric,
                                       size_t count) {
  std::vector<FrontierPoint> ok;
  for (const FrontierPoint& p : points)
    if (p.efflops <= budget) ok.push_back(p);
  std::stable_sort(ok.begin(), ok.end(), [metric](const FrontierPoint& a, const FrontierPoint& b) {
    if (a.accuracy(metric) != b.accuracy(metric)) return a.accuracy(metric) > b.accuracy(metric);
    if (a.efflops != b.efflops) return a.efflops < b.efflops;
    return a.n < b.n;
  });
  if (count > 0 && ok.size() > count) ok.resize(count);
  return ok;
}

int64_t max_affordable_gen_len(const ModelShape& model, const AttnSpec& attn, double intensity, int64_t prompt_len,
                               int64_t n_samples, double budget, int64_t max_len) {
  KF_CHECK(max_len >= 1, "maximum generation length must be >= 1 (got {})", max_len);
  const auto fits = [&](int64_t l) {
    return cost(model, attn, intensity, prompt_len, l, n_samples).efflops() <= budget;
  };
  if (!fits(1)) return 0;
  int64_t lo = 1, hi = max_len;  // invariant: fits(lo)
  if (fits(hi)) return hi;
  while (hi - lo > 1) {  // fits(lo) && !fits(hi)
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

std::vector<Affordable> affordable_configs(const std::vector<ModelShape>& models, const std::vector<AttnSpec>& attns,
                                           double intensity, int64_t prompt_len, double budget, int64_t max_n,
                                           int64_t max_len) {
  std::vector<Affordable> out;
  for (const ModelShape& m : models) {
    for (const AttnSpec& a : attns) {
      for (int64_t n = 1; n <= max_n; n *= 2) {
        const int64_t l = max_affordable_gen_len(m, a, intensity, prompt_len, n, budget, max_len);
        if (l == 0) break;  // more samples cost more still
        out.push_back({m.name, a.label(), n, l, cost(m, a, intensity, prompt_len, l, n)});
      }
    }
  }
  return out;
}

}  // namespace kf::cost

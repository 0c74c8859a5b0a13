// Budget planning: the best configuration within an eFLOPs budget per
// problem, from measured frontier points or, without traces, from the cost
// model alone (the largest N and L each model and policy can afford).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cost/cost.h"
#include "cost/frontier.h"

namespace kf::cost {

// Points with efflops <= budget, best first: higher accuracy, then cheaper,
// then fewer samples. At most `count` (0: all).
std::vector<FrontierPoint> best_within(const std::vector<FrontierPoint>& points, double budget, Metric metric,
                                       size_t count);

// The largest L in [0, max_len] with cost(N samples of L tokens) <= budget
// (cost grows with L, so a binary search finds it). 0 when even one token is too dear.
int64_t max_affordable_gen_len(const ModelShape& model, const AttnSpec& attn, double intensity, int64_t prompt_len,
                               int64_t n_samples, double budget, int64_t max_len);

struct Affordable {
  std::string model;
  std::string attn;
  int64_t n = 1;
  int64_t max_gen_len = 0;  // 0: cannot afford
  Cost cost;                // at max_gen_len
};

// For each model and policy, for N = 1, 2, 4, ... while at least one token is
// affordable (N <= max_n): the longest affordable generation.
std::vector<Affordable> affordable_configs(const std::vector<ModelShape>& models, const std::vector<AttnSpec>& attns,
                                           double intensity, int64_t prompt_len, double budget, int64_t max_n,
                                           int64_t max_len);

}  // namespace kf::cost

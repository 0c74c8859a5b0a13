// Accuracy-vs-eFLOPs plots with gnuplot (Debian's gnuplot-nox): one curve per
// run configuration (its points ordered by cost), log-scaled cost axis in
// units of 1e12 eFLOPs, the Pareto frontier drawn on top.
#pragma once
#include <string>
#include <vector>

#include "cost/frontier.h"

namespace kf::cost {

// The gnuplot script that draws `points` into `png_path`, reading the data
// blocks it embeds (exposed for tests).
std::string frontier_gnuplot_script(const std::vector<FrontierPoint>& points, Metric metric,
                                    const std::string& png_path, const std::string& title);

// Runs gnuplot ($KINFER_GNUPLOT or `gnuplot` on PATH) and checks that a
// non-empty PNG came out; throws kf::Error otherwise.
void plot_frontier(const std::vector<FrontierPoint>& points, Metric metric, const std::string& png_path,
                   const std::string& title);

}  // namespace kf::cost

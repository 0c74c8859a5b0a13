// Frontier, planner and plot on a constructed set whose answer is worked out
// by hand. Tiny model: P params, Hq = Hkv = 1, head_dim 1, 1 layer (D 1),
// prompt 0, intensity 0, so a dense sample of L tokens costs 2PL + 2L^2 FLOPs.
#include <gtest/gtest.h>

#include <filesystem>

#include "cost/frontier.h"
#include "cost/plan.h"
#include "cost/plot.h"
#include "util/error.h"

namespace kf::cost {
namespace {

ModelShape tiny(double params) { return ModelShape{"tiny", params, 1, 1, 1, 1}; }

ProblemRun problem(std::vector<int64_t> lens, std::vector<bool> correct) {
  ProblemRun p;
  p.prompt_tokens = 0;
  p.gen_tokens = std::move(lens);
  p.correct = std::move(correct);
  for (bool c : p.correct) p.predictions.push_back(c ? "right" : "");
  return p;
}

RunConfig run(const char* label, double params, std::vector<ProblemRun> problems) {
  RunConfig r;
  r.label = label;
  r.source = label;
  r.model = tiny(params);
  r.problems = std::move(problems);
  return r;
}

// A: P 1000, L 10: 20200 per sample; coverage .25 (N 1), .5 (N 2).
// B: P 4000, L 10: 80200 per sample; coverage .75, 1.
// C: P 1000, L 20: 40800 per sample; coverage .25, .5 -> dominated by A.
std::vector<FrontierPoint> constructed() {
  std::vector<FrontierPoint> all;
  for (const RunConfig& r : {run("A", 1000, {problem({10, 10}, {true, false}), problem({10, 10}, {false, false})}),
                             run("B", 4000, {problem({10, 10}, {true, true}), problem({10, 10}, {true, false})}),
                             run("C", 1000, {problem({20, 20}, {false, false}), problem({20, 20}, {true, false})})}) {
    std::vector<FrontierPoint> pts = evaluate_run(r, 0.0);
    all.insert(all.end(), pts.begin(), pts.end());
  }
  return all;
}

TEST(Frontier, CoverageAndCostPerN) {
  const std::vector<FrontierPoint> pts = constructed();
  ASSERT_EQ(pts.size(), 6u);
  const double want_cov[] = {0.25, 0.5, 0.75, 1.0, 0.25, 0.5};
  const double want_cost[] = {20200, 40400, 80200, 160400, 40800, 81600};
  for (size_t i = 0; i < pts.size(); ++i) {
    EXPECT_DOUBLE_EQ(pts[i].coverage, want_cov[i]) << i;
    EXPECT_DOUBLE_EQ(pts[i].efflops, want_cost[i]) << i;
    EXPECT_EQ(pts[i].n, i % 2 == 0 ? 1 : 2);
  }
  // maj@2 for B: problem 1 votes right (2 votes), problem 2: one vote "right" vs an abstention -> right.
  EXPECT_DOUBLE_EQ(pts[3].majority, 1.0);
  EXPECT_DOUBLE_EQ(pts[2].majority, 0.75);  // maj@1 = accuracy
  EXPECT_DOUBLE_EQ(pts[0].mean_gen_tokens, 10);
}

TEST(Frontier, ParetoSetIsKnown) {
  std::vector<FrontierPoint> pts = constructed();
  mark_frontier(pts, Metric::Coverage);
  const bool want[] = {true, true, true, true, false, false};
  for (size_t i = 0; i < pts.size(); ++i) EXPECT_EQ(pts[i].on_frontier, want[i]) << pts[i].label << " N" << pts[i].n;
}

TEST(Frontier, EachProblemPricedFromItsOwnLengths) {
  // Lengths 10 and 30: mean of (20000+200) and (60000+1800) = 41000 per sample.
  const RunConfig r = run("D", 1000, {problem({10, 30}, {true, false})});
  const std::vector<FrontierPoint> pts = evaluate_run(r, 0.0, {1, 2});
  EXPECT_DOUBLE_EQ(pts[0].efflops, 41000);
  EXPECT_DOUBLE_EQ(pts[1].efflops, 82000);
  EXPECT_DOUBLE_EQ(pts[0].coverage, 0.5);
  EXPECT_DOUBLE_EQ(pts[1].coverage, 1.0);
  EXPECT_THROW(evaluate_run(r, 0.0, {4}), Error);  // only 2 samples
}

TEST(Frontier, LongCotTruncation) {
  const RunConfig r = run("E", 1000, {problem({5, 30}, {false, true})});
  const RunConfig cut = truncate_run(r, 10);  // no re-grader: the cut sample counts wrong
  EXPECT_EQ(cut.gen_budget, 10);
  EXPECT_EQ(cut.problems[0].gen_tokens, (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(cut.problems[0].correct, (std::vector<bool>{false, false}));
  int calls = 0;
  const RunConfig regraded = truncate_run(r, 10, [&](size_t p, size_t s) {
    ++calls;
    EXPECT_EQ(p, 0u);
    EXPECT_EQ(s, 1u);
    return std::make_pair(true, std::string("42"));
  });
  EXPECT_EQ(calls, 1);  // the sample that fits keeps its grade
  EXPECT_EQ(regraded.problems[0].correct, (std::vector<bool>{false, true}));
  EXPECT_EQ(regraded.problems[0].predictions[1], "42");
  const std::vector<FrontierPoint> pts = evaluate_run(cut, 0.0, {1});
  EXPECT_DOUBLE_EQ(pts[0].efflops, ((10000 + 50) + (20000 + 200)) / 2.0);
}

TEST(Plan, BestWithinBudget) {
  std::vector<FrontierPoint> pts = constructed();
  const std::vector<FrontierPoint> best = best_within(pts, 50000, Metric::Coverage, 3);
  ASSERT_EQ(best.size(), 3u);
  EXPECT_EQ(best[0].label, "A");  // coverage .5 at 40400
  EXPECT_EQ(best[0].n, 2);
  EXPECT_EQ(best[1].label, "A");  // .25 at 20200 beats C's .25 at 40800
  EXPECT_EQ(best[1].n, 1);
  EXPECT_EQ(best[2].label, "C");
  EXPECT_TRUE(best_within(pts, 1000, Metric::Coverage, 0).empty());
  EXPECT_EQ(best_within(pts, 1e9, Metric::Coverage, 0).front().label, "B");
}

TEST(Plan, LongestAffordableGeneration) {
  // 2000 L + 2 L^2 <= 20200 -> L = 10 exactly; one more token is too dear.
  EXPECT_EQ(max_affordable_gen_len(tiny(1000), AttnSpec{}, 0, 0, 1, 20200, 1 << 20), 10);
  EXPECT_EQ(max_affordable_gen_len(tiny(1000), AttnSpec{}, 0, 0, 1, 20199, 1 << 20), 9);
  EXPECT_EQ(max_affordable_gen_len(tiny(1000), AttnSpec{}, 0, 0, 2, 40400, 1 << 20), 10);
  EXPECT_EQ(max_affordable_gen_len(tiny(1000), AttnSpec{}, 0, 0, 1, 100, 1 << 20), 0);
  EXPECT_EQ(max_affordable_gen_len(tiny(1000), AttnSpec{}, 0, 0, 1, 1e18, 32768), 32768);  // capped
  const std::vector<Affordable> rows = affordable_configs({tiny(1000)}, {AttnSpec{}}, 0, 0, 20200, 64, 1 << 20);
  ASSERT_EQ(rows.size(), 4u);  // N 1, 2, 4, 8 afford >= 1 token; N 16 does not (16 x 2002 > 20200)
  EXPECT_EQ(rows[0].max_gen_len, 10);
  EXPECT_EQ(rows[3].n, 8);
  EXPECT_LE(rows[3].cost.efflops(), 20200);
}

TEST(Plot, ScriptAndPng) {
  std::vector<FrontierPoint> pts = constructed();
  mark_frontier(pts, Metric::Coverage);
  const std::string png = (std::filesystem::temp_directory_path() / "kinfer_frontier_test.png").string();
  const std::string script = frontier_gnuplot_script(pts, Metric::Coverage, png, "test");
  EXPECT_NE(script.find("set logscale x"), std::string::npos);
  EXPECT_NE(script.find("title \"A\""), std::string::npos);
  EXPECT_NE(script.find("title \"C\""), std::string::npos);
  EXPECT_NE(script.find("Pareto frontier"), std::string::npos);
  if (std::system("gnuplot --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot not installed";
  plot_frontier(pts, Metric::Coverage, png, "accuracy vs eFLOPs");
  ASSERT_TRUE(std::filesystem::exists(png));
  EXPECT_GT(std::filesystem::file_size(png), 1000u);
  std::filesystem::remove(png);
}

}  // namespace
}  // namespace kf::cost

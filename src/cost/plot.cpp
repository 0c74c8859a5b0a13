#include "cost/plot.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "util/error.h"

namespace kf::cost {

namespace {

// gnuplot strings are double-quoted; keep labels printable.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c == '\n' ? ' ' : c);
  }
  return out + "\"";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

std::string frontier_gnuplot_script(const std::vector<FrontierPoint>& points, Metric metric,
                                    const std::string& png_path, const std::string& title) {
  KF_CHECK(!points.empty(), "nothing to plot");
  // Curves in order of first appearance; within a curve, by cost.
  std::vector<std::string> labels;
  std::map<std::string, std::vector<const FrontierPoint*>> curves;
  for (const FrontierPoint& p : points) {
    if (!curves.count(p.label)) labels.push_back(p.label);
    curves[p.label].push_back(&p);
  }
  std::vector<const FrontierPoint*> frontier;
  for (const FrontierPoint& p : points)
    if (p.on_frontier) frontier.push_back(&p);
  const auto by_cost = [](const FrontierPoint* a, const FrontierPoint* b) { return a->efflops < b->efflops; };
  std::sort(frontier.begin(), frontier.end(), by_cost);

  std::string s;
  s += "set terminal pngcairo size 1100,700 enhanced font 'sans,11'\n";
  s += "set output " + quote(png_path) + "\n";
  s += "set title " + quote(title) + " noenhanced\n";
  s += "set logscale x 10\nset grid\nset key inside left top box opaque noenhanced\n";
  s += "set offsets 0, 0, graph 0.35, 0\n";  // headroom above the curves for the key
  s += "set xlabel 'eFLOPs per problem (x 1e12)'\n";
  s += fmt::format("set ylabel '{}' noenhanced\n", metric == Metric::Coverage ? "coverage (pass@N)" : "majority vote (maj@N)");
  for (size_t c = 0; c < labels.size(); ++c) {
    std::vector<const FrontierPoint*>& pts = curves[labels[c]];
    std::stable_sort(pts.begin(), pts.end(), by_cost);
    s += fmt::format("$c{} << EOD\n", c);
    for (const FrontierPoint* p : pts) s += fmt::format("{:.9g} {:.9g}\n", p->efflops * 1e-12, p->accuracy(metric));
    s += "EOD\n";
  }
  s += "$frontier << EOD\n";
  for (const FrontierPoint* p : frontier) s += fmt::format("{:.9g} {:.9g}\n", p->efflops * 1e-12, p->accuracy(metric));
  s += "EOD\n";
  s += "plot ";
  for (size_t c = 0; c < labels.size(); ++c)
    s += fmt::format("$c{} using 1:2 with linespoints pt 7 ps 0.8 title {}, ", c, quote(labels[c]));
  s += "$frontier using 1:2 with lines lw 3 lc rgb 'black' dt 2 title 'Pareto frontier', ";
  s += "$frontier using 1:2 with points pt 6 ps 2 lc rgb 'black' notitle\n";
  return s;
}

void plot_frontier(const std::vector<FrontierPoint>& points, Metric metric, const std::string& png_path,
                   const std::string& title) {
  const std::string script = frontier_gnuplot_script(points, metric, png_path, title);
  namespace fs = std::filesystem;
  const fs::path script_path = fs::path(png_path).string() + ".gnuplot";
  {
    std::ofstream out(script_path);
    KF_CHECK(out, "cannot write '{}'", script_path.string());
    out << script;
  }
  std::error_code ec;
  fs::remove(png_path, ec);  // so a stale file cannot pass the check below
  const char* env = std::getenv("KINFER_GNUPLOT");
  const std::string gnuplot = env && *env ? env : "gnuplot";
  const std::string cmd = shell_quote(gnuplot) + " " + shell_quote(script_path.string()) + " 2>&1";
  std::string output;
  {
    FILE* pipe = popen(cmd.c_str(), "r");
    KF_CHECK(pipe, "cannot run gnuplot ('{}')", cmd);
    char buf[512];
    while (fgets(buf, sizeof buf, pipe)) output += buf;
    const int rc = pclose(pipe);
    KF_CHECK(rc == 0, "gnuplot failed (exit {}) on {}: {} (install Debian's gnuplot-nox)", rc,
             script_path.string(), output);
  }
  KF_CHECK(fs::exists(png_path) && fs::file_size(png_path) > 0, "gnuplot wrote no plot to '{}': {}", png_path,
           output);
  fs::remove(script_path, ec);
}

}  // namespace kf::cost

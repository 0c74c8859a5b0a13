// kinfer regrade: re-score a trace without the model (answer extraction and
// equivalence as `kinfer grade`), and the long-CoT sweep: cut every sample to
// each --budgets token count, re-score and re-price it.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "cost/presets.h"
#include "cost/trace_runs.h"
#include "eval/dataset.h"
#include "eval/eval_run.h"
#include "eval/grade.h"
#include "eval/summary.h"
#include "eval/trace.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace kf::cli {
namespace {

std::vector<int64_t> parse_budgets(const std::string& csv) {
  std::vector<int64_t> out;
  for (const std::string& item : eval::split_ids(csv)) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    KF_CHECK(used == item.size() && v > 0, "--budgets: '{}' is not a positive token count", item);
    out.push_back(v);
  }
  return out;
}

// Prices every problem when the trace says enough (model shape, token counts).
bool price_all(std::vector<eval::TraceProblem>& problems, const std::optional<cost::ModelShape>& shape,
               const cost::AttnSpec& attn, double intensity) {
  if (!shape) return false;
  for (const eval::TraceProblem& p : problems) {
    for (const eval::TraceSample& s : p.samples) {
      if (s.gen_tokens < 0 || s.prompt_tokens < 0) return false;
    }
    if (p.samples.empty()) return false;
  }
  for (eval::TraceProblem& p : problems) p.efflops = cost::price_problem(p, *shape, attn, intensity);
  return true;
}

}  // namespace

int cmd_regrade(int argc, char** argv) {
  CLI::App app{"Re-grade a trace without the model; --budgets: truncate samples to token budgets (long-CoT sweep)",
               "kinfer regrade"};
  std::string path, budgets_csv, model, style_name = "auto", write_path, hardware = cost::kDefaultHardware;
  bool json = false;
  app.add_option("trace", path, "trace file (kinfer or Kinetics JSONL)")->required();
  app.add_option("--budgets", budgets_csv, "comma-separated token budgets, e.g. 2048,4096,8192");
  app.add_option("--model", model, "tokenizer for --budgets and token counts (default: the trace's model)");
  app.add_option("--style", style_name, "answer fallback: auto|math|numeric (auto: numeric when golds are numbers)")
      ->check(CLI::IsMember({"auto", "math", "numeric"}))
      ->capture_default_str();
  app.add_option("--write", write_path, "write the re-graded trace (full length) to this file");
  app.add_option("--hardware", hardware, "hardware preset pricing eFLOPs (b200|h200|h100)")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  const auto intensity = cost::hardware_intensity(hardware);
  KF_CHECK(intensity.has_value(), "--hardware '{}': not a known preset (b200, h200, h100)", hardware);
  const std::vector<int64_t> budgets = parse_budgets(budgets_csv);

  eval::Trace trace = eval::read_trace(path);
  if (!trace.header.shard.is_null())
    std::fprintf(stderr, "kinfer regrade: note: %s is shard %d/%d of a run (eval --shard): this covers its problems "
                 "only; kinfer merge joins the shards\n", path.c_str(), trace.header.shard.value("index", 0),
                 trace.header.shard.value("count", 0));
  const eval::AnswerStyle style = style_name == "numeric" ? eval::AnswerStyle::Numeric
                                  : style_name == "math"  ? eval::AnswerStyle::Math
                                                          : eval::style_for_golds(trace.problems);

  // A tokenizer is needed to cut samples to budgets and to count tokens of
  // traces that lack them (Kinetics files); the trace's own model by default.
  std::optional<Tokenizer> tok;
  const std::string tok_spec = !model.empty() ? model : trace.header.model;
  if (!budgets.empty() || !trace.has_token_counts()) {
    try {
      if (!tok_spec.empty()) tok.emplace(load_tokenizer(tok_spec));
    } catch (const Error& err) {
      KF_CHECK(budgets.empty(), "--budgets needs a tokenizer: {} (pass --model)", err.what());
    }
    KF_CHECK(tok || budgets.empty(), "--budgets needs a tokenizer: pass --model");
    if (tok && !trace.has_token_counts()) cost::fill_token_counts(trace, *tok);
  }

  const std::size_t changed = eval::regrade(trace.problems, style);
  const std::optional<cost::ModelShape> shape = cost::model_shape_for_trace(trace);
  const cost::AttnSpec attn = cost::attn_spec_from_json(trace.format == eval::TraceFormat::Kinfer
                                                            ? trace.header.attn
                                                            : trace.first_line,
                                                        path);
  price_all(trace.problems, shape, attn, *intensity);
  const eval::Summary full = eval::summarize(trace.problems);
  if (!write_path.empty()) eval::write_trace(write_path, trace);

  nlohmann::json sweep = nlohmann::json::array();
  std::string table;
  if (!budgets.empty()) {
    const eval::TruncateFn truncate = [&](const std::string& text, int64_t budget) {
      const std::vector<int32_t> ids = tok->encode(text);
      if (static_cast<int64_t>(ids.size()) <= budget) return std::make_pair(text, static_cast<int64_t>(ids.size()));
      const std::vector<int32_t> head(ids.begin(), ids.begin() + budget);
      return std::make_pair(tok->decode(head), budget);
    };
    table = "budget    acc@1   pass@max  maj@max  mean_gen  eFLOPs/problem\n";
    for (int64_t b : budgets) {
      std::vector<eval::TraceProblem> cut = eval::truncate_to_budget(trace.problems, b, style, truncate);
      const bool priced = price_all(cut, shape, attn, *intensity);
      const eval::Summary s = eval::summarize(cut);
      nlohmann::json j = eval::summary_json(s);
      j["budget"] = b;
      sweep.push_back(j);
      const double pass = s.pass_at.empty() ? 0 : s.pass_at.rbegin()->second;
      const double maj = s.maj_at.empty() ? 0 : s.maj_at.rbegin()->second;
      table += fmt::format("{:<9} {:.4f}  {:.4f}    {:.4f}   {:<8.1f}  {}\n", b, s.accuracy, pass, maj,
                           s.mean_gen_tokens, priced ? fmt::format("{:.4g}", s.efflops_per_problem) : "-");
    }
  }

  if (json) {
    nlohmann::json j = {{"trace", path},
                        {"answer_style", eval::answer_style_name(style)},
                        {"changed", changed},
                        {"summary", eval::summary_json(full)}};
    if (!budgets.empty()) j["budgets"] = sweep;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s: %zu verdicts changed by re-grading (%s answers)\n%s", path.c_str(), changed,
                eval::answer_style_name(style), eval::summary_text(full).c_str());
    if (!table.empty()) std::printf("\nlong-CoT sweep (samples cut to each budget):\n%s", table.c_str());
  }
  return 0;
}

}  // namespace kf::cli

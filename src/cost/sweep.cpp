#include "cost/sweep.h"

#include <cstdio>
#include <map>
#include <memory>

#include "cost/options.h"
#include "cost/trace_runs.h"
#include "eval/grade.h"
#include "eval/shard.h"
#include "eval/trace.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/progress.h"

namespace kf::cost {

namespace {

// Numeric-answer data (AIME, AMC, GSM8K) falls back to the last number.
eval::AnswerStyle style_for(const eval::Trace& t) {
  for (const eval::TraceProblem& p : t.problems) {
    const std::string& g = p.answer;
    if (g.empty() || g.find_first_not_of("0123456789.-, ") != std::string::npos) return eval::AnswerStyle::Math;
  }
  return eval::AnswerStyle::Numeric;
}

}  // namespace

std::vector<FrontierPoint> sweep_traces(const SweepOptions& o) {
  KF_CHECK(!o.traces.empty(), "no trace files given");
  std::unique_ptr<Tokenizer> tok;
  if (!o.tokenizer.empty()) tok = std::make_unique<Tokenizer>(load_tokenizer(o.tokenizer));
  std::optional<ResolvedModel> forced_model;
  if (!o.model.empty()) forced_model = resolve_model(o.model);
  const eval::SameAnswer same = [](std::string_view a, std::string_view b) { return eval::is_equiv(a, b); };

  std::vector<FrontierPoint> points;
  for (const std::string& path : o.traces) {
    eval::Trace trace = eval::read_trace(path);
    eval::require_whole(trace, "frontier and plan");
    if (!trace.has_token_counts()) {
      KF_CHECK(tok != nullptr,
               "{}: the trace has no token counts ({}); give --tokenizer (e.g. the model's tokenizer.json) to "
               "re-tokenise it",
               path, trace.format == eval::TraceFormat::Kinetics ? "a Kinetics file" : "missing gen_tokens");
      Progress bar("tokenise " + path, int64_t(trace.problems.size()), "problems", o.progress);
      fill_token_counts(trace, *tok);
      bar.finish();
    }
    ModelShape model;
    if (forced_model) {
      model = forced_model->shape;
    } else {
      auto found = model_shape_for_trace(trace);
      KF_CHECK(found.has_value(),
               "{}: cannot tell which model made this trace (no preset name in its model field '{}' or file "
               "name, no cost_model block); give --model",
               path, trace.header.model);
      model = *found;
    }
    const AttnSpec attn = o.attn ? *o.attn : attn_spec_from_json(trace.header.attn, path);
    const eval::AnswerStyle style = style_for(trace);
    const bool kinetics = trace.format == eval::TraceFormat::Kinetics;
    const Predict predict = [style](const std::string& text) { return eval::extract_answer(text, style); };
    const RunConfig run = run_from_trace(trace, model, attn, kinetics ? predict : Predict{});

    if (o.budgets.empty()) {
      std::vector<FrontierPoint> pts = evaluate_run(run, o.intensity, o.ns, same);
      points.insert(points.end(), pts.begin(), pts.end());
      continue;
    }
    if (!tok && !o.quiet)
      std::fprintf(stderr, "note: %s: no --tokenizer, so samples longer than a budget count as wrong\n", path.c_str());
    // Token ids per sample, encoded once and only for samples some budget cuts.
    std::map<std::pair<size_t, size_t>, std::vector<int32_t>> ids_cache;
    Progress bar("long-CoT " + path, int64_t(o.budgets.size()), "budgets", o.progress);
    for (size_t bi = 0; bi < o.budgets.size(); ++bi) {
      const int64_t budget = o.budgets[bi];
      Regrade regrade;
      if (tok) {
        regrade = [&](size_t pi, size_t si) {
          const eval::TraceProblem& tp = trace.problems[pi];
          auto [it, fresh] = ids_cache.try_emplace({pi, si});
          if (fresh) it->second = tok->encode(tp.samples[si].text);
          const std::vector<int32_t>& ids = it->second;
          const size_t keep = std::min(ids.size(), size_t(budget));
          const std::string cut = tok->decode(std::span<const int32_t>(ids.data(), keep));
          const eval::GradeResult g = eval::grade_response(cut, tp.answer, style);
          return std::make_pair(g.correct, g.prediction);
        };
      }
      const RunConfig cut = truncate_run(run, budget, regrade);
      std::vector<FrontierPoint> pts = evaluate_run(cut, o.intensity, o.ns, same);
      // Long-CoT curves run over budgets: one curve per configuration and N.
      for (FrontierPoint& p : pts) p.label = fmt::format("{} N={}", run.label, p.n);
      points.insert(points.end(), pts.begin(), pts.end());
      bar.update(int64_t(bi + 1));
    }
    bar.finish();
  }
  return points;
}

}  // namespace kf::cost

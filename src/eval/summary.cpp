#include "eval/summary.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>

#include "eval/grade.h"
#include "eval/metrics.h"

namespace kf::eval {

namespace {

bool same_answer(std::string_view a, std::string_view b) { return is_equiv(a, b); }

}  // namespace

AnswerStyle style_for_golds(const std::vector<TraceProblem>& problems) {
  static const std::regex number(R"(^\s*-?[0-9]+(\.[0-9]+)?\s*$)");
  const bool numeric = !problems.empty() && std::all_of(problems.begin(), problems.end(), [](const TraceProblem& p) {
    return std::regex_match(p.answer, number);
  });
  return numeric ? AnswerStyle::Numeric : AnswerStyle::Math;
}

Summary summarize(const std::vector<TraceProblem>& problems) {
  Summary s;
  s.problems = problems.size();
  if (problems.empty()) return s;
  s.min_n = static_cast<int64_t>(problems.front().samples.size());
  for (const TraceProblem& p : problems) s.min_n = std::min<int64_t>(s.min_n, static_cast<int64_t>(p.samples.size()));
  const std::vector<int64_t> ks = s.min_n > 0 ? powers_of_two_up_to(s.min_n) : std::vector<int64_t>{};

  int64_t counted_gen = 0, counted_prompt = 0, prompt_sum = 0;
  double efflops_sum = 0;
  std::size_t efflops_count = 0;
  for (const TraceProblem& p : problems) {
    std::vector<std::string> predictions;
    std::vector<bool> correct;
    int64_t c = 0;
    for (const TraceSample& x : p.samples) {
      predictions.push_back(x.prediction);
      correct.push_back(x.correct);
      c += x.correct ? 1 : 0;
      ++s.samples;
      if (x.gen_tokens >= 0) {
        s.total_gen_tokens += x.gen_tokens;
        ++counted_gen;
      }
      if (x.prompt_tokens >= 0) {
        prompt_sum += x.prompt_tokens;
        ++counted_prompt;
      }
      ++s.stop_reasons[x.stop_reason.empty() ? "unknown" : x.stop_reason];
    }
    const auto n = static_cast<int64_t>(p.samples.size());
    if (n > 0) s.accuracy += static_cast<double>(c) / static_cast<double>(n);
    for (int64_t k : ks) {
      s.pass_at[k] += pass_at_k(n, c, k);
      s.maj_at[k] += majority_at_k(predictions, correct, k, same_answer);
    }
    if (p.efflops.is_object() && p.efflops.contains("efflops") && p.efflops["efflops"].is_number()) {
      efflops_sum += p.efflops["efflops"].get<double>();
      ++efflops_count;
    }
  }
  const auto np = static_cast<double>(problems.size());
  s.accuracy /= np;
  for (auto& [k, v] : s.pass_at) v /= np;
  for (auto& [k, v] : s.maj_at) v /= np;
  s.mean_gen_tokens = counted_gen > 0 ? static_cast<double>(s.total_gen_tokens) / static_cast<double>(counted_gen) : -1;
  s.mean_prompt_tokens = counted_prompt > 0 ? static_cast<double>(prompt_sum) / static_cast<double>(counted_prompt) : -1;
  s.has_efflops = efflops_count == problems.size();
  s.efflops_per_problem = efflops_count > 0 ? efflops_sum / static_cast<double>(efflops_count) : 0;
  return s;
}

nlohmann::json summary_json(const Summary& s) {
  nlohmann::json pass = nlohmann::json::object(), maj = nlohmann::json::object();
  for (const auto& [k, v] : s.pass_at) pass[std::to_string(k)] = v;
  for (const auto& [k, v] : s.maj_at) maj[std::to_string(k)] = v;
  nlohmann::json j = {{"problems", s.problems},
                      {"samples", s.samples},
                      {"n", s.min_n},
                      {"accuracy", s.accuracy},
                      {"pass_at_k", pass},
                      {"maj_at_k", maj},
                      {"mean_gen_tokens", s.mean_gen_tokens},
                      {"mean_prompt_tokens", s.mean_prompt_tokens},
                      {"total_gen_tokens", s.total_gen_tokens},
                      {"stop_reasons", s.stop_reasons}};
  if (s.has_efflops) {
    j["efflops_per_problem"] = s.efflops_per_problem;
    j["tera_efflops_per_problem"] = s.efflops_per_problem * 1e-12;
  }
  return j;
}

std::string summary_text(const Summary& s) {
  std::string out = fmt::format("problems {}  samples {}  acc@1 {:.4f}\n", s.problems, s.samples, s.accuracy);
  std::string pass, maj;
  for (const auto& [k, v] : s.pass_at) pass += fmt::format("  pass@{} {:.4f}", k, v);
  for (const auto& [k, v] : s.maj_at) maj += fmt::format("  maj@{} {:.4f}", k, v);
  if (!pass.empty()) out += "coverage:" + pass + "\nmajority:" + maj + "\n";
  out += fmt::format("mean generated tokens {:.1f}  mean prompt tokens {:.1f}\nstop reasons:", s.mean_gen_tokens,
                     s.mean_prompt_tokens);
  for (const auto& [why, count] : s.stop_reasons) out += fmt::format(" {} {}", why, count);
  out += "\n";
  if (s.has_efflops) out += fmt::format("eFLOPs per problem {:.4g} ({:.4f} x 1e12)\n", s.efflops_per_problem,
                                        s.efflops_per_problem * 1e-12);
  return out;
}

std::size_t regrade(std::vector<TraceProblem>& problems, AnswerStyle style) {
  std::size_t changed = 0;
  for (TraceProblem& p : problems) {
    for (TraceSample& x : p.samples) {
      const GradeResult r = grade_response(x.text, p.answer, style);
      if (r.correct != x.correct) ++changed;
      x.prediction = r.prediction;
      x.correct = r.correct;
    }
  }
  return changed;
}

std::vector<TraceProblem> truncate_to_budget(const std::vector<TraceProblem>& problems, int64_t budget,
                                             AnswerStyle style, const TruncateFn& truncate) {
  std::vector<TraceProblem> out = problems;
  for (TraceProblem& p : out) {
    for (TraceSample& x : p.samples) {
      if (x.gen_tokens >= 0 && x.gen_tokens <= budget) continue;
      auto [text, tokens] = truncate(x.text, budget);
      if (tokens < x.gen_tokens || x.gen_tokens < 0) {
        if (tokens >= budget) x.stop_reason = "budget";
        x.text = std::move(text);
        x.gen_tokens = tokens;
      }
      const GradeResult r = grade_response(x.text, p.answer, style);
      x.prediction = r.prediction;
      x.correct = r.correct;
    }
  }
  return out;
}

}  // namespace kf::eval

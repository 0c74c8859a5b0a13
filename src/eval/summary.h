// Summaries of an evaluation (a trace's problems): accuracy@1, pass@k,
// maj@k, generated tokens, stop reasons and eFLOPs per problem; and
// re-grading of traces, optionally after truncating every sample to a token
// budget (the long-CoT sweep).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/dataset.h"
#include "eval/trace.h"

namespace kf::eval {

struct Summary {
  std::size_t problems = 0;
  std::size_t samples = 0;
  int64_t min_n = 0;                    // fewest samples of any problem (pass@k uses k <= min_n)
  double accuracy = 0;                  // acc@1: mean over problems of the fraction of correct samples
  std::map<int64_t, double> pass_at;    // k -> mean pass@k
  std::map<int64_t, double> maj_at;     // k -> mean maj@k (votes grouped by is_equiv)
  double mean_gen_tokens = 0;           // over samples with known counts (-1 when none)
  double mean_prompt_tokens = 0;
  int64_t total_gen_tokens = 0;
  std::map<std::string, int64_t> stop_reasons;
  double efflops_per_problem = 0;       // mean of each problem's efflops.efflops (0 when absent)
  bool has_efflops = false;
};

Summary summarize(const std::vector<TraceProblem>& problems);

nlohmann::json summary_json(const Summary& s);

// A few human-readable lines ("acc@1 0.412  pass@1 0.412 pass@2 ...").
std::string summary_text(const Summary& s);

// The answer style for a trace's golds: numeric when every gold is a plain number.
AnswerStyle style_for_golds(const std::vector<TraceProblem>& problems);

// Re-extracts every sample's prediction from its text and re-grades it.
// Returns how many samples changed verdict.
std::size_t regrade(std::vector<TraceProblem>& problems, AnswerStyle style);

// Cuts a response to its first `budget` generated tokens: returns the cut text
// and its token count (the tokenizer lives with the caller).
using TruncateFn = std::function<std::pair<std::string, int64_t>(const std::string& text, int64_t budget)>;

// A copy of `problems` with every sample longer than `budget` tokens cut to
// `budget` tokens (stop_reason "budget") and re-graded; samples with a known
// gen_tokens <= budget are kept as they are.
std::vector<TraceProblem> truncate_to_budget(const std::vector<TraceProblem>& problems, int64_t budget,
                                             AnswerStyle style, const TruncateFn& truncate);

}  // namespace kf::eval

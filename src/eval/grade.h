// Answer extraction and equivalence for math benchmarks.
//
// extract_answer: the last \boxed{...} / \fbox{...} (nested braces), else the
// text after the last "final answer is" (or "the answer is"), else, for
// numeric-answer data (GSM8K, AIME, AMC), the last number. When a Qwen3-style
// response closes its thinking with </think>, the part after it is searched
// first.
//
// is_equiv: normalise both strings (normalize.h), then compare structurally:
// unions (\cup) and sets/bare lists as multisets (a \pm b counts as the two
// values), tuples/intervals/vectors/matrices element-wise in order with the
// bracket types required to match, equations up to a constant factor, and
// scalars as strings, choice letters, words (case-insensitive), integers
// (exactly), then numerically with relative tolerance 1e-4 (1e-9 when the
// gold is an integer, so 27649 is not 27648) using math_expr.h; expressions
// with variables are compared at pseudo-random points. A % sign on either side
// also accepts the value divided by 100.
#pragma once
#include <string>
#include <string_view>

#include "eval/dataset.h"

namespace kf::eval {

inline constexpr double kRelTolerance = 1e-4;
inline constexpr double kIntegerTolerance = 1e-9;

// Empty when no answer can be found.
std::string extract_answer(std::string_view response, AnswerStyle style);

bool is_equiv(std::string_view prediction, std::string_view gold);

struct GradeResult {
  std::string prediction;
  bool correct = false;
};

GradeResult grade_response(std::string_view response, std::string_view gold, AnswerStyle style);

}  // namespace kf::eval

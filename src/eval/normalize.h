// String normalisation of final answers, following the rules of the
// established math-eval harnesses (Hendrycks MATH, Qwen2.5-Math): strip $,
// \text{} units, \%, "x =", trailing periods, thousands separators, \left and
// \right, spaces; \dfrac/\tfrac -> \frac; \frac34 -> \frac{3}{4}; \sqrt2 ->
// \sqrt{2}; degrees; unicode symbols. Idempotent.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace kf::eval {

struct NormalizedAnswer {
  std::string text;
  bool percent = false;  // the answer carried a % sign (removed from text)
};

NormalizedAnswer normalize_answer(std::string_view raw);

// Splits at top-level occurrences of `sep` (outside (), [], {}, \{ \}).
std::vector<std::string> split_top_level(const std::string& s, std::string_view sep);

// Index of the bracket closing the one at `open` (one of ( [ {), or npos.
std::size_t matching_bracket(const std::string& s, std::size_t open);

// Contents of the braced group starting at `open` (s[open] == '{'); sets
// `end` to one past the closing brace. Returns false when unbalanced.
bool braced_group(std::string_view s, std::size_t open, std::string& content, std::size_t& end);

}  // namespace kf::eval

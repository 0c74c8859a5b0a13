#include "eval/grade.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <optional>
#include <vector>

#include "eval/math_expr.h"
#include "eval/normalize.h"

namespace kf::eval {
namespace {

// Final answers are short; longer strings are compared verbatim so that no
// hostile input reaches the regex-based normaliser or the expression parser.
constexpr std::size_t kMaxAnswerLength = 1000;
constexpr std::size_t kMaxElements = 64;
constexpr int kTrials = 4;
constexpr int kMaxNesting = 6;

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }
bool is_letter(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }

std::string trim(std::string_view s) {
  std::size_t a = 0, b = s.size();
  while (a < b && is_space(s[a])) ++a;
  while (b > a && is_space(s[b - 1])) --b;
  return std::string(s.substr(a, b - a));
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// ---- extraction ----------------------------------------------------------------

std::optional<std::string> last_boxed(std::string_view text) {
  // Walk the \boxed / \fbox occurrences from the last one back; an unclosed
  // one (a truncated response) does not count.
  std::vector<std::size_t> starts;
  for (std::string_view name : {"\\boxed", "\\fbox"}) {
    for (auto pos = text.find(name); pos != std::string_view::npos; pos = text.find(name, pos + 1)) {
      starts.push_back(pos + name.size());
    }
  }
  std::sort(starts.rbegin(), starts.rend());
  for (std::size_t after : starts) {
    std::size_t i = after;
    while (i < text.size() && text[i] == ' ') ++i;
    std::string content;
    std::size_t end = 0;
    if (i < text.size() && text[i] == '{') {
      if (braced_group(text, i, content, end)) return trim(content);
    } else if (i > after && i < text.size()) {  // "\boxed 5$"
      std::size_t j = i;
      while (j < text.size() && text[j] != '$' && !is_space(text[j])) ++j;
      if (j > i) return std::string(text.substr(i, j - i));
    }
  }
  return std::nullopt;
}

// The last number in `text`: "1,234.5" -> "1234.5", "-3" -> "-3".
std::optional<std::string> last_number(std::string_view text) {
  std::size_t end = text.size();
  while (end > 0 && !is_digit(text[end - 1])) --end;
  if (end == 0) return std::nullopt;
  std::size_t start = end;
  while (start > 0 && (is_digit(text[start - 1]) || text[start - 1] == ',' || text[start - 1] == '.')) --start;
  std::string token(text.substr(start, end - start));
  while (!token.empty() && (token.front() == ',' || (token.front() == '.' && token.size() > 1 && token[1] == '.'))) {
    token.erase(0, 1);
    ++start;
  }
  // Commas that do not group thousands separate list items: keep the last item.
  bool thousands = true;
  for (std::size_t c = token.find(','); c != std::string::npos; c = token.find(',', c + 1)) {
    std::size_t digits = 0;
    while (c + 1 + digits < token.size() && is_digit(token[c + 1 + digits])) ++digits;
    if (digits != 3) thousands = false;
  }
  if (thousands) {
    token.erase(std::remove(token.begin(), token.end(), ','), token.end());
  } else {
    token = token.substr(token.rfind(',') + 1);
    start = end - token.size();
  }
  if (!token.empty() && token.back() == '.') token.pop_back();
  if (token.empty()) return std::nullopt;
  // Built by appending: g++ 12's -Wrestrict misfires on string::insert(0, "-").
  if (start > 0 && text[start - 1] == '-') return std::string(1, '-').append(token);
  return token;
}

std::optional<std::string> answer_phrase(std::string_view text, AnswerStyle style) {
  const std::string low = lower(text);
  std::size_t pos = std::string::npos;
  std::size_t len = 0;
  for (const char* phrase : {"final answer is", "the answer is"}) {
    pos = low.rfind(phrase);
    len = std::char_traits<char>::length(phrase);
    if (pos != std::string::npos) break;
  }
  if (pos == std::string::npos) return std::nullopt;
  std::string tail(text.substr(pos + len));
  const auto newline = tail.find('\n');
  if (newline != std::string::npos) tail.resize(newline);
  const auto hope = lower(tail).find("i hope it is correct");
  if (hope != std::string::npos) tail.resize(hope);
  tail = trim(tail);
  while (!tail.empty() && (tail.front() == ':' || is_space(tail.front()))) tail.erase(0, 1);
  while (!tail.empty() && (tail.back() == '.' || is_space(tail.back()))) tail.pop_back();
  std::erase(tail, '$');
  tail = trim(tail);
  if (tail.empty()) return std::nullopt;
  if (style == AnswerStyle::Numeric && std::any_of(tail.begin(), tail.end(), is_letter)) {
    // "The final answer is: Janet makes 18 dollars" -> 18
    if (auto n = last_number(tail)) return n;
  }
  return tail;
}

std::string extract_from(std::string_view text, AnswerStyle style) {
  if (auto boxed = last_boxed(text)) return *boxed;
  if (auto phrase = answer_phrase(text, style)) return *phrase;
  if (style == AnswerStyle::Numeric) {
    if (auto n = last_number(text)) return *n;
  }
  return "";
}

// ---- equivalence ------------------------------------------------------------------

struct Scalars {
  std::optional<MathExpr> expr;
  bool percent = false;
};

bool close(Complex a, Complex b, double tol) {
  const double diff = std::abs(a - b);
  return diff <= tol * std::max({std::abs(a), std::abs(b), 1e-8});
}

// Integer-valued constant gold ("27", "\frac{54}{2}"): compared without tolerance.
bool is_integer_constant(const MathExpr& e) {
  if (!e.variables().empty() || e.has_decimal()) return false;
  const Complex v = e.eval({});
  return std::isfinite(v.real()) && std::fabs(v.imag()) < 1e-12 && std::fabs(v.real()) < 1e15 &&
         std::fabs(v.real() - std::round(v.real())) < 1e-9;
}

std::map<std::string, Complex> trial_point(const MathExpr& a, const MathExpr& b, int trial) {
  std::map<std::string, Complex> values;
  for (const auto* e : {&a, &b}) {
    for (const std::string& v : e->variables()) values[v] = trial_value(v, trial);
  }
  return values;
}

bool numeric_equal(const NormalizedAnswer& pred, const NormalizedAnswer& gold) {
  const auto p = MathExpr::parse(pred.text);
  const auto g = MathExpr::parse(gold.text);
  if (!p || !g) return false;
  const double tol = is_integer_constant(*g) ? kIntegerTolerance : kRelTolerance;
  const bool constant = p->variables().empty() && g->variables().empty();
  const int trials = constant ? 1 : kTrials;
  std::vector<double> pred_scales = {1.0}, gold_scales = {1.0};
  if (pred.percent) pred_scales.push_back(0.01);
  if (gold.percent) gold_scales.push_back(0.01);
  for (double ps : pred_scales) {
    for (double gs : gold_scales) {
      int compared = 0;
      bool all_equal = true;
      for (int t = 0; t < trials && all_equal; ++t) {
        const auto values = trial_point(*p, *g, t);
        const Complex a = p->eval(values) * ps, b = g->eval(values) * gs;
        const bool fa = std::isfinite(a.real()) && std::isfinite(a.imag());
        const bool fb = std::isfinite(b.real()) && std::isfinite(b.imag());
        if (!fa && !fb) continue;
        if (fa != fb || !close(a, b, tol)) all_equal = false;
        ++compared;
      }
      if (all_equal && compared > 0) return true;
    }
  }
  return false;
}

// "5x-7y+11z+4=0" equals "-10x+14y-22z-8=0": lhs - rhs agree up to a nonzero factor.
bool equations_equal(const std::string& a, const std::string& b) {
  const auto sa = split_top_level(a, "="), sb = split_top_level(b, "=");
  if (sa.size() != 2 || sb.size() != 2) return false;
  const auto da = MathExpr::parse("(" + sa[0] + ")-(" + sa[1] + ")");
  const auto db = MathExpr::parse("(" + sb[0] + ")-(" + sb[1] + ")");
  if (!da || !db) return false;
  std::optional<Complex> ratio;
  for (int t = 0; t < kTrials; ++t) {
    const auto values = trial_point(*da, *db, t);
    const Complex x = da->eval(values), y = db->eval(values);
    if (!std::isfinite(std::abs(x)) || !std::isfinite(std::abs(y))) return false;
    if (std::abs(y) < 1e-12 || std::abs(x) < 1e-12) {
      if (std::abs(y) < 1e-12 && std::abs(x) < 1e-12) continue;
      return false;
    }
    if (!ratio) ratio = x / y;
    if (!close(x / y, *ratio, kRelTolerance)) return false;
  }
  return ratio.has_value();
}

// "(B)", "B", "\textbf{(B)} 12" -> 'B'
std::optional<char> choice_letter(const std::string& s, bool strict) {
  auto upper = [](char c) { return static_cast<char>(std::toupper(static_cast<unsigned char>(c))); };
  if (s.size() == 1 && s[0] >= 'A' && s[0] <= 'E') return s[0];
  if (s.size() >= 3 && s[0] == '(' && s[2] == ')' && std::string("ABCDEabcde").find(s[1]) != std::string::npos) {
    if (!strict || s.size() == 3) return upper(s[1]);
  }
  if (!strict && s.size() >= 2 && s[0] >= 'A' && s[0] <= 'E' && (s[1] == ')' || s[1] == '.' || s[1] == ':')) {
    return s[0];
  }
  return std::nullopt;
}

// "Evelyn", "east": letters only, with a run of three or more (shorter runs
// like "ab" are products of variables and compare numerically).
bool is_words(const std::string& s) {
  if (!std::all_of(s.begin(), s.end(), [](char c) { return is_letter(c) || c == ' ' || c == '-'; })) return false;
  std::size_t run = 0, longest = 0;
  for (char c : s) longest = std::max(longest, run = is_letter(c) ? run + 1 : 0);
  return longest >= 3;
}

bool is_integer_literal(const std::string& s) {
  const std::size_t start = (!s.empty() && s[0] == '-') ? 1 : 0;
  return s.size() > start && std::all_of(s.begin() + static_cast<std::ptrdiff_t>(start), s.end(), is_digit);
}

std::string strip_leading_zeros(const std::string& s) {
  const bool negative = s[0] == '-';
  std::string digits = s.substr(negative ? 1 : 0);
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() - 1));
  return (negative && digits != "0" ? "-" : "") + digits;
}

// "2516_8" vs "2516": the digits of a base-b numeral, when one side omits the base.
std::string without_base(const std::string& s) {
  const auto underscore = s.find('_');
  if (underscore == std::string::npos || underscore == 0) return s;
  const std::string digits = s.substr(0, underscore);
  return std::all_of(digits.begin(), digits.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); })
             ? digits
             : s;
}

bool scalar_equal(const NormalizedAnswer& pred, const NormalizedAnswer& gold) {
  if (pred.text == gold.text) return true;
  if (pred.text.empty() || gold.text.empty()) return false;
  if (const auto g = choice_letter(gold.text, /*strict=*/true)) {
    const auto p = choice_letter(pred.text, /*strict=*/false);
    return p && *p == *g;
  }
  if (is_words(pred.text) && is_words(gold.text)) return lower(pred.text) == lower(gold.text);
  if ((pred.text.find('_') == std::string::npos) != (gold.text.find('_') == std::string::npos) &&
      without_base(pred.text) == without_base(gold.text)) {
    return true;
  }
  if (!pred.percent && !gold.percent && is_integer_literal(pred.text) && is_integer_literal(gold.text)) {
    return strip_leading_zeros(pred.text) == strip_leading_zeros(gold.text);
  }
  return numeric_equal(pred, gold);
}

// ---- structure ----------------------------------------------------------------------

enum class Shape { Scalar, Ordered, Unordered, Matrix };

struct Structured {
  Shape shape = Shape::Scalar;
  char open = 0, close = 0;  // Ordered: the bracket types
  std::vector<std::string> items;
  std::size_t columns = 0;  // Matrix: items are row-major
};

bool expand_pm(const std::string& s, std::vector<std::string>& out) {
  const auto parts = split_top_level(s, "\\pm");
  if (parts.size() != 2) return false;
  out.push_back(parts[0] + "+" + parts[1]);
  out.push_back(parts[0] + "-" + parts[1]);
  return true;
}

std::vector<std::string> expand_all_pm(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const std::string& item : items) {
    if (!expand_pm(item, out)) out.push_back(item);
  }
  return out;
}

std::optional<Structured> as_matrix(const std::string& s) {
  for (const char* env : {"pmatrix", "bmatrix", "matrix", "vmatrix"}) {
    const std::string begin = std::string("\\begin{") + env + "}", end = std::string("\\end{") + env + "}";
    if (s.rfind(begin, 0) != 0 || s.size() < begin.size() + end.size() ||
        s.compare(s.size() - end.size(), end.size(), end) != 0) {
      continue;
    }
    Structured m;
    m.shape = Shape::Matrix;
    const std::string body = s.substr(begin.size(), s.size() - begin.size() - end.size());
    for (const std::string& row : split_top_level(body, ";")) {
      if (trim(row).empty()) continue;
      const auto cells = split_top_level(row, "&");
      if (m.columns != 0 && cells.size() != m.columns) return std::nullopt;
      m.columns = cells.size();
      m.items.insert(m.items.end(), cells.begin(), cells.end());
    }
    return m;
  }
  return std::nullopt;
}

Structured structure_of(const std::string& s) {
  if (auto m = as_matrix(s)) return *m;
  Structured st;
  if (s.size() >= 4 && s.rfind("\\{", 0) == 0 && s.compare(s.size() - 2, 2, "\\}") == 0 &&
      matching_bracket(s, 1) == s.size() - 1) {
    st.shape = Shape::Unordered;
    st.items = expand_all_pm(split_top_level(s.substr(2, s.size() - 4), ","));
    return st;
  }
  const bool bracketed = s.size() >= 2 && (s[0] == '(' || s[0] == '[') && matching_bracket(s, 0) == s.size() - 1;
  if (bracketed) {
    auto items = split_top_level(s.substr(1, s.size() - 2), ",");
    if (items.size() >= 2) {
      st.shape = Shape::Ordered;
      st.open = s.front();
      st.close = s.back();
      st.items = std::move(items);
      return st;
    }
  }
  auto items = split_top_level(s, ",");
  if (items.size() >= 2) {
    st.shape = Shape::Unordered;
    st.items = expand_all_pm(items);
    return st;
  }
  if (expand_pm(s, st.items)) st.shape = Shape::Unordered;
  return st;
}

bool equal_answers(const NormalizedAnswer& pred, const NormalizedAnswer& gold, int depth);

bool element_equal(const std::string& pred, const std::string& gold, int depth) {
  return equal_answers(normalize_answer(pred), normalize_answer(gold), depth + 1);
}

bool ordered_equal(const std::vector<std::string>& pred, const std::vector<std::string>& gold, int depth) {
  if (pred.size() != gold.size()) return false;
  for (std::size_t i = 0; i < pred.size(); ++i) {
    if (!element_equal(pred[i], gold[i], depth)) return false;
  }
  return true;
}

bool unordered_equal(const std::vector<std::string>& pred, const std::vector<std::string>& gold, int depth) {
  if (pred.size() != gold.size() || pred.size() > kMaxElements) return false;
  std::vector<bool> used(gold.size(), false);
  for (const std::string& p : pred) {
    bool matched = false;
    for (std::size_t j = 0; j < gold.size() && !matched; ++j) {
      if (!used[j] && element_equal(p, gold[j], depth)) used[j] = matched = true;
    }
    if (!matched) return false;
  }
  return true;
}

bool structured_equal(const Structured& p, const Structured& g, int depth) {
  if (p.shape == Shape::Matrix || g.shape == Shape::Matrix) {
    // A one-row or one-column matrix also equals the tuple of its entries.
    auto is_vector = [](const Structured& s) {
      return s.shape == Shape::Ordered ||
             (s.shape == Shape::Matrix && (s.columns == 1 || s.columns == s.items.size()));
    };
    if (p.shape == Shape::Matrix && g.shape == Shape::Matrix && p.columns != g.columns) {
      if (!(is_vector(p) && is_vector(g))) return false;
    } else if (p.shape != g.shape && !(is_vector(p) && is_vector(g))) {
      return false;
    }
    return ordered_equal(p.items, g.items, depth);
  }
  if (p.shape != g.shape) return false;
  if (p.shape == Shape::Ordered) return p.open == g.open && p.close == g.close && ordered_equal(p.items, g.items, depth);
  return unordered_equal(p.items, g.items, depth);
}

bool equal_answers(const NormalizedAnswer& pred, const NormalizedAnswer& gold, int depth) {
  if (pred.text == gold.text && pred.percent == gold.percent) return true;
  if (pred.text.empty() || gold.text.empty()) return false;
  if (depth > kMaxNesting) return false;
  const auto pred_pieces = split_top_level(pred.text, "\\cup");
  const auto gold_pieces = split_top_level(gold.text, "\\cup");
  if (pred_pieces.size() > 1 || gold_pieces.size() > 1) return unordered_equal(pred_pieces, gold_pieces, depth);
  const Structured ps = structure_of(pred.text), gs = structure_of(gold.text);
  if (ps.shape != Shape::Scalar || gs.shape != Shape::Scalar) return structured_equal(ps, gs, depth);
  const bool pred_eq = pred.text.find('=') != std::string::npos;
  const bool gold_eq = gold.text.find('=') != std::string::npos;
  if (pred_eq || gold_eq) return pred_eq && gold_eq && equations_equal(pred.text, gold.text);
  return scalar_equal(pred, gold);
}

}  // namespace

std::string extract_answer(std::string_view response, AnswerStyle style) {
  const auto think_end = response.rfind("</think>");
  if (think_end != std::string_view::npos) {
    std::string after = extract_from(response.substr(think_end + 8), style);
    if (!after.empty()) return after;
  }
  return extract_from(response, style);
}

bool is_equiv(std::string_view prediction, std::string_view gold) {
  const std::string p = trim(prediction), g = trim(gold);
  if (p.empty() || g.empty()) return false;
  if (p.size() > kMaxAnswerLength || g.size() > kMaxAnswerLength) return p == g;
  return equal_answers(normalize_answer(p), normalize_answer(g), 0);
}

GradeResult grade_response(std::string_view response, std::string_view gold, AnswerStyle style) {
  GradeResult r;
  r.prediction = extract_answer(response, style);
  r.correct = is_equiv(r.prediction, gold);
  return r;
}

}  // namespace kf::eval

// A small, safe evaluator for the math expressions that appear as final
// answers: numbers, + - * / ^, implicit products, \frac (incl. \frac34),
// \sqrt (incl. \sqrt[3]{x} and \sqrt2), \pi, e, i, !, trig/log functions and
// single-letter or Greek variables. Values are complex doubles so that answers
// like 2+7i compare numerically. Expressions with variables are compared by
// evaluating both sides at the same pseudo-random points (identity testing),
// which stands in for the symbolic simplifier other harnesses use.
//
// The parser never throws on bad input: it returns nullopt, and its recursion
// depth and input length are bounded so hostile strings cannot exhaust the stack.
#pragma once
#include <complex>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kf::eval {

using Complex = std::complex<double>;

class MathExpr {
 public:
  // nullopt when `text` is not an expression this evaluator understands
  // (words, \infty, subscripted numbers, unbalanced brackets, ...).
  static std::optional<MathExpr> parse(std::string_view text);

  // Variable names in the expression ("x", "\theta", "a_1").
  const std::set<std::string>& variables() const { return variables_; }

  // Evaluates with the given variable values (missing ones are 0). The result
  // may be non-finite (division by zero, overflow).
  Complex eval(const std::map<std::string, Complex>& values) const;

  // True when the expression contains a decimal point literal ("2.5").
  bool has_decimal() const { return has_decimal_; }

  enum class Op : std::uint8_t { Num, Var, Add, Sub, Mul, Div, Pow, Neg, Root, Fact, Func };
  struct Node {
    Op op = Op::Num;
    Complex value{};   // Num
    std::string name;  // Var name or Func name
    int a = -1, b = -1;  // child node indices
  };

 private:
  friend class ExprParser;
  Complex eval_node(int index, const std::map<std::string, Complex>& values) const;

  std::vector<Node> nodes_;
  int root_ = -1;
  std::set<std::string> variables_;
  bool has_decimal_ = false;
};

// The value every variable takes in trial `trial` (deterministic, generic
// numbers in [0.5, 2.5) so that distinct polynomials rarely coincide).
Complex trial_value(const std::string& variable, int trial);

}  // namespace kf::eval

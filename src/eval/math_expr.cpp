#include "eval/math_expr.h"

#include <cctype>
#include <cmath>
#include <functional>

namespace kf::eval {

namespace {

constexpr std::size_t kMaxLength = 2000;
constexpr int kMaxDepth = 120;
constexpr double kPi = 3.14159265358979323846;
constexpr double kE = 2.71828182845904523536;

bool is_letter(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }
bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

const std::set<std::string>& function_names() {
  static const std::set<std::string> names = {"sin",    "cos",    "tan",  "cot",  "sec",  "csc", "ln", "log",
                                              "exp",    "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh"};
  return names;
}

const std::set<std::string>& greek_letters() {
  static const std::set<std::string> names = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta",
                                              "eta",   "theta", "vartheta", "lambda", "mu", "nu", "xi", "rho",
                                              "sigma", "tau", "phi", "varphi", "chi", "psi", "omega"};
  return names;
}

}  // namespace

// Recursive-descent parser over the answer text. Every parse_* returns a node
// index or -1 on failure; failure propagates without exceptions.
class ExprParser {
 public:
  ExprParser(std::string_view text, MathExpr& out) : s_(text), out_(out) {}

  bool run() {
    out_.root_ = parse_sum();
    skip_spaces();
    return out_.root_ >= 0 && pos_ == s_.size();
  }

 private:
  // RAII depth counter: deep nesting fails instead of overflowing the stack.
  struct DepthGuard {
    explicit DepthGuard(int& d) : depth(d) { ++depth; }
    ~DepthGuard() { --depth; }
    int& depth;
  };

  int add(MathExpr::Op op, int a = -1, int b = -1) {
    MathExpr::Node n;
    n.op = op;
    n.a = a;
    n.b = b;
    out_.nodes_.push_back(std::move(n));
    return static_cast<int>(out_.nodes_.size()) - 1;
  }
  int number(Complex v) {
    const int i = add(MathExpr::Op::Num);
    out_.nodes_[static_cast<std::size_t>(i)].value = v;
    return i;
  }
  int named(MathExpr::Op op, std::string name, int a = -1) {
    const int i = add(op, a);
    out_.nodes_[static_cast<std::size_t>(i)].name = std::move(name);
    return i;
  }

  void skip_spaces() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  char peek() {
    skip_spaces();
    return pos_ < s_.size() ? s_[pos_] : '\0';
  }
  // The command name at pos_ ("frac" for "\frac"), without consuming it.
  std::string peek_command() {
    skip_spaces();
    if (pos_ >= s_.size() || s_[pos_] != '\\') return "";
    std::size_t end = pos_ + 1;
    while (end < s_.size() && is_letter(s_[end])) ++end;
    return std::string(s_.substr(pos_ + 1, end - pos_ - 1));
  }
  bool eat_command(const char* name) {
    if (peek_command() != name) return false;
    pos_ += 1 + std::char_traits<char>::length(name);
    return true;
  }

  int parse_sum() {
    DepthGuard guard(depth_);
    if (depth_ > kMaxDepth) return -1;
    int left = parse_product();
    while (left >= 0) {
      const char c = peek();
      if (c != '+' && c != '-') break;
      ++pos_;
      const int right = parse_product();
      if (right < 0) return -1;
      left = add(c == '+' ? MathExpr::Op::Add : MathExpr::Op::Sub, left, right);
    }
    return left;
  }

  int parse_product() {
    int left = parse_unary();
    while (left >= 0) {
      const char c = peek();
      const std::string cmd = peek_command();
      if (c == '*' || cmd == "cdot" || cmd == "times") {
        pos_ += c == '*' ? 1 : cmd.size() + 1;
        const int right = parse_unary();
        if (right < 0) return -1;
        left = add(MathExpr::Op::Mul, left, right);
      } else if (c == '/' || cmd == "div") {
        pos_ += c == '/' ? 1 : cmd.size() + 1;
        const int right = parse_unary();
        if (right < 0) return -1;
        left = add(MathExpr::Op::Div, left, right);
      } else if (starts_primary()) {
        // Juxtaposition: 2x, 3\sqrt{2}, (a+5)(b+2).
        const int right = parse_power();
        if (right < 0) return -1;
        left = add(MathExpr::Op::Mul, left, right);
      } else {
        break;
      }
    }
    return left;
  }

  bool starts_primary() {
    const char c = peek();
    if (is_digit(c) || c == '.' || is_letter(c) || c == '(' || c == '[' || c == '{') return true;
    if (c != '\\') return false;
    const std::string cmd = peek_command();
    return cmd == "frac" || cmd == "sqrt" || cmd == "pi" || function_names().count(cmd) != 0 ||
           greek_letters().count(cmd) != 0;
  }

  int parse_unary() {
    DepthGuard guard(depth_);
    if (depth_ > kMaxDepth) return -1;
    const char c = peek();
    if (c == '-' || c == '+') {
      ++pos_;
      const int operand = parse_unary();
      if (operand < 0) return -1;
      return c == '-' ? add(MathExpr::Op::Neg, operand) : operand;
    }
    return parse_power();
  }

  int parse_power() {
    DepthGuard guard(depth_);
    if (depth_ > kMaxDepth) return -1;
    int base = parse_primary();
    if (base < 0) return -1;
    while (peek() == '!') {
      ++pos_;
      base = add(MathExpr::Op::Fact, base);
    }
    if (peek() != '^') return base;
    ++pos_;
    const int exponent = parse_exponent();
    if (exponent < 0) return -1;
    return add(MathExpr::Op::Pow, base, exponent);
  }

  // x^{...}, x^(...), x^-2, x^10, x^n, x^\pi; right-associative (2^3^2).
  int parse_exponent() {
    DepthGuard guard(depth_);
    if (depth_ > kMaxDepth) return -1;
    const char c = peek();
    if (c == '-' || c == '+') {
      ++pos_;
      const int operand = parse_exponent();
      if (operand < 0) return -1;
      return c == '-' ? add(MathExpr::Op::Neg, operand) : operand;
    }
    return parse_power();
  }

  // A LaTeX argument: {group}, or one digit/letter/command (\frac34, \sqrt2).
  int parse_argument() {
    const char c = peek();
    if (c == '{') return parse_primary();
    if (is_digit(c)) {
      ++pos_;
      return number(c - '0');
    }
    if (is_letter(c)) {
      ++pos_;
      return variable(std::string(1, c));
    }
    if (c == '\\') return parse_primary();
    return -1;
  }

  int variable(const std::string& name) {
    if (name == "i") return number(Complex(0, 1));
    if (name == "e") return number(kE);
    out_.variables_.insert(name);
    return named(MathExpr::Op::Var, name);
  }

  int parse_group(char close) {
    ++pos_;
    const int inner = parse_sum();
    if (inner < 0 || peek() != close) return -1;
    ++pos_;
    return inner;
  }

  int parse_number() {
    const std::size_t start = pos_;
    while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '.') {
      out_.has_decimal_ = true;
      ++pos_;
      while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
    }
    const std::string digits(s_.substr(start, pos_ - start));
    if (digits == "." || (pos_ < s_.size() && s_[pos_] == '_')) return -1;  // "204_5" is a base, not a product
    return number(std::strtod(digits.c_str(), nullptr));
  }

  int parse_letters() {
    std::size_t end = pos_;
    while (end < s_.size() && is_letter(s_[end])) ++end;
    // Three or more letters in a row are a word ("east", "Evelyn"), not a product.
    if (end - pos_ >= 3) return -1;
    std::string name(1, s_[pos_++]);
    if (pos_ < s_.size() && s_[pos_] == '_') {  // a_1, x_{n}
      ++pos_;
      if (pos_ < s_.size() && (is_digit(s_[pos_]) || is_letter(s_[pos_]))) {
        name += '_';
        name += s_[pos_++];
      } else if (pos_ < s_.size() && s_[pos_] == '{') {
        const auto close = s_.find('}', pos_);
        if (close == std::string_view::npos) return -1;
        name += '_';
        name.append(s_.substr(pos_ + 1, close - pos_ - 1));
        pos_ = close + 1;
      } else {
        return -1;
      }
      out_.variables_.insert(name);
      return named(MathExpr::Op::Var, name);
    }
    return variable(name);
  }

  int parse_command() {
    const std::string cmd = peek_command();
    pos_ += cmd.size() + 1;
    if (cmd == "frac") {
      const int num = parse_argument();
      if (num < 0) return -1;
      const int den = parse_argument();
      if (den < 0) return -1;
      return add(MathExpr::Op::Div, num, den);
    }
    if (cmd == "sqrt") {
      int index = -1;
      if (peek() == '[') {
        index = parse_group(']');
        if (index < 0) return -1;
      }
      const int radicand = parse_argument();
      if (radicand < 0) return -1;
      return add(MathExpr::Op::Root, radicand, index >= 0 ? index : number(2));
    }
    if (cmd == "pi") return number(kPi);
    if (cmd == "left" || cmd == "right") return parse_primary();  // \left( ... \right) when not normalised away
    if (greek_letters().count(cmd) != 0) {
      out_.variables_.insert("\\" + cmd);
      return named(MathExpr::Op::Var, "\\" + cmd);
    }
    if (function_names().count(cmd) != 0) {
      int power = -1;  // \sin^2 x
      if (peek() == '^') {
        ++pos_;
        power = parse_exponent();
        if (power < 0) return -1;
      }
      const char c = peek();
      const int arg = (c == '(' || c == '{' || c == '[') ? parse_primary() : parse_power();
      if (arg < 0) return -1;
      const int call = named(MathExpr::Op::Func, cmd, arg);
      return power >= 0 ? add(MathExpr::Op::Pow, call, power) : call;
    }
    return -1;  // \infty, \text, unknown commands: not a value
  }

  int parse_primary() {
    DepthGuard guard(depth_);
    if (depth_ > kMaxDepth) return -1;
    const char c = peek();
    if (is_digit(c) || c == '.') return parse_number();
    if (is_letter(c)) return parse_letters();
    if (c == '(') return parse_group(')');
    if (c == '[') return parse_group(']');
    if (c == '{') return parse_group('}');
    if (c == '\\') return parse_command();
    return -1;
  }

  std::string_view s_;
  MathExpr& out_;
  std::size_t pos_ = 0;
  int depth_ = 0;
};

std::optional<MathExpr> MathExpr::parse(std::string_view text) {
  if (text.empty() || text.size() > kMaxLength) return std::nullopt;
  MathExpr expr;
  ExprParser parser(text, expr);
  if (!parser.run()) return std::nullopt;
  return expr;
}

namespace {

Complex real_or_complex_pow(Complex base, Complex exponent) {
  // Real powers stay real where they can: (-8)^(1/3) is handled by Root, and
  // (-2)^3 must be exactly -8, not a complex number with a rounding residue.
  if (base.imag() == 0 && exponent.imag() == 0) {
    const double b = base.real(), x = exponent.real();
    if (b >= 0 || x == std::floor(x)) return std::pow(b, x);
  }
  return std::pow(base, exponent);
}

Complex root(Complex radicand, Complex index) {
  if (radicand.imag() == 0 && index.imag() == 0) {
    const double r = radicand.real(), n = index.real();
    if (r >= 0) return std::pow(r, 1.0 / n);
    // Odd real roots of negatives are real (\sqrt[3]{-8} = -2).
    if (n == std::floor(n) && std::fmod(std::fabs(n), 2.0) == 1.0) return -std::pow(-r, 1.0 / n);
  }
  if (index == Complex(2, 0)) return std::sqrt(radicand);
  return std::pow(radicand, 1.0 / index);
}

Complex factorial(Complex v) {
  const double n = v.real();
  if (v.imag() != 0 || n < 0 || n != std::floor(n) || n > 170) return {NAN, 0};
  return std::tgamma(n + 1);
}

Complex call(const std::string& f, Complex x) {
  if (f == "sin") return std::sin(x);
  if (f == "cos") return std::cos(x);
  if (f == "tan") return std::tan(x);
  if (f == "cot") return 1.0 / std::tan(x);
  if (f == "sec") return 1.0 / std::cos(x);
  if (f == "csc") return 1.0 / std::sin(x);
  if (f == "ln" || f == "log") return std::log(x);
  if (f == "exp") return std::exp(x);
  if (f == "arcsin") return std::asin(x);
  if (f == "arccos") return std::acos(x);
  if (f == "arctan") return std::atan(x);
  if (f == "sinh") return std::sinh(x);
  if (f == "cosh") return std::cosh(x);
  if (f == "tanh") return std::tanh(x);
  return {NAN, 0};
}

}  // namespace

Complex MathExpr::eval(const std::map<std::string, Complex>& values) const {
  if (root_ < 0) return {NAN, 0};
  return eval_node(root_, values);
}

Complex MathExpr::eval_node(int index, const std::map<std::string, Complex>& values) const {
  const Node& n = nodes_[static_cast<std::size_t>(index)];
  switch (n.op) {
    case Op::Num:
      return n.value;
    case Op::Var: {
      const auto it = values.find(n.name);
      return it == values.end() ? Complex(0, 0) : it->second;
    }
    case Op::Neg:
      return -eval_node(n.a, values);
    case Op::Fact:
      return factorial(eval_node(n.a, values));
    case Op::Func:
      return call(n.name, eval_node(n.a, values));
    default:
      break;
  }
  const Complex a = eval_node(n.a, values);
  const Complex b = eval_node(n.b, values);
  switch (n.op) {
    case Op::Add:
      return a + b;
    case Op::Sub:
      return a - b;
    case Op::Mul:
      return a * b;
    case Op::Div:
      if (b == Complex(0, 0)) return {INFINITY, 0};
      return a / b;
    case Op::Pow:
      return real_or_complex_pow(a, b);
    case Op::Root:
      return root(a, b);
    default:
      return {NAN, 0};
  }
}

Complex trial_value(const std::string& variable, int trial) {
  // splitmix64 of (name hash, trial): reproducible and well spread.
  std::uint64_t z = std::hash<std::string>{}(variable) + 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(trial + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return 0.5 + 2.0 * static_cast<double>(z >> 11) / 9007199254740992.0;
}

}  // namespace kf::eval

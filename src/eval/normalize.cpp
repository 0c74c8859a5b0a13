#include "eval/normalize.h"

#include <algorithm>
#include <cctype>
#include <regex>
#include <utility>

namespace kf::eval {
namespace {

bool is_letter(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }
bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  for (auto pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
}

std::string trim(std::string_view s) {
  std::size_t a = 0, b = s.size();
  while (a < b && is_space(s[a])) ++a;
  while (b > a && is_space(s[b - 1])) --b;
  return std::string(s.substr(a, b - a));
}

// Removes "\name" where it is a whole command (\left but not \leftarrow).
void remove_command(std::string& s, const std::string& name) {
  const std::string cmd = "\\" + name;
  for (auto pos = s.find(cmd); pos != std::string::npos; pos = s.find(cmd, pos)) {
    const std::size_t end = pos + cmd.size();
    if (end < s.size() && is_letter(s[end])) {
      pos = end;
      continue;
    }
    s.erase(pos, cmd.size());
  }
}

void replace_unicode(std::string& s) {
  static const std::pair<const char*, const char*> table[] = {
      {"\u2212", "-"},      {"\u2013", "-"},      {"\u03c0", "\\pi"},  {"\u221e", "\\infty"}, {"\u221a", "\\sqrt"},
      {"\u00d7", "\\times"}, {"\u22c5", "\\cdot"}, {"\u00b7", "\\cdot"}, {"\u00b0", "^\\circ"}, {"\u222a", "\\cup"},
      {"\u00b1", "\\pm"},    {"\u2264", "\\le"},   {"\u2265", "\\ge"},  {"\u00a0", " "},       {"\u2009", " "},
  };
  for (const auto& [from, to] : table) replace_all(s, from, to);
}

// \text{...} and friends: a unit after a value is dropped with its exponent
// ("15\mbox{ cm}^2" -> "15"); anything else is unwrapped ("\text{(B)}" -> "(B)").
void strip_text_blocks(std::string& s) {
  static const char* unit_wrappers[] = {"text", "mbox", "textrm", "mathrm"};
  static const char* wrappers[] = {"text",   "mbox",     "textrm",  "mathrm",      "textbf", "mathbf",
                                   "textit", "mathit",   "textup",  "textnormal",  "operatorname", "textsf"};
  static const std::regex unit_like(R"(^\s*[a-zA-Z][a-zA-Z .]*$)");
  static const std::regex exponent(R"(^\s*\^\s*(\{[0-9]\}|[0-9]))");
  for (int guard = 0; guard < 64; ++guard) {
    std::size_t best = std::string::npos;
    std::string name;
    for (const char* w : wrappers) {
      const std::string cmd = std::string("\\") + w + "{";
      const auto pos = s.find(cmd);
      if (pos < best) {
        best = pos;
        name = w;
      }
    }
    if (best == std::string::npos) return;
    const std::size_t open = best + name.size() + 1;
    std::string content;
    std::size_t end = 0;
    if (!braced_group(s, open, content, end)) return;
    const std::string word = trim(content);
    const bool is_unit_wrapper =
        std::find_if(std::begin(unit_wrappers), std::end(unit_wrappers), [&](const char* w) { return name == w; }) !=
        std::end(unit_wrappers);
    const bool after_value = !trim(s.substr(0, best)).empty();
    if (word == "and" || word == "or") {
      s.replace(best, end - best, ",");
    } else if (is_unit_wrapper && after_value && std::regex_match(content, unit_like) &&
               (word.size() >= 2 || is_space(content.front()))) {
      std::smatch m;
      const std::string rest = s.substr(end);
      if (std::regex_search(rest, m, exponent)) end += static_cast<std::size_t>(m.length(0));
      s.erase(best, end - best);
    } else {
      s.replace(best, end - best, content);
    }
  }
}

// "x = 5" -> "5", "\theta = \pi" -> "\pi", "x \in [1,2]" -> "[1,2]"; an
// equation with more on the left ("5x - 7y = 0") is kept.
void strip_assignment(std::string& s) {
  static const std::regex in_prefix(R"(^\s*[a-zA-Z]\s*\\in\s*)");
  s = std::regex_replace(s, in_prefix, "");
  const auto eq = s.find('=');
  if (eq == std::string::npos || s.find('=', eq + 1) != std::string::npos) return;
  static const std::regex simple_lhs(R"(^\s*([a-zA-Z](_\{?[a-zA-Z0-9]+\}?)?|\\[a-zA-Z]+)\s*$)");
  if (std::regex_match(s.substr(0, eq), simple_lhs)) s = trim(s.substr(eq + 1));
}

// Keeps one space only where removing it would glue a command to a letter
// ("\cot x"), removes every other space.
std::string squeeze_spaces(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (!is_space(s[i])) {
      out += s[i];
      continue;
    }
    std::size_t j = i;
    while (j < s.size() && is_space(s[j])) ++j;
    std::size_t k = out.size();
    while (k > 0 && is_letter(out[k - 1])) --k;
    const bool after_command = k > 0 && k < out.size() && out[k - 1] == '\\';
    if (after_command && j < s.size() && is_letter(s[j])) out += ' ';
    i = j - 1;
  }
  return out;
}

// \frac34 -> \frac{3}{4}, \frac{270}7 -> \frac{270}{7}, \sqrt2 -> \sqrt{2}.
std::string brace_arguments(const std::string& s, const std::string& cmd, int nargs) {
  std::string out;
  std::size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, cmd.size(), cmd) != 0) {
      out += s[i++];
      continue;
    }
    out += cmd;
    i += cmd.size();
    if (cmd == "\\sqrt" && i < s.size() && s[i] == '[') {
      const auto close = s.find(']', i);
      if (close == std::string::npos) continue;
      out += s.substr(i, close - i + 1);
      i = close + 1;
    }
    for (int a = 0; a < nargs && i < s.size(); ++a) {
      while (i < s.size() && s[i] == ' ') ++i;
      if (i >= s.size()) break;
      if (s[i] == '{') {
        std::string content;
        std::size_t end = 0;
        if (!braced_group(s, i, content, end)) break;
        out += s.substr(i, end - i);
        i = end;
      } else if (s[i] == '\\') {
        std::size_t end = i + 1;
        while (end < s.size() && is_letter(s[end])) ++end;
        if (end == i + 1) break;
        out += "{" + s.substr(i, end - i) + "}";
        i = end;
      } else if (std::isalnum(static_cast<unsigned char>(s[i]))) {
        out += std::string("{") + s[i] + "}";
        ++i;
      } else {
        break;
      }
    }
  }
  return out;
}

// "{5}" -> "5", but not "{1}{2}" and not the set "\{1,2\}".
void strip_outer_braces(std::string& s) {
  while (s.size() >= 2 && s.front() == '{' && matching_bracket(s, 0) == s.size() - 1) s = s.substr(1, s.size() - 2);
}

}  // namespace

bool braced_group(std::string_view s, std::size_t open, std::string& content, std::size_t& end) {
  if (open >= s.size() || s[open] != '{') return false;
  int depth = 0;
  for (std::size_t i = open; i < s.size(); ++i) {
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) {
      content = std::string(s.substr(open + 1, i - open - 1));
      end = i + 1;
      return true;
    }
  }
  return false;
}

std::size_t matching_bracket(const std::string& s, std::size_t open) {
  // Intervals pair ( with ], so any opener is closed by any closer.
  int depth = 0;
  for (std::size_t i = open; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '(' || c == '[' || c == '{') ++depth;
    if ((c == ')' || c == ']' || c == '}') && --depth == 0) return i;
    if (depth < 0) return std::string::npos;
  }
  return std::string::npos;
}

std::vector<std::string> split_top_level(const std::string& s, std::string_view sep) {
  std::vector<std::string> parts;
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (depth == 0 && s.compare(i, sep.size(), sep) == 0) {
      parts.push_back(s.substr(start, i - start));
      start = i + sep.size();
      i = start - 1;
    }
  }
  parts.push_back(s.substr(start));
  return parts;
}

NormalizedAnswer normalize_answer(std::string_view raw) {
  NormalizedAnswer out;
  std::string s(raw);
  replace_unicode(s);
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  s = trim(s);
  for (const char* wrapper : {"\\boxed{", "\\fbox{"}) {
    const std::size_t len = std::char_traits<char>::length(wrapper);
    std::string content;
    std::size_t end = 0;
    if (s.rfind(wrapper, 0) == 0 && braced_group(s, len - 1, content, end) && end == s.size()) s = content;
  }
  replace_all(s, "\\\\", ";");  // matrix row separator, before "\\ " below eats half of it
  replace_all(s, "\\$", "");
  replace_all(s, "$", "");
  for (const char* cmd : {"displaystyle", "left", "right", "bigl", "bigr", "Bigl", "Bigr", "big", "Big"}) {
    remove_command(s, cmd);
  }
  for (const char* spacing : {"\\!", "\\,", "\\;", "\\:", "\\ "}) replace_all(s, spacing, "");
  remove_command(s, "qquad");
  remove_command(s, "quad");
  replace_all(s, "~", " ");
  replace_all(s, "\\dfrac", "\\frac");
  replace_all(s, "\\tfrac", "\\frac");
  replace_all(s, "\\cfrac", "\\frac");
  replace_all(s, "\\approx", "=");
  for (const char* degree : {"^{\\circ}", "^\\circ", "\\circ", "\\degree"}) replace_all(s, degree, "");
  for (const char* pct : {"\\%", "%"}) {
    if (s.find(pct) != std::string::npos) out.percent = true;
    replace_all(s, pct, "");
  }
  strip_text_blocks(s);
  s = trim(s);
  while (!s.empty() && (s.back() == '.' || is_space(s.back()))) s.pop_back();
  // "18 dollars", "5 cm^2", "30 degrees": plain unit words after a plain number.
  static const std::regex number_then_words(R"(^([-+]?[0-9][0-9.,/]*)\s*[a-zA-Z]{2,}[a-zA-Z ]*(\^[0-9]|\^\{[0-9]\})?$)");
  std::smatch m;
  if (std::regex_match(s, m, number_then_words)) s = m[1].str();
  strip_assignment(s);
  s = squeeze_spaces(s);
  static const std::regex thousands(R"(^[-+]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?$)");
  if (std::regex_match(s, thousands)) replace_all(s, ",", "");
  s = brace_arguments(s, "\\frac", 2);
  s = brace_arguments(s, "\\sqrt", 1);
  // Mixed numbers: "137 \\frac{1}{2}" is 137 + 1/2, not a product.
  static const std::regex mixed_number(R"(^(-?)([0-9]+)\\frac\{([0-9]+)\}\{([0-9]+)\}$)");
  s = std::regex_replace(s, mixed_number, "$1($2+\\frac{$3}{$4})");
  static const std::regex bare_decimal(R"((^|[^0-9])\.([0-9]))");
  s = std::regex_replace(s, bare_decimal, "$010.$2");
  static const std::regex one_char_subscript(R"(_\{([a-zA-Z0-9])\})");
  s = std::regex_replace(s, one_char_subscript, "_$1");
  strip_outer_braces(s);
  if (!s.empty() && s.front() == '+') s.erase(0, 1);
  out.text = s;
  return out;
}

}  // namespace kf::eval

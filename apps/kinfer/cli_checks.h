// Number checks for command-line options. CLI11's PositiveNumber and
// NonNegativeNumber name their range in full ("not in range 0.000000 to
// 179769313486231570814527423731704356798...") for a negative value; these
// say what the option wants and what it got: "--budget: must be > 0 (got -5)".
#pragma once
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <string>

namespace kf::cli {

inline CLI::Validator number_check(bool zero_ok) {
  return CLI::Validator(
      [zero_ok](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (end == text.c_str() || *end != '\0') return "'" + text + "' is not a number";
        if (zero_ok ? v < 0 : v <= 0) return std::string(zero_ok ? "must be >= 0" : "must be > 0") + " (got " + text + ")";
        return {};
      },
      zero_ok ? "NONNEGATIVE" : "POSITIVE");
}
inline const CLI::Validator kPositive = number_check(false);
inline const CLI::Validator kNonNegative = number_check(true);

}  // namespace kf::cli

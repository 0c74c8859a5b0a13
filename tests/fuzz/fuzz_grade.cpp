// Fuzzes answer extraction and equivalence: the input is "response\ngold".
// Any input must return normally (no crash, hang, sanitizer report).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "eval/grade.h"
#include "eval/normalize.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto newline = input.find('\n');
  const std::string_view response = input.substr(0, newline);
  const std::string_view gold = newline == std::string_view::npos ? std::string_view("42") : input.substr(newline + 1);
  for (auto style : {kf::eval::AnswerStyle::Math, kf::eval::AnswerStyle::Numeric}) {
    const auto result = kf::eval::grade_response(input, gold, style);
    (void)result;
  }
  (void)kf::eval::is_equiv(response, gold);
  (void)kf::eval::normalize_answer(response);
  return 0;
}

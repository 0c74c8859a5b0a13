// kinfer grade: extract the final answer from a response on stdin and judge it
// against a gold answer, with the same rules `kinfer eval` uses.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "eval/grade.h"
#include "util/error.h"

namespace kf::cli {

int cmd_grade(int argc, char** argv) {
  CLI::App app{"Grade one response (read from stdin) against a gold answer", "kinfer grade"};
  std::string gold;
  std::string style_name = "auto";
  bool json = false;
  app.add_option("--gold", gold, "the gold answer, e.g. '\\frac{3}{4}' or 18")->required();
  app.add_option("--style", style_name,
                 "answer fallback: math (\\boxed / 'final answer is'), numeric (also the last number), auto "
                 "(numeric when the gold is a plain number)")
      ->check(CLI::IsMember({"auto", "math", "numeric"}));
  app.add_flag("--json", json, "print {\"prediction\": ..., \"correct\": ...}");
  CLI11_PARSE(app, argc, argv);

  const std::string response((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  eval::AnswerStyle style = eval::AnswerStyle::Math;
  if (style_name == "numeric") {
    style = eval::AnswerStyle::Numeric;
  } else if (style_name == "auto") {
    const bool numeric_gold = !gold.empty() && gold.find_first_not_of("0123456789.-") == std::string::npos;
    style = numeric_gold ? eval::AnswerStyle::Numeric : eval::AnswerStyle::Math;
  }
  const eval::GradeResult r = eval::grade_response(response, gold, style);
  if (json) {
    const nlohmann::json j = {{"prediction", r.prediction}, {"correct", r.correct}, {"gold", gold}};
    std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::printf("%s  prediction: %s  gold: %s\n", r.correct ? "correct" : "wrong",
                r.prediction.empty() ? "(none)" : r.prediction.c_str(), gold.c_str());
  }
  return 0;
}

}  // namespace kf::cli

// Grading: the fixture of graded cases (tests/fixtures/grading/cases.jsonl,
// written from the MATH500/AIME/GSM8K answer forms), plus properties over the
// whole data sets: every gold equals itself and its own \boxed{} response.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "eval/dataset.h"
#include "eval/grade.h"
#include "eval/math_expr.h"
#include "eval/normalize.h"

namespace {

using kf::eval::AnswerStyle;
using kf::eval::extract_answer;
using kf::eval::is_equiv;

std::string fixture_path() { return std::string(KINFER_SOURCE_DIR) + "/tests/fixtures/grading/cases.jsonl"; }

TEST(Grade, FixtureCases) {
  std::ifstream in(fixture_path());
  ASSERT_TRUE(in.good()) << fixture_path();
  std::string line;
  int line_no = 0, cases = 0, wrong_verdicts = 0, must_be_wrong = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    const auto c = nlohmann::json::parse(line);
    const std::string gold = c.at("gold");
    const bool expected = c.at("correct");
    ++cases;
    if (!expected) ++must_be_wrong;
    if (c.contains("response")) {
      const AnswerStyle style = c.value("style", "math") == "numeric" ? AnswerStyle::Numeric : AnswerStyle::Math;
      const auto r = kf::eval::grade_response(c.at("response").get<std::string>(), gold, style);
      EXPECT_EQ(r.prediction, c.at("prediction").get<std::string>()) << "line " << line_no << ": " << line;
      EXPECT_EQ(r.correct, expected) << "line " << line_no << ": " << line;
      if (r.correct != expected) ++wrong_verdicts;
    } else {
      const bool got = is_equiv(c.at("prediction").get<std::string>(), gold);
      EXPECT_EQ(got, expected) << "line " << line_no << ": " << line;
      if (got != expected) ++wrong_verdicts;
    }
  }
  EXPECT_GE(cases, 150);
  EXPECT_GE(must_be_wrong, 50);
  EXPECT_EQ(wrong_verdicts, 0);
}

// Every gold answer of every built-in data set is equivalent to itself, and a
// response that boxes it is graded correct with the gold as the prediction.
TEST(Grade, EveryGoldMatchesItsOwnBoxedResponse) {
  for (const char* name : kf::eval::kBuiltinDatasets) {
    const auto ds = kf::eval::load_dataset(name);
    for (const auto& p : ds.problems) {
      EXPECT_TRUE(is_equiv(p.answer, p.answer)) << name << " " << p.id << ": " << p.answer;
      const std::string response = "Reasoning...\nTherefore, the final answer is: $\\boxed{" + p.answer +
                                   "}$. I hope it is correct";
      const auto r = kf::eval::grade_response(response, p.answer, ds.style);
      EXPECT_EQ(r.prediction, p.answer) << name << " " << p.id;
      EXPECT_TRUE(r.correct) << name << " " << p.id << ": " << p.answer;
    }
  }
}

// Distinct MATH500 golds must not grade as equal unless they are the same
// value: catches an over-eager normaliser (everything equal to everything).
TEST(Grade, DistinctMath500GoldsAreNotEquivalent) {
  const auto ds = kf::eval::load_dataset("math500");
  int compared = 0, equal = 0;
  for (std::size_t i = 0; i + 1 < ds.problems.size(); ++i) {
    const std::string& a = ds.problems[i].answer;
    const std::string& b = ds.problems[i + 1].answer;
    if (kf::eval::normalize_answer(a).text == kf::eval::normalize_answer(b).text) continue;
    ++compared;
    if (is_equiv(a, b)) {
      ++equal;
      ADD_FAILURE() << "'" << a << "' judged equal to '" << b << "'";
    }
  }
  EXPECT_GT(compared, 400);
  EXPECT_EQ(equal, 0);
}

TEST(Grade, ExtractionRules) {
  EXPECT_EQ(extract_answer("a \\boxed{\\frac{a}{\\sqrt{b}}} b", AnswerStyle::Math), "\\frac{a}{\\sqrt{b}}");
  EXPECT_EQ(extract_answer("\\boxed{1} and \\fbox{2}", AnswerStyle::Math), "2");
  EXPECT_EQ(extract_answer("\\fbox{1} and \\boxed{2}", AnswerStyle::Math), "2");
  EXPECT_EQ(extract_answer("no answer", AnswerStyle::Math), "");
  EXPECT_EQ(extract_answer("costs $1,000,000.", AnswerStyle::Numeric), "1000000");
  EXPECT_EQ(extract_answer("x is -0.5.", AnswerStyle::Numeric), "-0.5");
  EXPECT_EQ(extract_answer("", AnswerStyle::Numeric), "");
}

TEST(Grade, ExpressionEvaluator) {
  auto value = [](const char* text) {
    const auto e = kf::eval::MathExpr::parse(text);
    EXPECT_TRUE(e.has_value()) << text;
    return e ? e->eval({}) : kf::eval::Complex(NAN, 0);
  };
  EXPECT_NEAR(value("2^{10}").real(), 1024, 1e-9);
  EXPECT_NEAR(value("2^3^2").real(), 512, 1e-9);  // right-associative
  EXPECT_NEAR(value("-2^2").real(), -4, 1e-9);
  EXPECT_NEAR(value("\\frac34").real(), 0.75, 1e-12);
  EXPECT_NEAR(value("\\sqrt[3]{-27}").real(), -3, 1e-12);
  EXPECT_NEAR(value("5!").real(), 120, 1e-9);
  EXPECT_NEAR(value("3\\cdot4\\times2\\div6").real(), 4, 1e-12);
  EXPECT_NEAR(value("i^2").real(), -1, 1e-12);
  EXPECT_FALSE(kf::eval::MathExpr::parse("east").has_value());
  EXPECT_FALSE(kf::eval::MathExpr::parse("(1+2").has_value());
  EXPECT_FALSE(kf::eval::MathExpr::parse("\\infty").has_value());
  EXPECT_FALSE(kf::eval::MathExpr::parse(std::string(5000, '(')).has_value());
  EXPECT_FALSE(kf::eval::MathExpr::parse(std::string(300, '(') + "1" + std::string(300, ')')).has_value());
}

TEST(Grade, HostileInputsDoNotCrash) {
  const std::string long_text(100000, '{');
  EXPECT_FALSE(is_equiv(long_text, "5"));
  EXPECT_EQ(extract_answer("\\boxed{" + long_text, AnswerStyle::Math), "");
  EXPECT_FALSE(is_equiv(std::string(900, '-') + "1", "1"));
  EXPECT_FALSE(is_equiv("\\frac{\\frac{\\frac{}{}}{}}{}", "1"));
  EXPECT_FALSE(is_equiv("10^{10^{10}}", "1"));
}

}  // namespace

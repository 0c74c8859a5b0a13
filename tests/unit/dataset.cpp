// Data sets: the five built-in files load with the documented sizes, fields
// and gold forms; custom JSONL, selections and malformed input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "eval/dataset.h"
#include "util/error.h"

namespace {

using kf::eval::AnswerStyle;
using kf::eval::load_dataset;
using kf::eval::parse_dataset;

TEST(Dataset, BuiltinsLoadWithDocumentedSizes) {
  const std::pair<const char*, std::size_t> expected[] = {
      {"aime24", 30}, {"aime25", 30}, {"amc23", 40}, {"math500", 500}, {"gsm8k", 1319}};
  for (const auto& [name, size] : expected) {
    const auto ds = load_dataset(name);
    EXPECT_EQ(ds.name, name);
    EXPECT_EQ(ds.problems.size(), size) << name;
    for (const auto& p : ds.problems) {
      EXPECT_FALSE(p.question.empty()) << name << " " << p.id;
      EXPECT_FALSE(p.answer.empty()) << name << " " << p.id;
    }
  }
}

TEST(Dataset, GoldFormsAndIds) {
  const auto gsm = load_dataset("gsm8k");
  EXPECT_EQ(gsm.style, AnswerStyle::Numeric);
  EXPECT_EQ(gsm.problems[0].id, "0");
  EXPECT_EQ(gsm.problems[0].answer, "18");  // after "#### "
  EXPECT_EQ(gsm.problems[0].question.rfind("Janet", 0), 0u);
  for (const auto& p : gsm.problems) {
    EXPECT_EQ(p.answer.find(','), std::string::npos) << p.id;
    EXPECT_EQ(p.answer.find('#'), std::string::npos) << p.id;
  }
  const auto amc = load_dataset("amc23");
  EXPECT_EQ(amc.problems[0].answer, "27");  // stored as the JSON number 27.0
  EXPECT_EQ(amc.style, AnswerStyle::Numeric);
  const auto math = load_dataset("math500");
  EXPECT_EQ(math.style, AnswerStyle::Math);
  EXPECT_EQ(math.problems[0].id, "test/precalculus/807.json");
  EXPECT_EQ(math.problems[0].answer, "\\left( 3, \\frac{\\pi}{2} \\right)");
  const auto aime25 = load_dataset("aime25");  // no id field: row numbers
  EXPECT_EQ(aime25.problems[0].id, "0");
  EXPECT_EQ(aime25.problems[0].answer, "70");
  EXPECT_EQ(load_dataset("aime24").problems[0].id, "60");
}

TEST(Dataset, GsmGoldHelper) {
  EXPECT_EQ(kf::eval::gsm8k_gold("So 5 + 5 = 10\n#### 1,000"), "1000");
  EXPECT_EQ(kf::eval::gsm8k_gold("#### -3"), "-3");
}

TEST(Dataset, CustomJsonlFieldsAndSelection) {
  const std::string text = "{\"q\": \"one?\", \"a\": 1}\n\n{\"q\": \"two?\", \"a\": \"2\", \"id\": \"b\"}\n"
                           "{\"q\": \"three?\", \"a\": \"x^2\"}\n";
  const auto ds = parse_dataset(text, "mine.jsonl", {"q", "a"});
  ASSERT_EQ(ds.problems.size(), 3u);
  EXPECT_EQ(ds.name, "mine");
  EXPECT_EQ(ds.problems[0].id, "0");
  EXPECT_EQ(ds.problems[1].id, "b");
  EXPECT_EQ(ds.problems[2].id, "2");
  EXPECT_EQ(ds.style, AnswerStyle::Math);  // x^2 is not a plain number

  kf::eval::Selection sel;
  sel.offset = 1;
  sel.limit = 1;
  auto picked = kf::eval::select_problems(ds.problems, sel);
  ASSERT_EQ(picked.size(), 1u);
  EXPECT_EQ(picked[0].id, "b");
  sel = {};
  sel.ids = kf::eval::split_ids("2, 0");
  picked = kf::eval::select_problems(ds.problems, sel);
  ASSERT_EQ(picked.size(), 2u);
  EXPECT_EQ(picked[0].question, "three?");
  sel.offset = 5;
  EXPECT_TRUE(kf::eval::select_problems(ds.problems, sel).empty());
  sel = {};
  sel.ids = {"nope"};
  EXPECT_THROW(kf::eval::select_problems(ds.problems, sel), kf::Error);
}

TEST(Dataset, MalformedInputNamesFileLineAndField) {
  auto message = [](const std::string& text, kf::eval::DatasetOptions opt = {}) {
    try {
      parse_dataset(text, "bad.jsonl", opt);
    } catch (const kf::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("{\"question\": \"q\", \"answer\": \"1\"}\n{oops\n").find("bad.jsonl:2"), std::string::npos);
  EXPECT_NE(message("{\"question\": \"q\"}\n").find("'answer'"), std::string::npos);
  EXPECT_NE(message("{\"answer\": \"1\"}\n").find("'question'"), std::string::npos);
  EXPECT_NE(message("[1,2]\n").find("object"), std::string::npos);
  EXPECT_NE(message("{\"question\": 5, \"answer\": \"1\"}\n").find("string"), std::string::npos);
  EXPECT_NE(message("{\"question\": \"q\", \"answer\": [1]}\n").find("'answer'"), std::string::npos);
  EXPECT_NE(message("{\"question\": \"q\", \"answer\": 1, \"id\": 1}\n{\"question\": \"q\", \"answer\": 1, \"id\": 1}")
                .find("duplicate"),
            std::string::npos);
  EXPECT_NE(message("").find("no problems"), std::string::npos);
  EXPECT_NE(message("{\"x\": \"q\", \"answer\": 1}", {"x", "y"}).find("'y'"), std::string::npos);
  EXPECT_THROW(load_dataset("no-such-dataset"), kf::Error);
}

TEST(Dataset, KinferDataEnvOverridesTheFolder) {
  ::setenv("KINFER_DATA", "/nonexistent-kinfer-data", 1);
  EXPECT_EQ(kf::eval::data_dir(), "/nonexistent-kinfer-data");
  EXPECT_THROW(load_dataset("gsm8k"), kf::Error);
  ::unsetenv("KINFER_DATA");
  EXPECT_EQ(load_dataset("aime25").problems.size(), 30u);
}

}  // namespace

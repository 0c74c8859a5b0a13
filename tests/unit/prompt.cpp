// Prompt templates: the Kinetics instruction word for word, plain, files.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "eval/prompt.h"
#include "util/error.h"

namespace {

using kf::eval::find_prompt_template;
using kf::eval::render_prompt;

TEST(Prompt, KineticsMathIsTheInstructionThenTheQuestion) {
  const auto t = find_prompt_template("kinetics-math");
  EXPECT_EQ(render_prompt(t, "What is 1+1?"),
            "Solve the following math problem efficiently and clearly. The last line of your response should be of "
            "the following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it is correct' "
            "(without quotes) where ANSWER is just the final number or expression that solves the problem. Think "
            "step by step before answering.\n\nWhat is 1+1?");
}

TEST(Prompt, PlainAndBoxed) {
  EXPECT_EQ(render_prompt(find_prompt_template("plain"), "Q {question}"), "Q {question}");
  const std::string boxed = render_prompt(find_prompt_template("boxed"), "Q");
  EXPECT_EQ(boxed.rfind("Q\n", 0), 0u);
  EXPECT_NE(boxed.find("\\boxed{}"), std::string::npos);
  EXPECT_EQ(kf::eval::prompt_template_names().front(), "kinetics-math");
}

TEST(Prompt, TemplateFiles) {
  const std::string path = ::testing::TempDir() + "kinfer_prompt_template.txt";
  {
    std::ofstream(path) << "Problem: {question}\nAnswer:\n";
  }
  EXPECT_EQ(render_prompt(find_prompt_template(path), "2+2"), "Problem: 2+2\nAnswer:");
  {
    std::ofstream(path) << "no placeholder";
  }
  EXPECT_THROW(find_prompt_template(path), kf::Error);
  std::remove(path.c_str());
  EXPECT_THROW(find_prompt_template("no-such-template"), kf::Error);
}

}  // namespace

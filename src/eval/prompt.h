// Prompt templates for math evaluation: the user message that wraps each
// question before the model's chat template is applied (the tokenizer does
// that part, with Qwen3 thinking on by default).
#pragma once
#include <string>
#include <vector>

namespace kf::eval {

// The instruction used by the Kinetics runs, word for word.
inline constexpr const char* kKineticsMathInstruction =
    "Solve the following math problem efficiently and clearly. The last line of your response should be of the "
    "following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. I hope it is correct' (without quotes) "
    "where ANSWER is just the final number or expression that solves the problem. Think step by step before "
    "answering.";

struct PromptTemplate {
  std::string name;  // "kinetics-math", "plain", or the file it was read from
  std::string text;  // contains "{question}" exactly once
};

// Built-in names: kinetics-math (default: instruction, blank line, question),
// plain (the question alone), boxed (question, then a one-line request for a
// boxed answer). Anything else is read as a file that contains "{question}".
PromptTemplate find_prompt_template(const std::string& name_or_file);

std::vector<std::string> prompt_template_names();

// The user message for one question.
std::string render_prompt(const PromptTemplate& tmpl, const std::string& question);

}  // namespace kf::eval

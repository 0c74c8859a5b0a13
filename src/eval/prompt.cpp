#include "eval/prompt.h"

#include <fstream>
#include <sstream>

#include "util/error.h"
#include "util/file.h"

namespace kf::eval {
namespace {

constexpr const char* kPlaceholder = "{question}";

struct Builtin {
  const char* name;
  std::string text;
};

std::vector<Builtin> builtins() {
  return {
      {"kinetics-math", std::string(kKineticsMathInstruction) + "\n\n{question}"},
      {"plain", "{question}"},
      {"boxed", "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."},
  };
}

std::size_t count_placeholders(const std::string& text) {
  std::size_t n = 0;
  for (auto pos = text.find(kPlaceholder); pos != std::string::npos; pos = text.find(kPlaceholder, pos + 1)) ++n;
  return n;
}

}  // namespace

std::vector<std::string> prompt_template_names() {
  std::vector<std::string> names;
  for (const Builtin& b : builtins()) names.emplace_back(b.name);
  return names;
}

PromptTemplate find_prompt_template(const std::string& name_or_file) {
  for (const Builtin& b : builtins()) {
    if (name_or_file == b.name) return {b.name, b.text};
  }
  std::optional<std::string> text = read_file(name_or_file);
  KF_CHECK(text, "--prompt-template '{}': not one of kinetics-math, plain, boxed, and no such file",
           name_or_file);
  PromptTemplate t{name_or_file, std::move(*text)};
  // A trailing newline in a template file is an editor artefact, not part of the prompt.
  while (!t.text.empty() && (t.text.back() == '\n' || t.text.back() == '\r')) t.text.pop_back();
  KF_CHECK(count_placeholders(t.text) == 1, "prompt template file '{}': must contain {} exactly once",
           name_or_file, kPlaceholder);
  return t;
}

std::string render_prompt(const PromptTemplate& tmpl, const std::string& question) {
  const auto pos = tmpl.text.find(kPlaceholder);
  KF_CHECK(pos != std::string::npos, "prompt template '{}' has no {}", tmpl.name, kPlaceholder);
  std::string out = tmpl.text;
  out.replace(pos, std::string(kPlaceholder).size(), question);
  return out;
}

}  // namespace kf::eval

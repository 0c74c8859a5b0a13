// Evaluation data sets: the five built-in math benchmarks in data/ (aime24,
// aime25, amc23, math500, gsm8k) or any JSONL file, read into a flat list of
// problems with string ids, question text and gold answer.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace kf::eval {

// How a response's answer is found when it has no \boxed{} and no "final
// answer is" phrase: data sets whose golds are all plain numbers (GSM8K,
// AIME, AMC) fall back to the last number in the response.
enum class AnswerStyle { Math, Numeric };

const char* answer_style_name(AnswerStyle style);

struct Problem {
  std::string id;        // the row's id / unique_id / idx, else its 0-based row number
  std::string question;  // `problem` if present, else `question` (or --question-field)
  std::string answer;    // gold; GSM8K: the part after "#### " without thousands commas
};

struct Dataset {
  std::string name;  // "gsm8k", ... or the file's stem
  std::string path;  // the file it was read from
  AnswerStyle style = AnswerStyle::Math;
  std::vector<Problem> problems;
};

struct DatasetOptions {
  std::string question_field;  // empty: `problem`, else `question`
  std::string answer_field;    // empty: `answer`
};

// Which problems to keep, applied in this order: ids, offset, limit.
struct Selection {
  std::vector<std::string> ids;  // empty: all
  std::size_t offset = 0;
  std::optional<std::size_t> limit;
};

inline constexpr const char* kBuiltinDatasets[] = {"aime24", "aime25", "amc23", "math500", "gsm8k"};

// The folder holding the built-in data sets: $KINFER_DATA if set, else the
// source tree's data/.
std::string data_dir();

// `name_or_path` is a built-in name or a JSONL file. Throws kf::Error naming
// file, line and field for unreadable or malformed input.
Dataset load_dataset(const std::string& name_or_path, const DatasetOptions& options = {});

// Parses JSONL text (one object a line; blank lines skipped). `source` names
// the text in error messages.
Dataset parse_dataset(const std::string& jsonl, const std::string& source, const DatasetOptions& options = {});

// Applies a selection; unknown ids are an error.
std::vector<Problem> select_problems(const std::vector<Problem>& problems, const Selection& selection);

// "1,5, 7" -> {"1","5","7"}
std::vector<std::string> split_ids(const std::string& csv);

// GSM8K's gold: the text after the last "####", trimmed, thousands commas removed.
std::string gsm8k_gold(const std::string& answer);

}  // namespace kf::eval

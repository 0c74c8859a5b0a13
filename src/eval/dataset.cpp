#include "eval/dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <unordered_map>

#include "util/error.h"
#include "util/file.h"

namespace kf::eval {
namespace {

using nlohmann::json;

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

// Gold answers and ids may be JSON numbers (amc23 stores 27.0): print integers
// without a fractional part so "27.0" grades like the AIME-style "27".
std::string scalar_to_string(const json& v, const std::string& where, const char* field) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<std::int64_t>());
  if (v.is_number_unsigned()) return std::to_string(v.get<std::uint64_t>());
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e15) {
      return std::to_string(static_cast<std::int64_t>(d));
    }
    return fmt::format("{}", d);
  }
  fail("{}: field '{}' must be a string or a number, got {}", where, field, v.type_name());
}

bool is_plain_number(const std::string& s) {
  static const std::regex number(R"(^-?[0-9]+(\.[0-9]+)?$)");
  return std::regex_match(s, number);
}

std::string read_dataset_file(const std::string& path) {
  std::optional<std::string> text = read_file(path);
  KF_CHECK(text, "cannot open data set file '{}'", path);
  return std::move(*text);
}

bool is_builtin(const std::string& name) {
  return std::find_if(std::begin(kBuiltinDatasets), std::end(kBuiltinDatasets),
                      [&](const char* b) { return name == b; }) != std::end(kBuiltinDatasets);
}

}  // namespace

const char* answer_style_name(AnswerStyle style) { return style == AnswerStyle::Numeric ? "numeric" : "math"; }

std::string data_dir() {
  if (const char* env = std::getenv("KINFER_DATA"); env != nullptr && *env != '\0') return env;
  return std::string(KINFER_SOURCE_DIR) + "/data";
}

std::string gsm8k_gold(const std::string& answer) {
  const auto pos = answer.rfind("####");
  std::string gold = trim(pos == std::string::npos ? answer : answer.substr(pos + 4));
  // GSM8K writes 1,000; a comma is never anything else in its golds.
  gold.erase(std::remove(gold.begin(), gold.end(), ','), gold.end());
  return gold;
}

Dataset parse_dataset(const std::string& jsonl, const std::string& source, const DatasetOptions& options) {
  Dataset ds;
  ds.path = source;
  std::istringstream lines(jsonl);
  std::string line;
  std::size_t line_no = 0;
  std::set<std::string> seen_ids;
  bool any_hashes = false;
  while (std::getline(lines, line)) {
    ++line_no;
    if (trim(line).empty()) continue;
    const std::string where = fmt::format("{}:{}", source, line_no);
    json row = json::parse(line, nullptr, /*allow_exceptions=*/false);
    KF_CHECK(!row.is_discarded(), "{}: not valid JSON", where);
    KF_CHECK(row.is_object(), "{}: expected a JSON object, got {}", where, row.type_name());

    Problem p;
    const std::string qfield =
        !options.question_field.empty() ? options.question_field : (row.contains("problem") ? "problem" : "question");
    KF_CHECK(row.contains(qfield), "{}: missing question field '{}'", where, qfield);
    KF_CHECK(row[qfield].is_string(), "{}: field '{}' must be a string", where, qfield);
    p.question = row[qfield].get<std::string>();

    const std::string afield = !options.answer_field.empty() ? options.answer_field : "answer";
    KF_CHECK(row.contains(afield), "{}: missing answer field '{}'", where, afield);
    p.answer = scalar_to_string(row[afield], where, afield.c_str());
    if (p.answer.find("####") != std::string::npos) {
      any_hashes = true;
      p.answer = gsm8k_gold(p.answer);
    }
    p.answer = trim(p.answer);

    std::string id = std::to_string(ds.problems.size());
    for (const char* f : {"id", "unique_id", "idx"}) {
      if (row.contains(f) && !row[f].is_null()) {
        id = scalar_to_string(row[f], where, f);
        break;
      }
    }
    KF_CHECK(seen_ids.insert(id).second, "{}: duplicate problem id '{}'", where, id);
    p.id = id;
    ds.problems.push_back(std::move(p));
  }
  KF_CHECK(!ds.problems.empty(), "{}: no problems", source);
  const bool all_numeric =
      std::all_of(ds.problems.begin(), ds.problems.end(), [](const Problem& p) { return is_plain_number(p.answer); });
  ds.style = (all_numeric || any_hashes) ? AnswerStyle::Numeric : AnswerStyle::Math;
  ds.name = std::filesystem::path(source).stem().string();
  return ds;
}

Dataset load_dataset(const std::string& name_or_path, const DatasetOptions& options) {
  std::string path = name_or_path;
  if (is_builtin(name_or_path)) {
    path = data_dir() + "/" + name_or_path + ".jsonl";
  } else if (!std::filesystem::exists(path)) {
    fail("unknown data set '{}': not a file and not one of aime24, aime25, amc23, math500, gsm8k", name_or_path);
  }
  Dataset ds = parse_dataset(read_dataset_file(path), path, options);
  if (is_builtin(name_or_path)) ds.name = name_or_path;
  return ds;
}

std::vector<std::string> split_ids(const std::string& csv) {
  std::vector<std::string> ids;
  std::istringstream in(csv);
  std::string item;
  while (std::getline(in, item, ',')) {
    item = trim(item);
    if (!item.empty()) ids.push_back(item);
  }
  return ids;
}

std::vector<Problem> select_problems(const std::vector<Problem>& problems, const Selection& selection) {
  std::vector<Problem> picked;
  if (selection.ids.empty()) {
    picked = problems;
  } else {
    std::unordered_map<std::string, const Problem*> by_id;
    for (const Problem& p : problems) by_id[p.id] = &p;
    for (const std::string& id : selection.ids) {
      const auto it = by_id.find(id);
      KF_CHECK(it != by_id.end(), "--ids: no problem with id '{}'", id);
      picked.push_back(*it->second);
    }
  }
  const std::size_t start = std::min(selection.offset, picked.size());
  std::size_t end = picked.size();
  if (selection.limit) end = std::min(end, start + *selection.limit);
  return {picked.begin() + static_cast<std::ptrdiff_t>(start), picked.begin() + static_cast<std::ptrdiff_t>(end)};
}

}  // namespace kf::eval

#include "eval/trace.h"

#include <map>
#include <sstream>

#include "util/error.h"
#include "util/file.h"

namespace kf::eval {

using nlohmann::json;

namespace {

// Typed field access that names the field and place on failure.
const json& need(const json& j, const char* field, const std::string& where) {
  KF_CHECK(j.is_object(), "{}: expected a JSON object", where);
  auto it = j.find(field);
  KF_CHECK(it != j.end(), "{}: missing field '{}'", where, field);
  return *it;
}

std::string need_string(const json& j, const char* field, const std::string& where) {
  const json& v = need(j, field, where);
  KF_CHECK(v.is_string(), "{}: field '{}' must be a string (got {})", where, field, v.type_name());
  return v.get<std::string>();
}

std::string opt_string(const json& j, const char* field, const std::string& where) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return "";
  if (it->is_number()) return it->dump();  // numeric ids / answers
  KF_CHECK(it->is_string(), "{}: field '{}' must be a string (got {})", where, field, it->type_name());
  return it->get<std::string>();
}

int64_t opt_int(const json& j, const char* field, const std::string& where, int64_t fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  KF_CHECK(it->is_number_integer() || it->is_number_unsigned(), "{}: field '{}' must be an integer (got {})", where,
           field, it->dump());
  return it->get<int64_t>();
}

// A string, or a number written as its JSON text (golds are sometimes numbers).
std::string string_or_number(const json& v, const char* field, const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number()) return v.dump();
  fail("{}: field '{}' must be a string or a number (got {})", where, field, v.type_name());
}

json parse_line(std::string_view line, const std::string& where) {
  try {
    return json::parse(line);
  } catch (const json::parse_error& e) {
    fail("{}: invalid JSON: {}", where, e.what());
  }
}

bool is_kinetics_first_line(const json& j) {
  if (!j.is_object() || j.contains("kinfer_trace")) return false;
  return j.empty() || (j.contains("query") && j.contains("choices")) || j.contains("attn_local") || j.contains("attn_block_topk") || j.contains("attn_topk") ||
         j.contains("attn_block_size") || j.contains("task") || j.contains("pass@1");
}

// One Kinetics row -> (query, gold, sample).
void add_kinetics_row(const json& j, const std::string& where, std::vector<TraceProblem>& problems,
                      std::map<std::string, size_t>& by_query) {
  const std::string query = need_string(j, "query", where);
  const json& choices = need(j, "choices", where);
  KF_CHECK(choices.is_array() && !choices.empty(), "{}: field 'choices' must be a non-empty list", where);
  const std::string gold = string_or_number(choices[0], "choices", where);
  const json& pred = need(j, "prediction", where);
  std::string text;
  if (pred.is_array()) {
    KF_CHECK(!pred.empty(), "{}: field 'prediction' is an empty list", where);
    text = string_or_number(pred[0], "prediction", where);
  } else {
    text = string_or_number(pred, "prediction", where);
  }
  const json& score = need(j, "score", where);
  KF_CHECK(score.is_number() || score.is_boolean(), "{}: field 'score' must be a number (got {})", where,
           score.type_name());
  TraceSample s;
  s.text = std::move(text);
  s.correct = score.is_boolean() ? score.get<bool>() : score.get<double>() > 0;  // 0/100 (or 0/1)

  const std::string key = query + '\x1f' + gold;  // the paper groups by (query, choices)
  auto [it, inserted] = by_query.try_emplace(key, problems.size());
  if (inserted) {
    TraceProblem p;
    p.id = std::to_string(problems.size());
    p.question = query;
    p.answer = gold;
    problems.push_back(std::move(p));
  }
  problems[it->second].samples.push_back(std::move(s));
}

// Model output may hold invalid UTF-8; write U+FFFD instead of throwing.
std::string dump_line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

bool Trace::has_token_counts() const {
  for (const TraceProblem& p : problems)
    for (const TraceSample& s : p.samples)
      if (s.prompt_tokens < 0 || s.gen_tokens < 0) return false;
  return true;
}

size_t Trace::sample_count() const {
  size_t n = 0;
  for (const TraceProblem& p : problems) n += p.samples.size();
  return n;
}

json header_json(const TraceHeader& h) {
  json j = h.extra.is_object() ? h.extra : json::object();
  j["kinfer_trace"] = 1;
  j["model"] = h.model;
  j["dataset"] = h.dataset;
  j["attn"] = h.attn;
  j["sampling"] = h.sampling;
  j["prompt_template"] = h.prompt_template;
  j["git"] = h.git;
  j["created"] = h.created;
  if (!h.cost_model.is_null()) j["cost_model"] = h.cost_model;
  if (!h.shard.is_null()) j["shard"] = h.shard;
  return j;
}

json problem_json(const TraceProblem& p) {
  json samples = json::array();
  for (const TraceSample& s : p.samples) {
    json sj = {{"text", s.text},
               {"prediction", s.prediction},
               {"correct", s.correct},
               {"prompt_tokens", s.prompt_tokens},
               {"gen_tokens", s.gen_tokens},
               {"stop_reason", s.stop_reason}};
    if (s.thinking_cut >= 0) sj["thinking_cut"] = s.thinking_cut;
    samples.push_back(std::move(sj));
  }
  json j = {{"id", p.id}, {"question", p.question}, {"answer", p.answer}, {"samples", samples}};
  if (!p.efflops.is_null() && !p.efflops.empty()) j["efflops"] = p.efflops;
  return j;
}

TraceHeader parse_header(const json& j, const std::string& where) {
  const json& version = need(j, "kinfer_trace", where);
  KF_CHECK(version == 1, "{}: unsupported kinfer_trace version {}", where, version.dump());
  TraceHeader h;
  h.model = opt_string(j, "model", where);
  h.dataset = opt_string(j, "dataset", where);
  if (auto it = j.find("attn"); it != j.end() && !it->is_null()) {
    KF_CHECK(it->is_object(), "{}: field 'attn' must be an object", where);
    h.attn = *it;
  }
  if (auto it = j.find("sampling"); it != j.end() && !it->is_null()) {
    KF_CHECK(it->is_object(), "{}: field 'sampling' must be an object", where);
    h.sampling = *it;
  }
  h.prompt_template = opt_string(j, "prompt_template", where);
  h.git = opt_string(j, "git", where);
  h.created = opt_string(j, "created", where);
  if (auto it = j.find("cost_model"); it != j.end() && !it->is_null()) {
    KF_CHECK(it->is_object(), "{}: field 'cost_model' must be an object", where);
    h.cost_model = *it;
  }
  if (auto it = j.find("shard"); it != j.end() && !it->is_null()) {
    KF_CHECK(it->is_object(), "{}: field 'shard' must be an object", where);
    h.shard = *it;
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    static constexpr std::string_view kKnown[] = {"kinfer_trace", "model", "dataset", "attn", "sampling",
                                                  "prompt_template", "git", "created", "cost_model", "shard"};
    bool known = false;
    for (std::string_view k : kKnown) known = known || it.key() == k;
    if (!known) h.extra[it.key()] = it.value();
  }
  return h;
}

TraceProblem parse_problem(const json& j, const std::string& where) {
  KF_CHECK(j.is_object(), "{}: expected a JSON object", where);
  TraceProblem p;
  p.id = opt_string(j, "id", where);
  p.question = opt_string(j, "question", where);
  p.answer = string_or_number(need(j, "answer", where), "answer", where);
  const json& samples = need(j, "samples", where);
  KF_CHECK(samples.is_array(), "{}: field 'samples' must be a list", where);
  for (size_t i = 0; i < samples.size(); ++i) {
    const json& sj = samples[i];
    const std::string at = fmt::format("{} samples[{}]", where, i);
    KF_CHECK(sj.is_object(), "{}: expected a JSON object", at);
    TraceSample s;
    s.text = opt_string(sj, "text", at);
    s.prediction = opt_string(sj, "prediction", at);
    const json& correct = need(sj, "correct", at);
    KF_CHECK(correct.is_boolean(), "{}: field 'correct' must be true or false", at);
    s.correct = correct.get<bool>();
    s.prompt_tokens = opt_int(sj, "prompt_tokens", at, -1);
    s.gen_tokens = opt_int(sj, "gen_tokens", at, -1);
    s.stop_reason = opt_string(sj, "stop_reason", at);
    s.thinking_cut = opt_int(sj, "thinking_cut", at, -1);
    p.samples.push_back(std::move(s));
  }
  if (auto it = j.find("efflops"); it != j.end() && !it->is_null()) p.efflops = *it;
  return p;
}

Trace parse_trace(std::string_view text, const std::string& source) {
  Trace t;
  t.path = source;
  std::map<std::string, size_t> by_query;
  bool have_first = false;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::string where = fmt::format("{}:{}", source, line_no);
    const json j = parse_line(line, where);
    if (!have_first) {
      have_first = true;
      KF_CHECK(j.is_object(), "{}: the first line must be a JSON object (trace header)", where);
      if (j.contains("kinfer_trace")) {
        t.format = TraceFormat::Kinfer;
        t.header = parse_header(j, where);
        continue;
      }
      KF_CHECK(is_kinetics_first_line(j),
               "{}: not a trace: the first line has neither 'kinfer_trace' nor Kinetics metadata "
               "(attn_local, attn_block_size, attn_block_topk, attn_topk) or summary (task, pass@1)",
               where);
      t.format = TraceFormat::Kinetics;
      t.first_line = j;
      if (j.contains("query") && j.contains("choices")) {  // no metadata line: already a sample
        add_kinetics_row(j, where, t.problems, by_query);
        continue;
      }
      for (const char* k : {"attn_local", "attn_block_size", "attn_block_topk", "attn_topk"})
        if (j.contains(k)) t.header.attn[k] = j[k];
      if (j.contains("task") && j["task"].is_string()) t.header.dataset = j["task"].get<std::string>();
      continue;
    }
    if (t.format == TraceFormat::Kinfer) {
      t.problems.push_back(parse_problem(j, where));
    } else {
      add_kinetics_row(j, where, t.problems, by_query);
    }
  }
  KF_CHECK(have_first, "{}: empty trace (no header line)", source);
  return t;
}

Trace read_trace(const std::string& path) {
  std::optional<std::string> text = read_file(path);
  KF_CHECK(text, "cannot open trace '{}'", path);
  return parse_trace(*text, path);
}

TraceWriter::TraceWriter(const std::string& path, const TraceHeader& header) : path_(path), out_(path) {
  KF_CHECK(out_, "cannot write trace '{}'", path);
  out_ << dump_line(header_json(header)) << '\n' << std::flush;
}

void TraceWriter::write(const TraceProblem& problem) {
  out_ << dump_line(problem_json(problem)) << '\n' << std::flush;
  KF_CHECK(out_, "write to trace '{}' failed", path_);
}

void write_trace(const std::string& path, const Trace& trace) {
  TraceWriter w(path, trace.header);
  for (const TraceProblem& p : trace.problems) w.write(p);
}

}  // namespace kf::eval

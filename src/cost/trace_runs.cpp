#include "cost/trace_runs.h"

#include <filesystem>

#include "cost/presets.h"
#include "eval/prompt.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace kf::cost {

using nlohmann::json;

namespace {

// An optional non-negative integer field (null counts as absent).
std::optional<int64_t> int_field(const json& j, const char* field, const std::string& where) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::nullopt;
  KF_CHECK(it->is_number_integer() || it->is_number_unsigned(), "{}: attn field '{}' must be an integer (got {})",
           where, field, it->dump());
  const int64_t v = it->get<int64_t>();
  KF_CHECK(v >= 0, "{}: attn field '{}' must be >= 0 (got {})", where, field, v);
  return v;
}

// Defaults of the generate CLI (DESIGN.md): 16-token pages, 4 local pages, 64 top-k pages.
constexpr int64_t kPageSize = 16, kLocalPages = 4, kTopkPages = 64;

}  // namespace

AttnSpec attn_spec_from_json(const json& attn, const std::string& where) {
  AttnSpec spec;
  if (attn.is_null() || (attn.is_object() && attn.empty())) return spec;  // dense
  KF_CHECK(attn.is_object(), "{}: 'attn' must be an object", where);

  // Kinetics metadata.
  if (attn.contains("attn_local") || attn.contains("attn_block_topk") || attn.contains("attn_topk")) {
    const int64_t local = int_field(attn, "attn_local", where).value_or(0);
    if (auto k = int_field(attn, "attn_block_topk", where)) {
      spec.formula = Formula::BlockTopk;
      spec.local_tokens = local;
      spec.page_size = int_field(attn, "attn_block_size", where).value_or(16);
      spec.topk_pages = *k;
    } else if (attn.contains("attn_local") && !attn["attn_local"].is_null()) {
      spec.formula = Formula::Sparse;
      spec.budget = local + int_field(attn, "attn_topk", where).value_or(0);
    }
    if (spec.formula != Formula::Dense) spec.validate();
    return spec;
  }

  // kinfer header.
  std::string policy = "dense";
  for (const char* key : {"policy", "name", "attn"}) {
    if (auto it = attn.find(key); it != attn.end() && it->is_string()) {
      policy = it->get<std::string>();
      break;
    }
  }
  const int64_t page = int_field(attn, "page_size", where).value_or(kPageSize);
  const int64_t local_pages = int_field(attn, "local_pages", where).value_or(kLocalPages);
  const int64_t topk_pages = int_field(attn, "topk_pages", where).value_or(kTopkPages);
  KF_CHECK(page > 0, "{}: attn page_size must be > 0", where);
  if (policy == "dense") {
    // nothing to add
  } else if (policy == "local") {
    spec.formula = Formula::Sparse;
    spec.budget = page * (1 + local_pages);
  } else if (policy == "topk") {
    spec.formula = Formula::Sparse;
    spec.budget = page * (1 + local_pages + topk_pages);
  } else if (policy == "blocktopk") {
    spec.formula = Formula::BlockTopk;
    spec.local_tokens = page * (1 + local_pages);
    spec.page_size = page;
    spec.topk_pages = topk_pages;
    if (auto it = attn.find("summary_dtype"); it != attn.end()) {
      KF_CHECK(it->is_string() && (*it == "auto" || *it == "int8"),
               "{}: attn summary_dtype must be \"auto\" or \"int8\"", where);
      spec.int8_summaries = *it == "int8";
    }
  } else if (policy == "sparse") {
    spec.formula = Formula::Sparse;
    auto b = int_field(attn, "budget", where);
    KF_CHECK(b.has_value(), "{}: sparse attn needs a 'budget'", where);
    spec.budget = *b;
  } else {
    fail("{}: unknown attn policy '{}' (known: dense, local, blocktopk, topk, sparse)", where, policy);
  }
  spec.validate();
  return spec;
}

std::optional<ModelShape> model_shape_for_trace(const eval::Trace& trace) {
  const json& cm = trace.header.cost_model;
  if (cm.is_object()) {
    const std::string where = trace.path + ": header cost_model";
    auto num = [&](const char* f) {
      auto it = cm.find(f);
      KF_CHECK(it != cm.end() && it->is_number() && it->get<double>() > 0, "{}: missing or bad field '{}'", where, f);
      return it->get<double>();
    };
    ModelShape s;
    s.name = cm.contains("name") && cm["name"].is_string() && !cm["name"].get<std::string>().empty()
                 ? cm["name"].get<std::string>()
                 : trace.header.model;
    s.params = num("params");
    s.n_heads = int(num("n_heads"));
    s.n_kv_heads = int(num("n_kv_heads"));
    s.head_dim = int(num("head_dim"));
    s.n_layers = int(num("n_layers"));
    return s;
  }
  for (const std::string& text : {trace.header.model, std::filesystem::path(trace.path).filename().string()}) {
    if (text.empty()) continue;
    if (auto p = detect_model_preset(text)) {
      ModelShape s = shape_of(p->config, p->params);
      s.name = p->name;
      return s;
    }
  }
  return std::nullopt;
}

size_t fill_token_counts(eval::Trace& trace, const Tokenizer& tokenizer) {
  const std::string tmpl_name =
      trace.format == eval::TraceFormat::Kinetics || trace.header.prompt_template.empty()
          ? "kinetics-math"
          : trace.header.prompt_template;
  const eval::PromptTemplate tmpl = eval::find_prompt_template(tmpl_name);
  size_t filled = 0;
  for (eval::TraceProblem& p : trace.problems) {
    int64_t prompt_tokens = -1;  // one encode per problem, on demand
    for (eval::TraceSample& s : p.samples) {
      if (s.prompt_tokens < 0) {
        if (prompt_tokens < 0) {
          const std::vector<ChatMessage> chat = {{"user", eval::render_prompt(tmpl, p.question)}};
          prompt_tokens = int64_t(tokenizer.encode_chat(chat).size());
        }
        s.prompt_tokens = prompt_tokens;
        ++filled;
      }
      if (s.gen_tokens < 0) {
        s.gen_tokens = int64_t(tokenizer.encode(s.text).size());
        ++filled;
      }
    }
  }
  return filled;
}

RunConfig run_from_trace(const eval::Trace& trace, const ModelShape& model, const AttnSpec& attn,
                         const Predict& predict) {
  RunConfig run;
  run.source = trace.path;
  run.model = model;
  run.attn = attn;
  run.label = fmt::format("{} {}", model.name, attn.label());
  for (size_t i = 0; i < trace.problems.size(); ++i) {
    const eval::TraceProblem& tp = trace.problems[i];
    KF_CHECK(!tp.samples.empty(), "{}: problem '{}' has no samples", trace.path, tp.id);
    ProblemRun p;
    p.prompt_tokens = tp.samples.front().prompt_tokens;
    for (const eval::TraceSample& s : tp.samples) {
      KF_CHECK(s.prompt_tokens >= 0 && s.gen_tokens >= 0,
               "{}: problem '{}' has samples without token counts (give --tokenizer to count them)", trace.path,
               tp.id);
      p.gen_tokens.push_back(s.gen_tokens);
      p.correct.push_back(s.correct);
      p.predictions.push_back(s.prediction.empty() && predict ? predict(s.text) : s.prediction);
    }
    run.problems.push_back(std::move(p));
  }
  KF_CHECK(!run.problems.empty(), "{}: the trace has no problems", trace.path);
  return run;
}

nlohmann::json price_problem(const eval::TraceProblem& problem, const ModelShape& model, const AttnSpec& attn,
                             double intensity) {
  KF_CHECK(!problem.samples.empty(), "problem '{}' has no samples to price", problem.id);
  std::vector<int64_t> gen_lens;
  for (const eval::TraceSample& s : problem.samples) {
    KF_CHECK(s.gen_tokens >= 0 && s.prompt_tokens >= 0, "problem '{}': a sample has no token counts", problem.id);
    gen_lens.push_back(s.gen_tokens);
  }
  const auto n = static_cast<int64_t>(problem.samples.size());
  const Cost c = expected_cost(model, attn, intensity, problem.samples.front().prompt_tokens, gen_lens, n);
  nlohmann::json j = cost_json(c);
  j["n"] = n;
  return j;
}

}  // namespace kf::cost

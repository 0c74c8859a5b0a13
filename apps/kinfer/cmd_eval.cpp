// kinfer eval: every selected problem x N samples through the engine in one
// continuous batch; each problem is graded and appended to the trace the
// moment its last sample ends, so a killed run loses only problems in flight
// and --resume picks up where it stopped. Prints a summary (--json: one object).
// With several replicas (--devices) problems go to the replicas by load, all
// samples of a problem on one; --shard I/N runs one shard of the problems
// (eval/shard.h; kinfer merge joins the shards' traces).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "commands.h"
#include "cost/presets.h"
#include "cost/trace_runs.h"
#include "dist/replicas.h"
#include "engine/engine.h"
#include "eval/dataset.h"
#include "eval/eval_run.h"
#include "eval/grade.h"
#include "eval/prompt.h"
#include "eval/shard.h"
#include "eval/summary.h"
#include "eval/trace.h"
#include "generate_common.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace kf::cli {
namespace {

struct EvalOptions {
  std::string dataset;
  std::string out;
  std::string question_field, answer_field;
  std::string ids;
  std::string shard;
  std::size_t limit = 0, offset = 0;
  std::string prompt_template = "kinetics-math";
  std::string hardware = cost::kDefaultHardware;
  bool no_thinking = false;
  bool resume = false;
  bool json = false, progress = false, no_progress = false;
};

nlohmann::json attn_json(const GenerateOptions& o) {
  nlohmann::json j = {{"policy", o.attn},
                      {"page_size", o.page_size},
                      {"topk_pages", o.topk_pages},
                      {"local_pages", o.local_pages},
                      {"dense_layers", parse_layer_list(o.dense_layers)}};
  if (o.summary_dtype != "auto") j["summary_dtype"] = o.summary_dtype;  // (absent: older traces resume)
  return j;
}

// Floats as typed (0.6, not 0.6000000238418579) so headers read and compare cleanly.
double tidy(float v) { return std::round(static_cast<double>(v) * 1e6) / 1e6; }

nlohmann::json sampling_json(const GenerateOptions& o, bool thinking) {
  nlohmann::json j = {{"n", o.n},
          {"max_tokens", o.max_tokens},
          {"temperature", tidy(o.temp)},
          {"top_k", o.top_k},
          {"top_p", tidy(o.top_p)},
          {"min_p", tidy(o.min_p)},
          {"repetition_penalty", tidy(o.repetition_penalty)},
          {"presence_penalty", tidy(o.presence_penalty)},
          {"seed", o.seed},
          {"thinking", thinking},
          {"repetition_stop", !o.no_repetition_stop}};
  if (o.thinking_budget >= 0) j["thinking_budget"] = o.thinking_budget;  // (absent: older traces resume)
  return j;
}

// One problem being generated: where its samples go once they are all done.
struct Pending {
  const eval::Problem* problem = nullptr;
  int64_t prompt_tokens = 0;
  int done = 0;
};

}  // namespace

int cmd_eval(int argc, char** argv) {
  CLI::App app{"Evaluate a model on a math data set: N samples per problem, graded, written as a trace",
               "kinfer eval"};
  GenerateOptions o;
  EvalOptions e;
  add_generate_options(app, o);
  app.add_option("--dataset", e.dataset, "aime24|aime25|amc23|math500|gsm8k or a JSONL file")->required();
  app.add_option("--out", e.out, "trace file (JSONL) to write")->required();
  app.add_flag("--resume", e.resume, "keep the problems already in --out and run only the others");
  app.add_option("--limit", e.limit, "at most this many problems (0 = all)");
  app.add_option("--offset", e.offset, "skip this many problems first");
  app.add_option("--ids", e.ids, "only these problem ids, comma-separated");
  app.add_option("--shard", e.shard,
                 "I/N: run every N-th selected problem from the I-th (0-based) into --out; kinfer merge joins the N");
  app.add_option("--question-field", e.question_field, "JSONL field holding the question (default problem|question)");
  app.add_option("--answer-field", e.answer_field, "JSONL field holding the gold answer (default answer)");
  app.add_option("--prompt-template", e.prompt_template, "kinetics-math, plain, boxed, or a file with {question}")
      ->capture_default_str();
  app.add_flag("--no-thinking", e.no_thinking, "Qwen3: turn thinking off in the chat template");
  app.add_option("--hardware", e.hardware, "hardware preset pricing eFLOPs (b200|h200|h100)")->capture_default_str();
  app.add_flag("--progress", e.progress, "show the progress line even when stderr is not a terminal");
  app.add_flag("--no-progress", e.no_progress, "never show the progress line");
  app.add_flag("--json", e.json, "print the summary as one JSON object");
  CLI11_PARSE(app, argc, argv);
  KF_CHECK(o.n >= 1, "-n must be >= 1 (got {})", o.n);
  KF_CHECK(o.max_tokens >= 1, "--max-tokens must be >= 1 (got {})", o.max_tokens);
  KF_CHECK(o.thinking_budget < 0 || !e.no_thinking, "--thinking-budget needs thinking on (drop --no-thinking)");
  const auto intensity = cost::hardware_intensity(e.hardware);
  KF_CHECK(intensity.has_value(), "--hardware '{}': not a known preset (b200, h200, h100)", e.hardware);

  // Problems and prompts.
  const eval::Dataset ds = eval::load_dataset(e.dataset, {e.question_field, e.answer_field});
  eval::Selection sel;
  sel.ids = eval::split_ids(e.ids);
  sel.offset = e.offset;
  if (e.limit > 0) sel.limit = e.limit;
  const std::vector<eval::Problem> selected = eval::select_problems(ds.problems, sel);
  KF_CHECK(!selected.empty(), "no problems selected from '{}'", e.dataset);
  const eval::Shard shard = e.shard.empty() ? eval::Shard{} : eval::parse_shard(e.shard);
  const std::vector<eval::Problem> problems = eval::shard_problems(selected, shard);
  std::map<std::string, int64_t> dataset_index;  // the Philox key: stable across --resume and selections
  for (std::size_t i = 0; i < ds.problems.size(); ++i) dataset_index[ds.problems[i].id] = static_cast<int64_t>(i);
  const eval::PromptTemplate tmpl = eval::find_prompt_template(e.prompt_template);

  const auto t_load = std::chrono::steady_clock::now();
  GenerateSetup g = setup_generate(o);
  KF_CHECK(g.tokenizer(), "eval needs a tokenizer; model '{}' has none", o.model);
  const Tokenizer& tok = *g.tokenizer();
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

  const ModelConfig& mc = g.config;
  eval::TraceHeader header;
  header.model = o.model;
  header.dataset = ds.name;
  header.attn = attn_json(o);
  header.sampling = sampling_json(o, !e.no_thinking);
  header.prompt_template = tmpl.name;
  header.git = eval::source_git_revision();
  header.created = eval::utc_now();
  const cost::ModelShape shape = cost::shape_of(mc, static_cast<double>(mc.params_kinetics()));
  // name: the model's own name (GGUF general.name, the HF directory), for plot legends.
  header.cost_model = {{"params", shape.params},         {"n_heads", shape.n_heads}, {"n_kv_heads", shape.n_kv_heads},
                       {"head_dim", shape.head_dim},      {"n_layers", shape.n_layers},
                       {"name", mc.name.empty() ? o.model : mc.name}};
  header.extra = {{"answer_style", eval::answer_style_name(ds.style)}, {"dataset_path", ds.path}};
  if (!shard.whole()) header.shard = eval::shard_json(shard, selected.size(), problems);
  const cost::AttnSpec attn_spec = cost::attn_spec_from_json(header.attn, "--attn");

  // Resume: keep finished problems, append the rest.
  std::vector<eval::TraceProblem> finished;
  std::set<std::string> done_ids;
  std::optional<eval::TraceAppender> appender;
  std::optional<eval::TraceWriter> writer;
  if (e.resume) {
    if (auto existing = eval::load_for_resume(e.out)) {
      eval::check_resume_compatible(existing->header, header, e.out);
      for (eval::TraceProblem& p : existing->problems) {
        done_ids.insert(p.id);
        finished.push_back(std::move(p));
      }
      appender.emplace(e.out);
    }
  }
  if (!appender) writer.emplace(e.out, header);

  // Requests: one per problem still to do, all in one continuous batch.
  ChatOptions chat;
  chat.enable_thinking = !e.no_thinking;
  std::vector<Request> requests;
  std::vector<Pending> pending;
  for (const eval::Problem& p : problems) {
    if (done_ids.count(p.id) != 0) continue;
    const std::vector<int32_t> ids = tok.encode_chat({ChatMessage{"user", eval::render_prompt(tmpl, p.question)}}, chat);
    Request r = make_request(o, g, std::vector<int>(ids.begin(), ids.end()));
    r.rng_key = dataset_index.at(p.id);
    requests.push_back(std::move(r));
    pending.push_back({&p, static_cast<int64_t>(ids.size()), 0});
  }

  const auto total = static_cast<int64_t>(problems.size());
  int64_t problems_done = total - static_cast<int64_t>(pending.size());
  int64_t tokens = 0;
  int errors = 0;
  // --json keeps stderr quiet unless --progress asks for the bar.
  eval::EvalProgress bar(total, e.progress, e.no_progress || (e.json && !e.progress));

  // Grades a problem whose samples are all done and writes it out at once.
  auto finish_problem = [&](size_t slot, const FinishedRequest& fin) {
    Pending& pend = pending[slot];
    pend.done = o.n;
    eval::TraceProblem tp;
    tp.id = pend.problem->id;
    tp.question = pend.problem->question;
    tp.answer = pend.problem->answer;
    for (const SampleResult& s : fin.samples) {
      eval::TraceSample ts;
      ts.text = sample_text(g, s, o);
      const eval::GradeResult grade = eval::grade_response(ts.text, tp.answer, ds.style);
      ts.prediction = grade.prediction;
      ts.correct = grade.correct;
      ts.prompt_tokens = pend.prompt_tokens;
      ts.gen_tokens = static_cast<int64_t>(s.tokens.size());
      ts.stop_reason = stop_reason_name(s.stop);
      ts.thinking_cut = s.thinking_cut;
      if (s.stop == StopReason::Error) ++errors;
      tp.samples.push_back(std::move(ts));
    }
    tp.efflops = cost::price_problem(tp, shape, attn_spec, *intensity);
    if (writer) writer->write(tp);
    if (appender) appender->write(tp);
    finished.push_back(std::move(tp));
    ++problems_done;
    bar.update(problems_done, tokens);
  };

  double wall_s = 0;
  nlohmann::json engine_stats = nlohmann::json::object();
  if (!requests.empty()) {
    // One engine per replica; problems go to them by load (all samples of a
    // problem on one), are graded and written here as they finish.
    dist::ReplicaSet set(g.replicas, engine_config(o, g, requests));
    bar.update(problems_done, tokens);
    const auto t0 = std::chrono::steady_clock::now();
    run_requests(set, std::move(requests), finish_problem, [&] {
      tokens = set.generated_tokens();
      bar.update(problems_done, tokens);
    });
    tokens = set.generated_tokens();
    wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    engine_stats = stats_json(set, g, 0, o);
    engine_stats.erase("prompt_tokens");
  }
  bar.finish();
  for (const Pending& p : pending) KF_CHECK(p.done == o.n, "problem '{}' did not finish", p.problem->id);

  // Summary over this run's problems (the shard's with --shard), in data set order.
  std::map<std::string, const eval::TraceProblem*> by_id;
  for (const eval::TraceProblem& p : finished) by_id[p.id] = &p;
  std::vector<eval::TraceProblem> ours;
  for (const eval::Problem& p : problems) ours.push_back(*by_id.at(p.id));
  const eval::Summary summary = eval::summarize(ours);
  nlohmann::json run = {{"problems_run", pending.size()},
                        {"problems_resumed", problems.size() - pending.size()},
                        {"generated_tokens", tokens},
                        {"wall_s", wall_s},
                        {"load_s", load_s},
                        {"tok_s", wall_s > 0 ? static_cast<double>(tokens) / wall_s : 0.0},
                        {"hardware", e.hardware},
                        {"shard", shard.whole() ? nlohmann::json() : nlohmann::json(e.shard)},
                        {"engine", engine_stats}};
  if (e.json) {
    const nlohmann::json j = {{"out", e.out},          {"model", o.model},
                              {"dataset", ds.name},    {"attn", header.attn},
                              {"summary", eval::summary_json(summary)}, {"run", run}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s on %s (%zu problems, n=%d, max %d tokens, attn %s) -> %s\n%s", o.model.c_str(), ds.name.c_str(),
                problems.size(), o.n, o.max_tokens, attn_spec.label().c_str(), e.out.c_str(),
                eval::summary_text(summary).c_str());
    std::printf("this run: %zu problems, %lld tokens in %.1f s (%.1f tok/s)\n", pending.size(),
                static_cast<long long>(tokens), wall_s, wall_s > 0 ? static_cast<double>(tokens) / wall_s : 0.0);
  }
  if (errors > 0) {
    std::fprintf(stderr, "kinfer eval: %d samples failed (stop_reason \"error\" in the trace)\n", errors);
    return 1;
  }
  return 0;
}

}  // namespace kf::cli

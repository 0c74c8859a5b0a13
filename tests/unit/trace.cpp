// Trace reading and writing: kinfer traces round-trip, Kinetics files (one
// sample a row, metadata or summary first line) group into problems, and bad
// input names file, line and field.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "cost/trace_runs.h"
#include "eval/trace.h"
#include "util/error.h"

namespace kf::eval {
namespace {

const std::string kDir = std::string(KINFER_SOURCE_DIR) + "/tests/fixtures/traces/";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Trace, ReadsKineticsBlockTopk) {
  const Trace t = read_trace(kDir + "kinetics_aime24_qwen3-0-6b_blocktopk.jsonl");
  EXPECT_EQ(t.format, TraceFormat::Kinetics);
  ASSERT_EQ(t.problems.size(), 2u);  // 6 rows, 2 queries
  EXPECT_EQ(t.problems[0].question, "What is $1+1$?");
  EXPECT_EQ(t.problems[0].answer, "2");
  ASSERT_EQ(t.problems[0].samples.size(), 3u);
  EXPECT_TRUE(t.problems[0].samples[0].correct);
  EXPECT_FALSE(t.problems[0].samples[1].correct);  // score 0
  EXPECT_TRUE(t.problems[0].samples[2].correct);
  EXPECT_EQ(t.problems[1].answer, "12");
  EXPECT_EQ(t.problems[1].samples.size(), 3u);
  EXPECT_NE(t.problems[0].samples[1].text.find("\\boxed{3}"), std::string::npos);
  EXPECT_FALSE(t.has_token_counts());
  EXPECT_EQ(t.sample_count(), 6u);

  const cost::AttnSpec a = cost::attn_spec_from_json(t.header.attn, t.path);
  EXPECT_EQ(a.formula, cost::Formula::BlockTopk);
  EXPECT_EQ(a.local_tokens, 32);
  EXPECT_EQ(a.page_size, 16);
  EXPECT_EQ(a.topk_pages, 8);
  EXPECT_EQ(a.kv_budget(), 32 + 16 * 8);
  EXPECT_EQ(cost::model_shape_for_trace(t)->name, "qwen3-0.6b");  // from the file name
}

TEST(Trace, ReadsKineticsSummaryAndTopk) {
  const Trace s = read_trace(kDir + "kinetics_summary_qwen3-8b.jsonl");
  EXPECT_EQ(s.format, TraceFormat::Kinetics);
  EXPECT_EQ(s.header.dataset, "aime24");
  EXPECT_EQ(s.problems.size(), 2u);
  EXPECT_EQ(cost::attn_spec_from_json(s.header.attn, s.path).formula, cost::Formula::Dense);
  EXPECT_EQ(cost::model_shape_for_trace(s)->name, "qwen3-8b");

  const Trace k = read_trace(kDir + "kinetics_topk.jsonl");
  const cost::AttnSpec a = cost::attn_spec_from_json(k.header.attn, k.path);
  EXPECT_EQ(a.formula, cost::Formula::Sparse);
  EXPECT_EQ(a.budget, 128 + 64);
  EXPECT_FALSE(cost::model_shape_for_trace(k).has_value());
}

// A kinfer header's blocktopk with int8 page summaries prices the search at
// their bytes; a bad summary_dtype names the field.
TEST(Trace, Int8SummariesInTheHeader) {
  nlohmann::json attn = {{"policy", "blocktopk"}, {"page_size", 16}, {"topk_pages", 2}, {"local_pages", 1}};
  EXPECT_FALSE(cost::attn_spec_from_json(attn, "h").int8_summaries);
  attn["summary_dtype"] = "int8";
  const cost::AttnSpec a = cost::attn_spec_from_json(attn, "h");
  EXPECT_TRUE(a.int8_summaries);
  EXPECT_EQ(a.kv_budget(), 16 * 2 + 32);
  attn["summary_dtype"] = "fp4";
  EXPECT_THROW(cost::attn_spec_from_json(attn, "h"), Error);
}

TEST(Trace, KineticsNullTopkMeansLocalOnly) {
  const Trace t = parse_trace(
      "{\"attn_local\": 256, \"attn_topk\": null}\n"
      "{\"query\": \"q\", \"choices\": [3], \"prediction\": [\"x\"], \"score\": 100}\n",
      "mem");
  EXPECT_EQ(t.problems.at(0).answer, "3");  // numeric gold kept as text
  const cost::AttnSpec a = cost::attn_spec_from_json(t.header.attn, "mem");
  EXPECT_EQ(a.formula, cost::Formula::Sparse);
  EXPECT_EQ(a.budget, 256);
}

TEST(Trace, KineticsWithoutMetadataLine) {
  const Trace t = parse_trace(
      "{\"query\": \"q\", \"choices\": [\"1\"], \"prediction\": [\"a\"], \"score\": 0}\n"
      "{\"query\": \"q\", \"choices\": [\"1\"], \"prediction\": [\"b\"], \"score\": 100.0}\n",
      "rows.jsonl");
  EXPECT_EQ(t.format, TraceFormat::Kinetics);
  ASSERT_EQ(t.problems.size(), 1u);
  ASSERT_EQ(t.problems[0].samples.size(), 2u);
  EXPECT_FALSE(t.problems[0].samples[0].correct);
  EXPECT_TRUE(t.problems[0].samples[1].correct);
}

TEST(Trace, KinferRoundTrip) {
  TraceHeader h;
  h.model = "qwen3-4b";
  h.dataset = "aime24";
  h.attn = {{"policy", "blocktopk"}, {"page_size", 16}, {"local_pages", 2}, {"topk_pages", 8}};
  h.sampling = {{"temperature", 0.6}};
  h.prompt_template = "kinetics-math";
  h.git = "abc";
  h.created = "now";
  h.extra["note"] = "kept";
  TraceProblem p;
  p.id = "7";
  p.question = "q?";
  p.answer = "\\frac{1}{2}";
  p.samples.push_back({"text \xff bad utf8", "\\frac12", true, 42, 1000, "eos"});
  p.samples.push_back({"text2", "", false, 42, 32768, "length"});
  p.efflops = {{"efflops", 1.5e15}};

  const std::string path = (std::filesystem::temp_directory_path() / "kinfer_trace_roundtrip.jsonl").string();
  {
    TraceWriter w(path, h);
    w.write(p);
  }
  const Trace t = read_trace(path);
  std::filesystem::remove(path);
  EXPECT_EQ(t.format, TraceFormat::Kinfer);
  EXPECT_EQ(t.header.model, "qwen3-4b");
  EXPECT_EQ(t.header.attn["topk_pages"], 8);
  EXPECT_EQ(t.header.extra["note"], "kept");
  ASSERT_EQ(t.problems.size(), 1u);
  const TraceProblem& r = t.problems[0];
  EXPECT_EQ(r.id, "7");
  EXPECT_EQ(r.answer, "\\frac{1}{2}");
  ASSERT_EQ(r.samples.size(), 2u);
  EXPECT_EQ(r.samples[0].text, "text \xef\xbf\xbd bad utf8");  // invalid byte written as U+FFFD
  EXPECT_TRUE(r.samples[0].correct);
  EXPECT_EQ(r.samples[0].gen_tokens, 1000);
  EXPECT_EQ(r.samples[1].stop_reason, "length");
  EXPECT_EQ(r.efflops["efflops"], 1.5e15);
  EXPECT_TRUE(t.has_token_counts());

  const cost::AttnSpec a = cost::attn_spec_from_json(t.header.attn, path);
  EXPECT_EQ(a.formula, cost::Formula::BlockTopk);
  EXPECT_EQ(a.local_tokens, 16 * 3);  // sink page + 2 local pages
  EXPECT_EQ(a.topk_pages, 8);
}

TEST(Trace, CostModelNamesTheModelForLegends) {
  // kinfer eval writes the model's own name (GGUF general.name) into cost_model;
  // without one the --model spec ("default") is the name.
  const std::string head =
      "{\"kinfer_trace\": 1, \"model\": \"default\", \"cost_model\": {\"params\": 1.3e8, \"n_heads\": 9, "
      "\"n_kv_heads\": 3, \"head_dim\": 64, \"n_layers\": 30";
  const std::string problem = "{\"id\": \"1\", \"answer\": \"1\", \"samples\": []}\n";
  const Trace named = parse_trace(head + ", \"name\": \"SmolLM2 135M Instruct\"}}\n" + problem, "n.jsonl");
  EXPECT_EQ(cost::model_shape_for_trace(named)->name, "SmolLM2 135M Instruct");
  const Trace unnamed = parse_trace(head + "}}\n" + problem, "u.jsonl");
  EXPECT_EQ(cost::model_shape_for_trace(unnamed)->name, "default");
}

TEST(Trace, KinferPolicies) {
  using nlohmann::json;
  EXPECT_EQ(cost::attn_spec_from_json(json{{"policy", "dense"}}, "x").formula, cost::Formula::Dense);
  const cost::AttnSpec local = cost::attn_spec_from_json(json{{"policy", "local"}, {"page_size", 16}, {"local_pages", 4}}, "x");
  EXPECT_EQ(local.formula, cost::Formula::Sparse);
  EXPECT_EQ(local.budget, 80);
  const cost::AttnSpec topk = cost::attn_spec_from_json(
      json{{"policy", "topk"}, {"page_size", 16}, {"local_pages", 4}, {"topk_pages", 64}}, "x");
  EXPECT_EQ(topk.budget, 16 * 69);
  EXPECT_THROW(cost::attn_spec_from_json(json{{"policy", "quest"}}, "x"), Error);
  EXPECT_THROW(cost::attn_spec_from_json(json{{"policy", "blocktopk"}, {"page_size", "big"}}, "x"), Error);
}

TEST(Trace, ErrorsNameFileLineAndField) {
  const std::string missing = error_of([] { read_trace(kDir + "bad_missing_answer.jsonl"); });
  EXPECT_NE(missing.find("bad_missing_answer.jsonl:3"), std::string::npos) << missing;
  EXPECT_NE(missing.find("'answer'"), std::string::npos) << missing;

  const std::string bad_json = error_of([] { read_trace(kDir + "bad_json.jsonl"); });
  EXPECT_NE(bad_json.find("bad_json.jsonl:3"), std::string::npos) << bad_json;
  EXPECT_NE(bad_json.find("invalid JSON"), std::string::npos) << bad_json;

  EXPECT_NE(error_of([] { parse_trace("{\"hello\": 1}\n", "t.jsonl"); }).find("t.jsonl:1"), std::string::npos);
  EXPECT_NE(error_of([] { parse_trace("", "empty.jsonl"); }).find("empty"), std::string::npos);
  const std::string no_score =
      error_of([] { parse_trace("{\"attn_local\": 8}\n{\"query\": \"q\", \"choices\": [\"1\"], \"prediction\": [\"x\"]}\n", "k.jsonl"); });
  EXPECT_NE(no_score.find("k.jsonl:2"), std::string::npos) << no_score;
  EXPECT_NE(no_score.find("'score'"), std::string::npos) << no_score;
  const std::string bad_correct = error_of([] {
    parse_trace("{\"kinfer_trace\": 1}\n{\"answer\": \"1\", \"samples\": [{\"correct\": \"yes\"}]}\n", "c.jsonl");
  });
  EXPECT_NE(bad_correct.find("c.jsonl:2 samples[0]"), std::string::npos) << bad_correct;
  EXPECT_THROW(read_trace(kDir + "no_such_file.jsonl"), Error);
}

}  // namespace
}  // namespace kf::eval

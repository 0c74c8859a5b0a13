// eval --shard I/N and kinfer merge: which problems a shard runs, and the
// merge of shard traces back into one run, with every way shards can fail to
// be one run (mismatched headers, a missing shard, a shard named twice, a
// gap, an overlap, a duplicate problem, a trace that is no shard).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "eval/shard.h"
#include "test_util.h"

using namespace kf;
using namespace kf::eval;

namespace {

std::vector<Problem> problems(int n) {
  std::vector<Problem> out;
  for (int i = 0; i < n; ++i) out.push_back({fmt::format("p{}", i), fmt::format("question {}", i), fmt::format("{}", i)});
  return out;
}

TraceHeader header(uint64_t seed = 7) {
  TraceHeader h;
  h.model = "default";
  h.dataset = "gsm8k";
  h.attn = {{"policy", "dense"}, {"page_size", 16}};
  h.sampling = {{"n", 2}, {"seed", seed}};
  h.prompt_template = "kinetics-math";
  h.git = "abc123";
  h.created = "2026-01-01T00:00:00Z";
  h.extra = {{"answer_style", "numeric"}};
  return h;
}

TraceProblem solved(const Problem& p) {
  TraceProblem t;
  t.id = p.id;
  t.question = p.question;
  t.answer = p.answer;
  t.samples.push_back(TraceSample{"the answer is " + p.answer, p.answer, true, 10, 5, "eos"});
  return t;
}

// Shard `s` of a run over `n` problems, as eval --shard writes it (all its problems done).
Trace shard_trace(int n, Shard s, uint64_t seed = 7) {
  const std::vector<Problem> all = problems(n), mine = shard_problems(all, s);
  Trace t;
  t.path = fmt::format("shard{}.jsonl", s.index);
  t.header = header(seed);
  t.header.shard = shard_json(s, all.size(), mine);
  for (auto it = mine.rbegin(); it != mine.rend(); ++it) t.problems.push_back(solved(*it));  // finishing order
  return t;
}

TEST(Shard, ParsesIndexOverCount) {
  const Shard s = parse_shard("2/5");
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 5);
  EXPECT_TRUE(parse_shard("0/1").whole());
  for (const char* bad : {"3", "3/3", "-1/2", "1/0", "a/2", "1/2x", "/2", "1/"})
    expect_error([&] { parse_shard(bad); }, {"--shard"});
  expect_error([&] { parse_shard("4/4"); }, {"0/4 .. 3/4"});
}

TEST(Shard, EveryNthProblemFromTheIth) {
  const std::vector<Problem> all = problems(7);
  std::vector<std::string> ids;
  for (const Problem& p : shard_problems(all, {1, 3})) ids.push_back(p.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"p1", "p4"}));
  EXPECT_EQ(shard_problems(all, {0, 1}).size(), 7u);
  EXPECT_TRUE(shard_problems(problems(2), {3, 4}).empty());  // more shards than problems: an empty shard
  const nlohmann::json j = shard_json({1, 3}, 7, shard_problems(all, {1, 3}));
  EXPECT_EQ(j["index"], 1);
  EXPECT_EQ(j["count"], 3);
  EXPECT_EQ(j["selected"], 7);
  EXPECT_EQ(j["ids"], nlohmann::json({"p1", "p4"}));
}

TEST(Shard, MergeRestoresTheRunInSelectionOrder) {
  std::vector<Trace> shards = {shard_trace(7, {2, 3}), shard_trace(7, {0, 3}), shard_trace(7, {1, 3})};
  shards[1].header.git = "def456";
  std::vector<std::string> warnings;
  const Trace m = merge_shards(shards, &warnings);
  ASSERT_EQ(m.problems.size(), 7u);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(m.problems[i].id, fmt::format("p{}", i));
  EXPECT_TRUE(m.header.shard.is_null());
  EXPECT_EQ(m.header.model, "default");
  ASSERT_EQ(m.header.extra["merged_from"].size(), 3u);
  EXPECT_EQ(m.header.extra["merged_from"][0]["shard"], "0/3");
  ASSERT_EQ(warnings.size(), 1u);  // different git revisions: said, not fatal
  EXPECT_NE(warnings[0].find("def456"), std::string::npos);
  // An empty shard (more shards than problems) merges too.
  const Trace two = merge_shards({shard_trace(2, {0, 3}), shard_trace(2, {1, 3}), shard_trace(2, {2, 3})});
  EXPECT_EQ(two.problems.size(), 2u);
}

TEST(Shard, MergeRefusesWhatIsNotOneRun) {
  auto three = [] { return std::vector<Trace>{shard_trace(7, {0, 3}), shard_trace(7, {1, 3}), shard_trace(7, {2, 3})}; };
  // Mismatched headers: another seed, another model, another shard count.
  std::vector<Trace> s = three();
  s[2] = shard_trace(7, {2, 3}, 8);
  expect_error([&] { merge_shards(s); }, {"not shards of one run", "sampling", "shard2.jsonl"});
  s = three();
  s[1].header.model = "other";
  expect_error([&] { merge_shards(s); }, {"model"});
  s = three();
  s[2] = shard_trace(7, {2, 4});
  expect_error([&] { merge_shards(s); }, {"shard count"});
  // A missing shard, a shard given twice.
  s = three();
  s.pop_back();
  expect_error([&] { merge_shards(s); }, {"shard 2 of 3 missing"});
  s = three();
  s[2] = shard_trace(7, {1, 3});
  expect_error([&] { merge_shards(s); }, {"both shard 1/3"});
  // A gap: a shard cut short.
  s = three();
  s[1].problems.pop_back();
  expect_error([&] { merge_shards(s); }, {"shard1.jsonl (shard 1/3)", "missing (p1)", "--resume --shard 1/3"});
  // A duplicate problem in one shard.
  s = three();
  s[0].problems.push_back(s[0].problems[0]);
  expect_error([&] { merge_shards(s); }, {"appears twice"});
  // An overlap: a problem of shard 0 in shard 1's file.
  s = three();
  s[1].problems.push_back(s[0].problems[0]);
  expect_error([&] { merge_shards(s); }, {"is not one of this shard's", "shard 0/3's"});
  // Shard records that overlap or do not cover the selection.
  s = three();
  s[1].header.shard["ids"][0] = "p0";
  expect_error([&] { merge_shards(s); }, {"belongs to both"});
  s = three();
  s[1].header.shard["ids"].erase(0);
  expect_error([&] { merge_shards(s); }, {"lists 1 problems"});
  // A trace that is no shard.
  s = three();
  s[0].header.shard = nlohmann::json();
  expect_error([&] { merge_shards(s); }, {"not a shard"});
  s = three();
  s[1].header.shard["index"] = 1e100;  // a float: its cast to int would be undefined
  expect_error([&] { merge_shards(s); }, {"shard1.jsonl", "malformed 'shard'", "'index' must be an integer"});
  expect_error([&] { require_whole(three()[1], "frontier"); }, {"shard 1/3", "kinfer merge"});
  require_whole(merge_shards(three()), "frontier");
}

TEST(Shard, HeaderRecordSurvivesTheTraceFormat) {
  const Trace t = shard_trace(5, {1, 2});
  const Trace back = parse_trace(header_json(t.header).dump() + "\n", "x.jsonl");
  EXPECT_EQ(back.header.shard, t.header.shard);
  EXPECT_FALSE(back.header.extra.contains("shard"));
}

}  // namespace

// Traces: the JSONL record of an evaluation run (DESIGN.md, Traces), read and
// written here so `eval`, `regrade`, `frontier` and `plan` agree on the format.
//
// kinfer traces: one header line
//   {"kinfer_trace": 1, "model", "dataset", "attn": {...}, "sampling": {...},
//    "prompt_template", "git", "created"}
// then one line per problem
//   {"id", "question", "answer", "samples": [{"text", "prediction", "correct",
//    "prompt_tokens", "gen_tokens", "stop_reason"[, "thinking_cut"]}], "efflops": {...}}
// ("thinking_cut": where --thinking-budget forced </think>, a token index).
// The header's "attn" uses the CLI's names: {"policy": "dense"|"local"|
// "blocktopk"|"topk", "page_size", "topk_pages", "local_pages"}, optionally
// "dense_layers"; a header may carry "cost_model": {"params", "n_heads",
// "n_kv_heads", "head_dim", "n_layers"} so non-preset models can be priced,
// and "shard" when it holds one shard of a run (eval --shard, eval/shard.h).
//
// Kinetics traces (github.com/Infini-AI-Lab/Kinetics): the first line is a
// metadata dict (attn_local, attn_block_size, attn_block_topk, attn_topk) or a
// summary (task, pass@1, ...); every further line is ONE sample:
//   {"query", "choices": [gold, ...], "prediction": [response text], "score": 0|100}
// Samples are grouped into problems by query, in order of first appearance.
// They carry no token counts (prompt_tokens/gen_tokens are -1 until filled in
// by re-tokenising) and no extracted prediction.
#pragma once
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace kf::eval {

enum class TraceFormat { Kinfer, Kinetics };

struct TraceSample {
  std::string text;          // the response
  std::string prediction;    // the extracted answer ("" if none / unknown)
  bool correct = false;
  int64_t prompt_tokens = -1;  // -1: unknown
  int64_t gen_tokens = -1;     // -1: unknown
  std::string stop_reason;     // eos, length, stop, repetition ("" if unknown)
  int64_t thinking_cut = -1;   // --thinking-budget: the token index of the forced </think> (-1: not cut)
};

struct TraceProblem {
  std::string id;
  std::string question;
  std::string answer;  // gold (Kinetics: choices[0])
  std::vector<TraceSample> samples;
  nlohmann::json efflops = nlohmann::json::object();  // as written by eval (optional)
};

struct TraceHeader {
  std::string model;
  std::string dataset;
  nlohmann::json attn = nlohmann::json::object();
  nlohmann::json sampling = nlohmann::json::object();
  std::string prompt_template;
  std::string git;
  std::string created;
  nlohmann::json cost_model;  // optional, see above (null when absent)
  // eval --shard I/N: {"index": I, "count": N, "selected": problems in the
  // whole run's selection, "ids": this shard's problem ids in order}; null for
  // a whole run (eval/shard.h; kinfer merge joins the shards).
  nlohmann::json shard;
  nlohmann::json extra = nlohmann::json::object();  // any other header keys, kept on rewrite
};

struct Trace {
  std::string path;
  TraceFormat format = TraceFormat::Kinfer;
  TraceHeader header;          // Kinetics: attn = the metadata line (or {} after a summary)
  nlohmann::json first_line;   // Kinetics: the first line as read
  std::vector<TraceProblem> problems;

  bool has_token_counts() const;  // every sample has prompt_tokens and gen_tokens >= 0
  size_t sample_count() const;
};

// Reads either format (detected from the first line). Errors name the file,
// the line and the field.
Trace read_trace(const std::string& path);
Trace parse_trace(std::string_view text, const std::string& source);

nlohmann::json header_json(const TraceHeader& h);
nlohmann::json problem_json(const TraceProblem& p);
TraceHeader parse_header(const nlohmann::json& j, const std::string& where);
TraceProblem parse_problem(const nlohmann::json& j, const std::string& where);

// Writes a kinfer trace one line at a time, flushing each problem so a
// crashed run keeps what it finished.
class TraceWriter {
 public:
  TraceWriter(const std::string& path, const TraceHeader& header);
  void write(const TraceProblem& problem);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

void write_trace(const std::string& path, const Trace& trace);  // kinfer format

}  // namespace kf::eval

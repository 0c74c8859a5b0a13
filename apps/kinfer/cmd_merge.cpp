// `kinfer merge`: joins the traces of `kinfer eval --shard I/N` (one per
// shard, from any machines) into the trace one run would have written, after
// checking that they are the N shards of one run with no gap, overlap or
// duplicate (eval/shard.h). frontier, plan and regrade take the result.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "eval/shard.h"
#include "eval/trace.h"
#include "util/error.h"

namespace kf::cli {

int cmd_merge(int argc, char** argv) {
  CLI::App app{"Merge the shard traces of `kinfer eval --shard I/N` into one trace", "kinfer merge"};
  std::vector<std::string> inputs;
  std::string out;
  bool json = false, force = false;
  app.add_option("traces", inputs, "the shard traces (all N of them, any order)")->required();
  app.add_option("--out", out, "the merged trace to write")->required();
  app.add_flag("--force", force, "overwrite --out if it exists");
  app.add_flag("--json", json, "print one JSON object");
  CLI11_PARSE(app, argc, argv);
  for (const std::string& in : inputs)
    KF_CHECK(in != out, "--out {} is also an input: write the merged trace to a new file", out);
  std::error_code ec;
  KF_CHECK(force || !std::filesystem::exists(out, ec), "--out {} exists; pass --force to overwrite it", out);
  std::vector<eval::Trace> shards;
  for (const std::string& in : inputs) shards.push_back(eval::read_trace(in));
  std::vector<std::string> warnings;
  const eval::Trace merged = eval::merge_shards(shards, &warnings);
  eval::write_trace(out, merged);
  for (const std::string& w : warnings) std::fprintf(stderr, "kinfer merge: warning: %s\n", w.c_str());
  size_t samples = merged.sample_count();
  if (json) {
    const nlohmann::json j = {{"out", out}, {"shards", shards.size()}, {"problems", merged.problems.size()},
                              {"samples", samples}, {"warnings", warnings}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("merged %zu shards: %zu problems, %zu samples -> %s\n", shards.size(), merged.problems.size(), samples,
                out.c_str());
  }
  return 0;
}

}  // namespace kf::cli

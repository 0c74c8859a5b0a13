// The parts of `kinfer eval` that do not need the model: trace headers,
// resuming a killed run, appending finished problems, pricing a problem with
// the cost model, and the progress line.
#pragma once
#include <chrono>
#include <cstdint>
#include <fstream>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "eval/trace.h"

namespace kf::eval {

// `git rev-parse --short HEAD` of the source tree ("" when unavailable).
std::string source_git_revision();
// The current UTC time as "2026-11-23T10:00:00Z".
std::string utc_now();

// For --resume: reads the trace at `path` after dropping a partial last line
// (what a killed run leaves). nullopt when the file does not exist or is empty.
std::optional<Trace> load_for_resume(const std::string& path);

// Throws kf::Error naming the field when a trace being resumed was made with
// different settings (model, dataset, attention, sampling, prompt template,
// shard).
void check_resume_compatible(const TraceHeader& existing, const TraceHeader& wanted, const std::string& path);

// Appends problem lines to an existing trace, flushing each one.
class TraceAppender {
 public:
  explicit TraceAppender(const std::string& path);
  void write(const TraceProblem& problem);

 private:
  std::string path_;
  std::ofstream out_;
};

// The one-line progress display: problems done, tokens/s and ETA, redrawn on
// stderr at most 10 times a second when stderr is a terminal (or forced).
class EvalProgress {
 public:
  EvalProgress(int64_t total_problems, bool force, bool disable);
  ~EvalProgress();
  void update(int64_t problems_done, int64_t tokens_generated);
  void finish();

 private:
  int64_t total_ = 0;
  bool enabled_ = false, drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace kf::eval

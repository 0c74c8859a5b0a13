// Trace files -> frontier points: reads each trace (kinfer or Kinetics
// format), counts tokens where the trace has none (needs a tokenizer),
// resolves the model and attention policy, optionally truncates to long-CoT
// budgets with re-grading, and evaluates every sample count N.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cost/cost.h"
#include "cost/frontier.h"

namespace kf::cost {

struct SweepOptions {
  std::vector<std::string> traces;
  std::string model;              // preset or checkpoint for every trace ("" = from each trace)
  std::string tokenizer;          // tokenizer spec (GGUF, HF dir, tokenizer.json); "" = none
  std::optional<AttnSpec> attn;   // override the traces' attention policy
  std::vector<int64_t> budgets;   // long-CoT truncation budgets (empty: none)
  std::vector<int64_t> ns;        // sample counts (empty: 1, 2, 4, ... per trace)
  double intensity = 562.5;
  bool progress = false;          // force the progress bar
  bool quiet = false;             // no notes on stderr
};

// All points, frontier not marked. Throws kf::Error naming the trace on bad input.
std::vector<FrontierPoint> sweep_traces(const SweepOptions& options);

}  // namespace kf::cost

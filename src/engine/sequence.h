// Sequence: one sample being generated, as plain data. The scheduler moves
// it between waiting and running; the engine appends sampled tokens.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kf {

enum class StopReason : uint8_t { None, Eos, Length, Stop, Repetition, KvFull, Error };
inline const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::None: return "none";
    case StopReason::Eos: return "eos";
    case StopReason::Length: return "length";
    case StopReason::Stop: return "stop";
    case StopReason::Repetition: return "repetition";
    case StopReason::KvFull: return "kv_full";
    case StopReason::Error: return "error";
  }
  return "?";
}

struct Sequence {
  int64_t id = 0;
  int64_t request = 0;   // the engine request it belongs to
  int sample = 0;        // index among the request's samples (keys its Philox stream)
  int64_t arrival = 0;   // lower = older: admitted first, preempted last
  std::vector<int> prompt;
  std::vector<int> generated;
  int n_cached = 0;       // tokens [0, n_cached) have KV in the cache
  int fork_children = 0;  // Best-of-N: samples to fork from this one when its prompt is done
  bool running = false;
  bool finished = false;
  StopReason stop = StopReason::None;
  std::string error;      // why it failed (stop == Error)
  int preemptions = 0;

  int total() const { return static_cast<int>(prompt.size() + generated.size()); }
  int token_at(int pos) const {
    int np = static_cast<int>(prompt.size());
    return pos < np ? prompt[pos] : generated[pos - np];
  }
};

}  // namespace kf

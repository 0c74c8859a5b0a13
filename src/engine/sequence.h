// Sequence: one sample being generated, as plain data. The scheduler moves
// it between waiting and running; the engine appends sampled tokens.
#pragma once
#include <climits>
#include <cstdint>
#include <string>
#include <vector>

namespace kf {

enum class StopReason : uint8_t { None, Eos, Length, Stop, Repetition, KvFull, Error, Cancelled };
inline const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::None: return "none";
    case StopReason::Eos: return "eos";
    case StopReason::Length: return "length";
    case StopReason::Stop: return "stop";
    case StopReason::Repetition: return "repetition";
    case StopReason::KvFull: return "kv_full";
    case StopReason::Error: return "error";
    case StopReason::Cancelled: return "cancelled";
  }
  return "?";
}

struct Sequence {
  int64_t id = 0;
  int64_t request = 0;   // the engine request it belongs to
  int sample = 0;        // index among the request's samples (keys its Philox stream)
  int64_t arrival = 0;   // lower = older: admitted first, preempted last
  std::vector<int> prompt;
  std::vector<int> generated;  // tokens whose values the host knows
  // Tokens sampled by a step still in flight (0 or 1): they follow `generated`
  // and their values are only on the device until the step is collected.
  int pending = 0;
  int pending_row = -1;   // the sampled row (in its step) of the newest pending token
  int max_new = INT_MAX;  // generated tokens at most: no row is scheduled for a token past it
  int n_cached = 0;       // tokens [0, n_cached) have KV in the cache (or are being written)
  // Best-of-N: samples to fork from this one when its prompt is done; they
  // take the ids id+1 .. id+fork_children (reserved when the request arrives).
  int fork_children = 0;
  // Recompute replays generated tokens one decode row each, even where the
  // scheduler may replay in chunks: its decode rows follow a sparse policy.
  bool row_replay = false;
  // Its prompt rows' logits are wanted (echo logprobs): prefill chunks count
  // against the step's SchedulerConfig::max_echo_rows.
  bool echo = false;
  bool running = false;
  bool finished = false;
  StopReason stop = StopReason::None;
  std::string error;      // why it failed (stop == Error)
  int preemptions = 0;
  int prefix_cached = 0;  // prompt tokens its first admission took from the prefix cache

  int known() const { return static_cast<int>(prompt.size() + generated.size()); }
  int total() const { return known() + pending; }
  // The token at `pos` (< known()); positions of pending tokens have none on the host.
  int token_at(int pos) const {
    const int np = static_cast<int>(prompt.size());
    return pos < np ? prompt[pos] : generated[pos - np];
  }
  bool wants_more() const { return static_cast<int64_t>(generated.size()) + pending < max_new; }
};

}  // namespace kf

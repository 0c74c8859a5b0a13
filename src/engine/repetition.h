// The repetition-loop stop rule of the Kinetics runs: a sample whose last
// `block` tokens occur `min_repeats` times within its last `window` tokens is
// stopped (trace stop_reason "repetition").
#pragma once
#include <span>

namespace kf {

// "The last `block` tokens occur `min_repeats` times within the last `window`
// tokens" (the Kinetics runs' defaults).
struct RepetitionParams {
  bool enabled = true;
  int block = 64;
  int min_repeats = 15;
  int window = 1024;
};
bool is_repetition_loop(std::span<const int> tokens, const RepetitionParams& p);

}  // namespace kf

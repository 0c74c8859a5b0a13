#include "engine/repetition.h"

#include <algorithm>
#include <cstdint>

namespace kf {

bool is_repetition_loop(std::span<const int> tokens, const RepetitionParams& p) {
  if (!p.enabled || p.block <= 0 || p.min_repeats <= 1) return false;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < static_cast<int64_t>(p.block) * p.min_repeats) return false;
  const int64_t lo = std::max<int64_t>(0, n - p.window);
  const int* last = tokens.data() + n - p.block;
  int seen = 0;
  for (int64_t i = n - p.block; i >= lo; --i)
    if (std::equal(last, last + p.block, tokens.data() + i) && ++seen >= p.min_repeats) return true;
  return false;
}

}  // namespace kf

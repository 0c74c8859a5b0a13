// Philox4x32-10 counter-based RNG (Salmon et al., "Parallel random numbers:
// as easy as 1, 2, 3", SC'11). A draw is a pure function of (key, counter),
// so sampling keyed by (seed, request, sample index, step) gives every sample
// the same random numbers whatever else is in the batch or the order of work.
#pragma once
#include <array>
#include <cstdint>

namespace kf {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Ten rounds of Philox4x32 on counter `c` with key `k`.
inline PhiloxCounter philox4x32_10(PhiloxCounter c, PhiloxKey k) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k[0] += kW0;
      k[1] += kW1;
    }
    uint64_t p0 = static_cast<uint64_t>(kM0) * c[0];
    uint64_t p1 = static_cast<uint64_t>(kM1) * c[2];
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
  }
  return c;
}

// The four words drawn for (seed, request, sample, step): key = seed,
// counter = (step, sample, request low, request high).
inline PhiloxCounter philox_draw(uint64_t seed, uint64_t request, uint32_t sample, uint32_t step) {
  PhiloxKey key = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  PhiloxCounter ctr = {step, sample, static_cast<uint32_t>(request), static_cast<uint32_t>(request >> 32)};
  return philox4x32_10(ctr, key);
}

// A double uniform in [0, 1) with 53 random bits from the first two words.
inline double philox_uniform(uint64_t seed, uint64_t request, uint32_t sample, uint32_t step) {
  PhiloxCounter r = philox_draw(seed, request, sample, step);
  uint64_t bits = (static_cast<uint64_t>(r[0] >> 5) << 26) | (r[1] >> 6);
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);  // 2^-53
}

}  // namespace kf

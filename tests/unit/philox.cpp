// Philox4x32-10 against the Random123 known-answer vectors (kat_vectors), and
// the keyed draws' determinism and independence from batch composition.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "util/philox.h"

using namespace kf;

TEST(Philox, Random123KnownAnswers) {
  struct Kat {
    PhiloxCounter ctr;
    PhiloxKey key;
    PhiloxCounter want;
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) EXPECT_EQ(philox4x32_10(k.ctr, k.key), k.want);
}

TEST(Philox, KeyedDrawsAreDeterministicAndDistinct) {
  // Same key -> same value regardless of what was drawn before (batch invariance).
  double a = philox_uniform(42, 3, 5, 100);
  for (int i = 0; i < 1000; ++i) philox_uniform(42, i, i % 7, i);
  EXPECT_EQ(a, philox_uniform(42, 3, 5, 100));
  // Changing any coordinate changes the draw.
  std::set<double> seen = {a, philox_uniform(43, 3, 5, 100), philox_uniform(42, 4, 5, 100),
                           philox_uniform(42, 3, 6, 100), philox_uniform(42, 3, 5, 101),
                           philox_uniform(42, 3ull << 32, 5, 100)};
  EXPECT_EQ(seen.size(), 6u);
}

TEST(Philox, UniformsLookUniform) {
  const int n = 200000, bins = 20;
  int count[bins] = {};
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    double u = philox_uniform(7, 0, i % 16, i / 16);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    ++count[static_cast<int>(u * bins)];
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  double chi2 = 0, e = static_cast<double>(n) / bins;
  for (int b = 0; b < bins; ++b) chi2 += (count[b] - e) * (count[b] - e) / e;
  EXPECT_LT(chi2, 50.0);  // 19 dof: p < 1e-4 beyond this
}

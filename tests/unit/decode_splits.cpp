// The dense decode kernel's split count (backend/cuda/decode_splits.h): query
// groups below 8 keep the original rule, groups of 8 take the H200-measured
// picks, and every answer is a valid split count.
#include "backend/cuda/decode_splits.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr int kWarps = 4;  // attention.cu's warps per block

// The rule before group-aware splits, restated: ~8 waves, >= 4 tiles per warp.
int original_rule(int64_t pairs, int tiles, int num_sms) {
  pairs = std::max<int64_t>(1, pairs);
  const int64_t want = (int64_t{num_sms} * 32 + pairs - 1) / pairs;
  const int64_t most = std::max(1, tiles / (kWarps * 4));
  return static_cast<int>(std::clamp<int64_t>(std::min(want, most), 1, 128));
}

TEST(DecodeSplits, GroupsBelowEightKeepTheOriginalRule) {
  for (int group = 1; group < 8; ++group)
    for (int sms : {16, 78, 132})
      for (int64_t pairs : {1, 3, 8, 64, 256, 1000, 8192})
        for (int tiles : {1, 4, 15, 64, 256, 1024, 2048, 4096})
          EXPECT_EQ(kf::cuda::dense_decode_splits(pairs, tiles, group, sms, kWarps), original_rule(pairs, tiles, sms))
              << "group " << group << " sms " << sms << " pairs " << pairs << " tiles " << tiles;
}

TEST(DecodeSplits, GroupsOfEightTakeTheMeasuredPicks) {
  // H200 (132 SMs), Hq 64 / Hkv 8, 16K context at page 16 = 1024 tiles; pairs = batch * 8.
  EXPECT_EQ(kf::cuda::dense_decode_splits(16 * 8, 1024, 8, 132, kWarps), 6);  // was 33
  EXPECT_EQ(kf::cuda::dense_decode_splits(8 * 8, 1024, 8, 132, kWarps), 6);   // was 64
  EXPECT_EQ(kf::cuda::dense_decode_splits(4 * 8, 1024, 8, 132, kWarps), 9);   // was 64
  EXPECT_EQ(kf::cuda::dense_decode_splits(64 * 8, 1024, 8, 132, kWarps), 6);  // was 9
  EXPECT_EQ(original_rule(16 * 8, 1024, 132), 33);
}

TEST(DecodeSplits, AlwaysAValidCountWithWorkForEveryWarp) {
  for (int group : {1, 2, 4, 8, 16})
    for (int64_t pairs : {0, 1, 7, 128, 100000})
      for (int tiles : {0, 1, 3, 4, 17, 160, 1024, 8192}) {
        const int s = kf::cuda::dense_decode_splits(pairs, tiles, group, 132, kWarps);
        EXPECT_GE(s, 1);
        EXPECT_LE(s, 128);
        if (group >= 8) {
          EXPECT_LE(s, std::max(1, tiles / kWarps)) << "pairs " << pairs << " tiles " << tiles;
        }
      }
}

}  // namespace

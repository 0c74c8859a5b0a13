// The decode attention kernels' launch rules (backend/cuda/decode_splits.h):
// the dense split count (query groups below 8 keep the original rule, groups
// of 8 take the H200-measured picks, every answer is a valid split count),
// where the dense kernel takes its bulk-copy ring, and how many known pages
// the fused sparse kernel stages.
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
  EXPECT_EQ(kf::cuda::dense_decode_splits(4 * 8, 1024, 8, 132, kWarps), 12);  // was 64, then 9 at 2 blocks an SM
  EXPECT_EQ(kf::cuda::dense_decode_splits(2 * 8, 1024, 8, 132, kWarps), 24);  // 384 blocks: one round of 396
  EXPECT_EQ(kf::cuda::dense_decode_splits(1 * 8, 1024, 8, 132, kWarps), 33);  // 49 (5 tiles a warp) was slower
  EXPECT_EQ(kf::cuda::dense_decode_splits(32 * 8, 2048, 8, 132, kWarps), 12);
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

// The shapes measured on the H200 (16-slot tiles; tiles = pages of the
// longest row): the ring where a warp has 8+ tiles, not at 4.
TEST(DecodeSplits, BulkTilesWhereAWarpHasEightOrMore) {
  using kf::cuda::dense_bulk_tiles;
  using kf::cuda::dense_decode_splits;
  auto bulk = [](int batch, int context, int group) {
    const int tiles = context / 16, pairs = batch * 8;
    return dense_bulk_tiles(tiles, dense_decode_splits(pairs, tiles, group, 132, kWarps), kWarps);
  };
  EXPECT_TRUE(bulk(32, 16384, 2));   // 17 splits, 15 tiles a warp: 1.8% faster
  EXPECT_TRUE(bulk(64, 16384, 2));   // 9 splits, 29
  EXPECT_TRUE(bulk(16, 16384, 8));   // Qwen3-32B: 6 splits, 43
  EXPECT_TRUE(bulk(128, 4096, 4));   // Qwen3-8B B128x4K: 5 splits, 13: 1.9% faster
  EXPECT_TRUE(bulk(64, 4096, 2));    // 9 splits, 8: 1.9% faster
  EXPECT_FALSE(bulk(8, 4096, 2));    // 16 splits, 4: 6% slower with the ring
  EXPECT_FALSE(bulk(1, 4096, 2));    // 16 splits, 4
  EXPECT_FALSE(dense_bulk_tiles(0, 1, kWarps));
  EXPECT_TRUE(dense_bulk_tiles(29, 1, kWarps));   // warps of 8, 7, 7, 7 tiles
  EXPECT_FALSE(dense_bulk_tiles(28, 1, kWarps));  // 7 each
}

// Page 0 and the local window, as far as 48 KB and 16 slots go (none where
// one page's K and V alone are larger).
TEST(DecodeSplits, StagedKnownPagesFitTheirSpace) {
  using kf::cuda::sparse_stage_pages;
  EXPECT_EQ(sparse_stage_pages(4, 16, 128), 5);   // the benchmark shape: 40 KB
  EXPECT_EQ(sparse_stage_pages(12, 16, 128), 6);  // 8 KB a slot: 6 fit
  EXPECT_EQ(sparse_stage_pages(12, 32, 128), 3);  // 16 KB a slot
  EXPECT_EQ(sparse_stage_pages(1, 16, 64), 2);
  EXPECT_EQ(sparse_stage_pages(40, 16, 64), 12);  // 4 KB a slot
  EXPECT_EQ(sparse_stage_pages(40, 8, 64), 16);   // the slot limit
  EXPECT_EQ(sparse_stage_pages(0, 16, 128), 1);   // page 0 alone
  for (int local : {0, 1, 4, 100})
    for (int P : {8, 16, 32, 64})
      for (int D : {64, 128, 256}) {
        const int n = sparse_stage_pages(local, P, D);
        const int64_t slot = int64_t{4} * P * D;
        EXPECT_EQ(n >= 1, slot <= kf::cuda::kStageBytes) << "P " << P << " D " << D;
        EXPECT_LE(n, std::min(1 + local, kf::cuda::kMaxStaged));
        EXPECT_LE(n * slot, kf::cuda::kStageBytes);
      }
}

}  // namespace

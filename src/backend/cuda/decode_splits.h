// The decode attention kernels' launch rules, plain C++ so that the CPU unit
// tests pin them (tests/unit/decode_splits.cpp) in builds without CUDA: how
// many blocks ("splits") the dense decode kernel gives one (slot, KV head)
// pair, whether its warps take the bulk-copy ring, and how many known pages
// the fused sparse kernel stages in shared memory.
#pragma once
#include <algorithm>
#include <cstdint>

namespace kf::cuda {

// pairs: (slot, KV head) pairs of the launch; tiles: 16-token tiles of the
// longest sequence; group: query heads per KV head; warps: warps per block.
// Enough blocks for ~8 waves (short tail), with at least 4 tiles per warp.
// For query groups of 8 and more, at least 5*G tiles per warp (a block's
// fixed work -- its group's queries on tensor cores, the warps' merge, G
// partials -- grows with G), but ~2 blocks an SM, and where that keeps
// the bulk ring's 8 tiles a warp, as many blocks as fill one round of
// kDenseBlocksPerSm an SM without spilling into a second. Measured on the
// H200 at G 8 (Hq 64 / Hkv 8, 16K, ms per step; docs/cuda.md): B16 33
// splits 0.292, 6 0.261; B8 9 0.151, 6 0.135; Qwen3-32B B16x16K step 35.36
// -> 33.84 ms; with 3 blocks an SM (twenty-first session) B4 9 splits
// 0.081, 12 (384 blocks) 0.075; B2 17 0.049, 24 0.046; B1 33 0.032, 49 (5
// tiles a warp) 0.035. Smaller groups keep the rule they were tuned with.
constexpr int kDenseBlocksPerSm = 3;       // the bulk-ring kernel's blocks an SM at every group (attention.cu)
constexpr int kBulkMinTilesPerWarp = 8;  // see dense_bulk_tiles
inline int dense_decode_splits(int64_t pairs, int tiles, int group, int num_sms, int warps) {
  pairs = std::max<int64_t>(1, pairs);
  const int64_t want = (static_cast<int64_t>(num_sms) * 32 + pairs - 1) / pairs;
  const int per_warp = group >= 8 ? 5 * group : 4;
  const int64_t most = std::max(1, tiles / (warps * per_warp));
  const int64_t two_an_sm = (static_cast<int64_t>(num_sms) * 2 + pairs - 1) / pairs;
  const int64_t one_round = std::min<int64_t>(static_cast<int64_t>(num_sms) * kDenseBlocksPerSm / pairs,
                                              tiles / (warps * kBulkMinTilesPerWarp));
  const int64_t least = group >= 8 ? std::min<int64_t>(std::max(two_an_sm, one_round), std::max(1, tiles / warps)) : 1;
  return static_cast<int>(std::clamp<int64_t>(std::max(std::min(want, most), least), 1, 128));
}

// Whether the dense decode kernel's warps stream their tiles through the
// bulk-copy ring (decode_tiles.cuh, visit_tiles_bulk): where each warp of a
// split has at least kBulkMinTilesPerWarp of the longest row's tiles. A ring
// for a few tiles only adds its set-up and cuts the blocks an SM holds
// (H200, 3-tile ring: B8x4K 6% slower at 4 tiles a warp; 1.5-2% faster from 8 up).
inline bool dense_bulk_tiles(int tiles, int splits, int warps) {
  const int64_t per_warp = (static_cast<int64_t>(tiles) + static_cast<int64_t>(splits) * warps - 1) /
                           (static_cast<int64_t>(splits) * warps);
  return per_warp >= kBulkMinTilesPerWarp;
}

// Page slots (K and V of one page of one KV head each) of the fused sparse
// kernel's staged known pages: page 0 and the local ones, within
// kStageBytes of shared memory (2 blocks of it an SM beside their static
// ~20-45 KB) and kMaxStaged slots (one bulk copy per K or V page by a lane
// of warp 0). A window larger than that reads the rest from the pool.
constexpr int64_t kStageBytes = 48 * 1024;
constexpr int kMaxStaged = 16;
inline int64_t stage_slot_bytes(int page_size, int head_dim) {  // K and V of one page, bf16
  return 2 * int64_t{2} * page_size * head_dim;
}
inline int sparse_stage_pages(int local_pages, int page_size, int head_dim) {
  const int64_t fit = kStageBytes / stage_slot_bytes(page_size, head_dim);
  return static_cast<int>(std::min<int64_t>({int64_t{1} + std::max(0, local_pages), fit, int64_t{kMaxStaged}}));
}

}  // namespace kf::cuda

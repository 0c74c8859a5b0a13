// How many blocks ("splits") the dense decode kernel gives one (slot, KV
// head) pair: plain C++, so the CPU unit tests pin the rule
// (tests/unit/decode_splits.cpp) in builds without CUDA.
#pragma once
#include <algorithm>
#include <cstdint>

namespace kf::cuda {

// pairs: (slot, KV head) pairs of the launch; tiles: 16-token tiles of the
// longest sequence; group: query heads per KV head; warps: warps per block.
// Enough blocks for ~8 waves (short tail), with at least 4 tiles per warp.
// For query groups of 8 and more, at least 5*G tiles per warp (a block's
// fixed work -- its group's queries on tensor cores, the warps' merge, G
// partials -- grows with G) but ~2 blocks per SM. Measured on the H200 at
// G 8 (Hq 64 / Hkv 8, 16K, ms per step; docs/cuda.md): B16 33 splits 0.292,
// 6 0.261; B8 9 0.151, 6 0.135; B4 17 0.087, 9 0.077; Qwen3-32B B16x16K step
// 35.36 -> 33.84 ms. Smaller groups keep the rule they were tuned with.
inline int dense_decode_splits(int64_t pairs, int tiles, int group, int num_sms, int warps) {
  pairs = std::max<int64_t>(1, pairs);
  const int64_t want = (static_cast<int64_t>(num_sms) * 32 + pairs - 1) / pairs;
  const int per_warp = group >= 8 ? 5 * group : 4;
  const int64_t most = std::max(1, tiles / (warps * per_warp));
  const int64_t least = group >= 8 ? std::min<int64_t>((static_cast<int64_t>(num_sms) * 2 + pairs - 1) / pairs,
                                                       std::max(1, tiles / warps))
                                   : 1;
  return static_cast<int>(std::clamp<int64_t>(std::max(std::min(want, most), least), 1, 128));
}

}  // namespace kf::cuda

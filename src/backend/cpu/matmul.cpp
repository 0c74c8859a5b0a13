#include "backend/cpu/matmul.h"

#include <algorithm>

#include "backend/cpu/packed_weights.h"
#include "util/error.h"

namespace kf::cpu {
namespace {

// Output tiles: up to kRowBlock rows of x by kColBlock rows of w. 24 columns
// is a whole number of every kernel's column tile (2, 3, 4, 8); 32 rows of x
// and 24 rows of w stay in L2 while a tile runs, for every k in use.
constexpr int64_t kRowBlock = 32;
constexpr int64_t kColBlock = 24;
// Below this many multiply-adds a matmul runs on the calling thread.
constexpr int64_t kMinParallelMacs = 1 << 16;

template <typename T>
T* grow(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
  return v.data();
}

}  // namespace

ActRows Matmul::quantize(const float* x, int64_t n, int64_t k, ActFormat f, bool with_pieces) {
  const int64_t nscale = act_scale_floats(f, k), nsums = act_sum_count(f, k);
  ActRows a;
  a.k = k;
  a.q = grow(q_, n * k);
  a.scale = grow(scale_, n * nscale);
  a.sums = grow(sums_, n * nsums);
  if (with_pieces) a.pieces = grow(pieces_, n * 4 * k);
  const QuantizeFn quantize_row = kernels_.quantize(f);
  const SpreadFn spread = kernels_.spread;
  int8_t *q = q_.data(), *pieces = with_pieces ? pieces_.data() : nullptr;
  float* scale = scale_.data();
  int16_t* sums = sums_.data();
  pool_.parallel_for(
      n,
      [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          quantize_row(x + r * k, k, q + r * k, scale + r * nscale, sums + r * nsums);
          if (pieces) spread(q + r * k, k, pieces + r * 4 * k);
        }
      },
      std::max<int64_t>(1, 16384 / k));
  return a;
}

void Matmul::run(const Tensor& x, const Tensor& w, const float* bias, const Tensor& y) {
  const int64_t out = w.dim(0), k = w.dim(1), n = x.numel() / k;
  const TileFn tile = kernels_.tile(w.dtype);
  KF_CHECK(tile, "cpu matmul: no kernel for {} weights", dtype_name(w.dtype));
  const ActFormat f = act_format(w.dtype);
  KF_CHECK(k % dtype_block(w.dtype) == 0, "cpu matmul: {} weights need rows of whole {}-element blocks, got {}",
           dtype_name(w.dtype), dtype_block(w.dtype), k);
  ActRows a;
  if (f == ActFormat::F32) {
    a.k = k;
    a.f32 = x.ptr<float>();
  } else {
    a = quantize(x.ptr<float>(), n, k, f, is_packed(w.dtype));
  }
  const WeightRows wr{static_cast<const uint8_t*>(w.data), dtype_bytes(w.dtype, k), k};
  float* yp = y.ptr<float>();

  const int64_t row_block = n <= 2 * kRowBlock ? n : kRowBlock;
  const int64_t row_blocks = (n + row_block - 1) / row_block, col_blocks = (out + kColBlock - 1) / kColBlock;
  const int64_t tiles = row_blocks * col_blocks;
  auto run_tiles = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {  // consecutive tiles share their columns of w
      const int64_t r0 = (t % row_blocks) * row_block, c0 = (t / row_blocks) * kColBlock;
      tile(a, r0, std::min(n, r0 + row_block), wr, c0, std::min(out, c0 + kColBlock), bias, yp, out);
    }
  };
  if (n * out * k < kMinParallelMacs) {
    run_tiles(0, tiles);
    return;
  }
  // Chunks small enough that a thread the OS delays leaves its share to the others.
  const int64_t grain = std::max<int64_t>(1, tiles / (8 * pool_.size()));
  pool_.parallel_for_dynamic(tiles, run_tiles, grain);
}

}  // namespace kf::cpu

#include "backend/cpu/packed_weights.h"

#include <cstring>

#include "backend/cpu/quant_blocks.h"
#include "util/error.h"

namespace kf::cpu {
namespace {

// Where the parts of one plain block sit, and how many 4-byte pieces of
// quantised values it has.
struct BlockParts {
  int bytes;        // plain block size
  int scale_bytes;  // 2 (d) or 4 (d, m) at the start of the block
  int pieces;       // 4-byte pieces of quantised values after the scales
};

BlockParts parts(DType plain) {
  switch (plain) {
    case DType::Q8_0: return {kQ8_0Bytes, 2, 8};
    case DType::Q4_0: return {kQ4_0Bytes, 2, 4};
    case DType::Q4_1: return {kQ4_1Bytes, 4, 4};
    default: fail("packed weights: no interleaved layout for {}", dtype_name(plain));
  }
}

// Calls fn(plain_offset, packed_offset, bytes) for every piece of block b of
// row r (row r of group r / 4 is lane r % 4), offsets within the matrix.
template <typename Fn>
void for_each_piece(DType plain, int64_t cols, int64_t r, int64_t b, const Fn& fn) {
  const BlockParts p = parts(plain);
  const int64_t row_bytes = static_cast<int64_t>(dtype_bytes(plain, cols));
  const int64_t group = r / 4, lane = r % 4;
  const int64_t plain_block = r * row_bytes + b * p.bytes;
  const int64_t packed_block = group * 4 * row_bytes + b * 4 * p.bytes;
  // Scales: d of lane j at 2j; Q4_1's m after the four d.
  fn(plain_block, packed_block + 2 * lane, 2);
  if (p.scale_bytes == 4) fn(plain_block + 2, packed_block + 8 + 2 * lane, 2);
  const int64_t q = packed_block + 4 * p.scale_bytes;
  for (int k = 0; k < p.pieces; ++k) fn(plain_block + p.scale_bytes + 4 * k, q + 16 * k + 4 * lane, 4);
}

}  // namespace

DType packed_dtype(DType plain) {
  switch (plain) {
    case DType::Q8_0: return DType::Q8_0x4;
    case DType::Q4_0: return DType::Q4_0x4;
    case DType::Q4_1: return DType::Q4_1x4;
    default: return plain;
  }
}

DType plain_dtype(DType t) {
  switch (t) {
    case DType::Q8_0x4: return DType::Q8_0;
    case DType::Q4_0x4: return DType::Q4_0;
    case DType::Q4_1x4: return DType::Q4_1;
    default: return t;
  }
}

bool is_packed(DType t) { return plain_dtype(t) != t; }

bool can_pack(DType t, int64_t rows, int64_t cols, const void* data) {
  if (packed_dtype(t) == t || rows % 4 != 0 || cols % 32 != 0) return false;
  if (t != DType::Q8_0) return true;
  const auto* p = static_cast<const uint8_t*>(data);
  for (int64_t blk = 0; blk < rows * cols / 32; ++blk)
    for (int j = 0; j < 32; ++j)
      if (p[blk * kQ8_0Bytes + 2 + j] == 0x80) return false;  // -128
  return true;
}

void pack_rows(DType plain, int64_t rows, int64_t cols, const void* src, void* dst) {
  KF_CHECK(rows % 4 == 0 && cols % 32 == 0, "packed weights: [{}, {}] is not whole groups of 4 rows and blocks of 32",
           rows, cols);
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < cols / 32; ++b)
      for_each_piece(plain, cols, r, b, [&](int64_t from, int64_t to, int n) { std::memcpy(d + to, s + from, n); });
}

void unpack_row(DType packed, int64_t cols, const void* src, int64_t row, void* dst) {
  const DType plain = plain_dtype(packed);
  const int64_t row_bytes = static_cast<int64_t>(dtype_bytes(plain, cols));
  const auto* s = static_cast<const uint8_t*>(src);
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < cols / 32; ++b)  // plain offsets are within the matrix: row `row` starts at row * row_bytes
    for_each_piece(plain, cols, row, b,
                   [&](int64_t to, int64_t from, int n) { std::memcpy(d + (to - row * row_bytes), s + from, n); });
}

}  // namespace kf::cpu

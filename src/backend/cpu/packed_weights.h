// The CPU's interleaved matmul layouts of the 32-element GGUF block formats:
// Q8_0x4, Q4_0x4 and Q4_1x4 hold exactly the blocks of Q8_0, Q4_0 and Q4_1
// (same scales, same quantised values, same bytes), with every four rows
// (a group) interleaved so that one 16-byte load brings 4 consecutive values
// of each of the 4 rows. A kernel then multiplies four rows by one broadcast
// 4-value piece of x with a single maddubs, and the four sums come out in
// four lanes: no horizontal reduction per row.
//
// Group g (rows 4g .. 4g+3) takes 4 * row_bytes at offset 4g * row_bytes;
// inside it, block b (elements 32b .. 32b+31 of each row) takes 4 blocks'
// bytes at offset 4b * block_bytes:
//   Q4_0x4: d[4] (f16)          | q[4][16]   (72 bytes)
//   Q4_1x4: d[4] (f16), m[4]    | q[4][16]   (80 bytes)
//   Q8_0x4: d[4] (f16)          | q[8][16]   (136 bytes)
// where piece k of q is the k-th 4 bytes of each row's qs in row order:
// row 0 bytes 4k..4k+3, row 1 bytes 4k..4k+3, row 2, row 3. (For the 4-bit
// formats byte j holds element j in its low nibble and element j + 16 in its
// high nibble, as in GGUF.)
#pragma once
#include <cstdint>

#include "util/tensor.h"

namespace kf::cpu {

// The interleaved dtype of a plain block dtype (Q8_0 -> Q8_0x4 ..), or the
// dtype itself when it has none. plain_dtype() is the inverse.
DType packed_dtype(DType plain);
DType plain_dtype(DType t);
bool is_packed(DType t);

// Whether a [rows, cols] matrix of dtype t at data can be packed: a packed
// dtype exists, rows is a multiple of 4, and (Q8_0) no value is -128, which
// the packed kernel's sign trick cannot represent.
bool can_pack(DType t, int64_t rows, int64_t cols, const void* data);
// [rows, cols] plain blocks at src -> the packed layout at dst (same size).
void pack_rows(DType plain, int64_t rows, int64_t cols, const void* src, void* dst);
// Row `row` of a packed [rows, cols] matrix -> its plain blocks at dst.
void unpack_row(DType packed, int64_t cols, const void* src, int64_t row, void* dst);

}  // namespace kf::cpu

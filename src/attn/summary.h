// How a KV pool stores its page key summaries (DESIGN.md: the mean of a
// full page's post-RoPE keys, per KV head), shared by the CPU reference and
// the CUDA kernels (host and device code).
//
// int8 summaries (`--summary-dtype int8`): each (page, KV head) summary
// vector is stored as signed 8-bit codes, one byte per dim, with one float
// scale: value[d] ~ code[d] * scale, scale = max_d |mean[d]| / 127, code =
// mean / scale rounded to the nearest integer (ties to even). Half the bytes
// of bf16 summaries, which the block top-k kernel reads for every candidate
// page of every step. Against them q̄ is scored in 16 bits the same way
// (qscale = max_d |q̄[d]| / 32767, q16 = q̄ / qscale rounded): a page's score
// is float(sum_d q16[d] * code[d]) * qscale * scale, the sum exact in int32
// (|sum| <= 256 * 32767 * 127 < 2^31), so the CPU and the GPU (dp2a, two
// 16x8-bit products an instruction) give the same bits and pick the same pages.
//
// Why int8 and not fp8 e4m3 (tried first, commit ef8cc0c): a page summary
// is the mean of P post-RoPE keys, so its fast-rotating dims average out and
// a few slow ones carry most of the score. e4m3 errs by up to 1/16 of each
// value, most on the large dims that matter; int8 errs by at most
// max|mean| / 254 on every dim, several times less in the score.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KF_HOST_DEVICE __host__ __device__
#else
#define KF_HOST_DEVICE
#endif

namespace kf::attn {

enum class SummaryKind : int { F32 = 0, BF16 = 1, I8 = 2 };

KF_HOST_DEVICE inline int summary_elem_bytes(SummaryKind k) {
  return k == SummaryKind::F32 ? 4 : k == SummaryKind::BF16 ? 2 : 1;
}
// Bytes one (page, KV head) summary takes, the int8 scale included.
KF_HOST_DEVICE inline int64_t summary_bytes(SummaryKind k, int head_dim) {
  return k == SummaryKind::I8 ? head_dim + 4 : static_cast<int64_t>(head_dim) * summary_elem_bytes(k);
}
// The kind of a pool whose K/V elements take elem_bytes, unless int8 is asked for.
KF_HOST_DEVICE inline SummaryKind summary_kind_for(int elem_bytes, bool i8) {
  return i8 ? SummaryKind::I8 : elem_bytes == 2 ? SummaryKind::BF16 : SummaryKind::F32;
}

// Symmetric codes: the scale that maps amax to max_code (IEEE division on
// host and device alike; 1 when that is 0, inf or NaN), and x / scale
// rounded to the nearest integer (ties to even) within +-max_code (NaN -> 0).
KF_HOST_DEVICE inline float symmetric_scale(float amax, float max_code) {
  const float s = amax / max_code;
  return s > 0.f && s <= 3.0e38f ? s : 1.f;
}
KF_HOST_DEVICE inline float symmetric_code(float x, float scale, float max_code) {
  const float r = rintf(x / scale);
  if (r != r) return 0.f;
  return r > max_code ? max_code : r < -max_code ? -max_code : r;
}

// Summaries in int8 (max 127), q̄ in 16 bits (max 32767).
KF_HOST_DEVICE inline float i8_summary_scale(float amax) { return symmetric_scale(amax, 127.f); }
KF_HOST_DEVICE inline int8_t i8_encode(float x, float scale) {
  return static_cast<int8_t>(symmetric_code(x, scale, 127.f));
}
KF_HOST_DEVICE inline float i16_query_scale(float qmax) { return symmetric_scale(qmax, 32767.f); }
KF_HOST_DEVICE inline int16_t i16_encode(float x, float scale) {
  return static_cast<int16_t>(symmetric_code(x, scale, 32767.f));
}
// A page's score from its exact integer dot product (evaluated left to right).
KF_HOST_DEVICE inline float i8_page_score(int32_t dot, float qscale, float scale) {
  return static_cast<float>(dot) * qscale * scale;
}

}  // namespace kf::attn

#include "backend/backend.h"

namespace kf {

const char* attn_kind_name(AttnKind k) {
  switch (k) {
    case AttnKind::Dense: return "dense";
    case AttnKind::Local: return "local";
    case AttnKind::BlockTopK: return "blocktopk";
    case AttnKind::TopK: return "topk";
  }
  return "?";
}

AttnKind parse_attn_kind(const std::string& s) {
  if (s == "dense") return AttnKind::Dense;
  if (s == "local") return AttnKind::Local;
  if (s == "blocktopk") return AttnKind::BlockTopK;
  if (s == "topk") return AttnKind::TopK;
  fail("unknown attention policy '{}' (expected dense, local, blocktopk or topk)", s);
}

void download_f32(Backend& be, const Tensor& src, float* dst, std::vector<uint16_t>& staging) {
  if (src.dtype == DType::F32) {
    be.download(dst, src);
    return;
  }
  KF_CHECK(src.dtype == DType::BF16, "download_f32: {} tensor, expected F32 or BF16", dtype_name(src.dtype));
  const size_t n = static_cast<size_t>(src.numel());
  if (staging.size() < n) staging.resize(n);
  be.download(staging.data(), src);
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(staging[i]);
}

}  // namespace kf

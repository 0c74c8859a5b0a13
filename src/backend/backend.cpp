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

}  // namespace kf

#include "backend/backend.h"

namespace kf {

namespace {
// The CPU's "graph": the ops themselves, run again on replay.
struct CallGraph final : Graph {
  std::function<void()> ops;
};
}  // namespace

std::unique_ptr<Graph> Backend::record(std::function<void()> ops) {
  ops();
  auto g = std::make_unique<CallGraph>();
  g->ops = std::move(ops);
  return g;
}

void Backend::replay(Graph& graph) {
  auto* g = dynamic_cast<CallGraph*>(&graph);
  KF_CHECK(g != nullptr, "{}: replay of a graph recorded by another backend", name());
  g->ops();
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

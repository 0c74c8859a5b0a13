#include "backend/cuda/op_profile.h"

#include <fmt/format.h>

#include <map>
#include <utility>

#include "backend/cuda/kernels.h"

namespace kf::cuda {

int OpProfile::begin(std::string name, cudaStream_t st) {
  Span sp{std::move(name)};
  KF_CUDA(cudaEventCreate(&sp.a));
  KF_CUDA(cudaEventCreate(&sp.b));
  KF_CUDA(cudaEventRecord(sp.a, st));
  spans_.push_back(std::move(sp));
  return static_cast<int>(spans_.size()) - 1;
}

void OpProfile::end(int span, cudaStream_t st) { cudaEventRecord(spans_[span].b, st); }

std::string OpProfile::json(cudaStream_t st) {
  KF_CUDA(cudaStreamSynchronize(st));
  std::map<std::string, std::pair<double, int>> sum;
  for (Span& sp : spans_) {
    float ms = 0.f;
    KF_CUDA(cudaEventElapsedTime(&ms, sp.a, sp.b));
    sum[sp.name].first += ms;
    sum[sp.name].second += 1;
  }
  clear();
  std::string out = "{";
  for (const auto& [name, v] : sum)
    out += fmt::format("{}\"{}\": {{\"ms\": {:.4f}, \"calls\": {}}}", out.size() > 1 ? ", " : "", name, v.first,
                       v.second);
  return out + "}";
}

void OpProfile::clear() {
  for (Span& sp : spans_) {
    if (sp.a) cudaEventDestroy(sp.a);
    if (sp.b) cudaEventDestroy(sp.b);
  }
  spans_.clear();
}

}  // namespace kf::cuda

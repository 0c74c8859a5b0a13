// Op timing for `kinfer bench decode --profile` (CudaBackend): a pair of CUDA
// events around every op issued while profiling is on (outside graph
// recording), summed per op name into JSON. Owns its events (RAII).
#pragma once
#include <cuda_runtime.h>

#include <string>
#include <vector>

namespace kf::cuda {

class OpProfile {
 public:
  OpProfile() = default;
  ~OpProfile() { clear(); }
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  bool on = false;
  // Records the start of span `name` on st; returns its index for end().
  int begin(std::string name, cudaStream_t st);
  void end(int span, cudaStream_t st);
  // Waits for st, then {"op shapes": {"ms": total, "calls": n}, ...}; forgets the spans.
  std::string json(cudaStream_t st);

 private:
  struct Span {
    std::string name;
    cudaEvent_t a = nullptr, b = nullptr;
  };
  void clear();
  std::vector<Span> spans_;
};

}  // namespace kf::cuda

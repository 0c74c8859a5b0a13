// Small CUDA helpers for benchmarks and kernel tests (not used by the model).
// Only available in CUDA builds (KINFER_HAVE_CUDA); plain C++ declarations.
#pragma once
#include <cstdint>
#include <string>

#include "backend/backend.h"

namespace kf {

// Fills a CUDA BF16 tensor with uniform random values in [lo, hi) (synchronous).
void cuda_fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi);
// Per-op timing (CUDA events around each op, outside graph recording), and
// its report: {"op name": {"ms": total, "calls": n}, ...}; the report resets it.
void cuda_profile(Backend& b, bool on);
std::string cuda_profile_json(Backend& b);
// The cudaStream_t of a CUDA backend (as void*); throws for other backends.
void* stream_of(Backend& b);
// Mean milliseconds of one device-to-device copy src -> dst over `iters` copies.
double cuda_copy_ms(const Tensor& dst, const Tensor& src, int iters);
std::string cuda_device_name(int device = 0);
// Free memory on the current device in bytes (cudaMemGetInfo).
int64_t cuda_free_bytes();

// CUDA events on a backend's stream: start(), work, stop_ms().
class CudaTimer {
 public:
  CudaTimer();
  ~CudaTimer();
  CudaTimer(const CudaTimer&) = delete;
  CudaTimer& operator=(const CudaTimer&) = delete;
  void start(Backend& b);
  double stop_ms(Backend& b);

 private:
  void* start_ = nullptr;
  void* stop_ = nullptr;
};

}  // namespace kf

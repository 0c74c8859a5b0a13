// The helpers of cuda_util.h that need no CudaBackend internals (benchmarks,
// kernel tests). cuda_profile and stream_of live with the backend.
#include "backend/cuda/cuda_util.h"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include "backend/cuda/kernels.h"

namespace kf {

void cuda_fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi) {
  KF_CHECK(t.device == Device::CUDA && t.dtype == DType::BF16, "cuda_fill_uniform: expected a CUDA BF16 tensor");
  cuda::fill_uniform(static_cast<cuda::bf16_t*>(t.data), t.numel(), seed, lo, hi, nullptr);
  KF_CUDA(cudaDeviceSynchronize());
}

CudaTimer::CudaTimer() {
  KF_CUDA(cudaEventCreate(reinterpret_cast<cudaEvent_t*>(&start_)));
  KF_CUDA(cudaEventCreate(reinterpret_cast<cudaEvent_t*>(&stop_)));
}
CudaTimer::~CudaTimer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}
void CudaTimer::start(Backend& b) { KF_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(start_), static_cast<cudaStream_t>(stream_of(b)))); }
double CudaTimer::stop_ms(Backend& b) {
  KF_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(stop_), static_cast<cudaStream_t>(stream_of(b))));
  KF_CUDA(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)));
  float ms = 0.f;
  KF_CUDA(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)));
  return ms;
}

double cuda_copy_ms(const Tensor& dst, const Tensor& src, int iters) {
  KF_CHECK(dst.device == Device::CUDA && src.device == Device::CUDA && dst.nbytes() == src.nbytes(),
           "cuda_copy_ms: two CUDA tensors of equal size");
  cudaEvent_t a, b;
  KF_CUDA(cudaEventCreate(&a));
  KF_CUDA(cudaEventCreate(&b));
  KF_CUDA(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, nullptr));  // warm-up
  KF_CUDA(cudaEventRecord(a, nullptr));
  for (int i = 0; i < iters; ++i)
    KF_CUDA(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, nullptr));
  KF_CUDA(cudaEventRecord(b, nullptr));
  KF_CUDA(cudaEventSynchronize(b));
  float ms = 0.f;
  KF_CUDA(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / iters;
}

int64_t cuda_free_bytes() {
  size_t free_b = 0, total_b = 0;
  KF_CUDA(cudaMemGetInfo(&free_b, &total_b));
  return static_cast<int64_t>(free_b);
}

std::string cuda_device_name(int device) {
  cudaDeviceProp prop{};
  KF_CUDA(cudaGetDeviceProperties(&prop, device));
  return fmt::format("{} ({} SMs, {} MB L2)", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
}

}  // namespace kf

// CUTLASS's decode GEMM (backend/cuda/gemm_cutlass.h) under programmatic
// dependent launch: launched right behind a producer that lets its dependents
// launch at once and writes the GEMM's input ~30 µs later, the GEMM must
// compute on the written input (it waits in griddepcontrol.wait), directly
// on a stream and inside a CUDA graph, unsplit and in 4 K slices of fp32
// partials (summed on the host); against an fp64 product on the host.
// A GEMM that did not wait would read the zeros written before the producer.
// (Plain CUDA C++ 17: the backend's headers are C++ 20 and stay out of nvcc.)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cuda/gemm_cutlass.h"

namespace {

#define CK(x) ASSERT_EQ((x), cudaSuccess) << #x

__global__ void late_writer(const __nv_bfloat16* src, __nv_bfloat16* dst, int n, unsigned long long spin_ns) {
  asm volatile("griddepcontrol.launch_dependents;");
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < spin_ns);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = src[i];
}


struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { cudaMalloc(&p, bytes); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

TEST(CudaGemmWait, CutlassGemmWaitsForItsProducer) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    GTEST_SKIP() << "no CUDA device: CUDA kernel tests skipped";
  }
  if (!kf::cuda::cutlass_gemm_built()) GTEST_SKIP() << "built without CUTLASS: every GEMM is cuBLASLt's";
  CK(kf::cuda::cutlass_gemm_prepare());
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int n = 32, k = 1024, m = 2048;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<__nv_bfloat16> x(size_t(n) * k), w(size_t(m) * k);
  for (auto& v : x) v = __float2bfloat16(u(rng));
  for (auto& v : w) v = __float2bfloat16(u(rng) / 32.f);
  std::vector<float> ref(size_t(n) * m);
  for (int r = 0; r < n; ++r)
    for (int o = 0; o < m; ++o) {
      double acc = 0;
      for (int j = 0; j < k; ++j)
        acc += double(__bfloat162float(x[size_t(r) * k + j])) * __bfloat162float(w[size_t(o) * k + j]);
      ref[size_t(r) * m + o] = float(acc);
    }
  constexpr int kSlices = 4;
  DeviceBuffer src(x.size() * 2), dx(x.size() * 2), dw(w.size() * 2), dy(ref.size() * 4 * kSlices);
  CK(cudaMemcpy(src.p, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dw.p, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
  cudaStream_t st = nullptr;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  for (int slices : {1, kSlices}) {
    auto chain = [&] {
      late_writer<<<32, 256, 0, st>>>(static_cast<const __nv_bfloat16*>(src.p), static_cast<__nv_bfloat16*>(dx.p),
                                      n * k, 30000ull);
      return slices == 1 ? kf::cuda::cutlass_gemm(dx.p, dw.p, dy.p, n, m, k, sms, st)
                         : kf::cuda::cutlass_gemm_split_k(dx.p, dw.p, static_cast<float*>(dy.p), n, m, k, slices,
                                                          sms, st);
    };
    for (bool graph : {false, true}) {
      SCOPED_TRACE(::testing::Message() << (graph ? "in a CUDA graph" : "on the stream") << ", " << slices
                                        << " K slices");
      CK(cudaMemsetAsync(dx.p, 0, x.size() * 2, st));
      CK(cudaMemsetAsync(dy.p, 0xff, ref.size() * 4 * kSlices, st));  // NaNs
      CK(cudaStreamSynchronize(st));
      if (graph) {
        cudaGraph_t g = nullptr;
        cudaGraphExec_t ge = nullptr;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        const char* err = chain();
        CK(cudaStreamEndCapture(st, &g));
        ASSERT_EQ(err, nullptr) << err;
        CK(cudaGraphInstantiate(&ge, g, 0));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaStreamSynchronize(st));
        cudaGraphExecDestroy(ge);
        cudaGraphDestroy(g);
      } else {
        const char* err = chain();
        ASSERT_EQ(err, nullptr) << err;
      }
      CK(cudaStreamSynchronize(st));
      std::vector<float> y(ref.size(), 0.f);
      if (slices == 1) {
        std::vector<__nv_bfloat16> yb(ref.size());
        CK(cudaMemcpy(yb.data(), dy.p, yb.size() * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < y.size(); ++i) y[i] = __bfloat162float(yb[i]);
      } else {
        std::vector<float> parts(ref.size() * slices);
        CK(cudaMemcpy(parts.data(), dy.p, parts.size() * 4, cudaMemcpyDeviceToHost));
        for (int sl = 0; sl < slices; ++sl)
          for (size_t i = 0; i < y.size(); ++i) y[i] += parts[sl * y.size() + i];
      }
      double err2 = 0, ref2 = 0, worst = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        const double d = double(y[i]) - ref[i];
        err2 += d * d;
        ref2 += double(ref[i]) * ref[i];
        worst = std::max(worst, std::fabs(d) / (std::fabs(double(ref[i])) + 1e-2));
      }
      EXPECT_GT(ref2, 0.0);
      EXPECT_LT(std::sqrt(err2 / ref2), slices == 1 ? 6e-3 : 1e-4)
          << "relative L2 error: did the GEMM read x before the producer wrote it?";
      EXPECT_LT(worst, slices == 1 ? 0.05 : 1e-3) << "the worst element is off by more than rounding";
    }
  }
  cudaStreamDestroy(st);
}

}  // namespace

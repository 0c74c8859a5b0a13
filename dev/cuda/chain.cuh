// The decode-step GEMM chain of the dev/cuda GEMM sandboxes (gemm_pdl.cu,
// gemm_cutlass.cu): the Qwen3-0.6B projection shapes at 32 rows, a producer
// that writes the GEMM's input late (does a GEMM wait for it?), the
// norm-like kernel between GEMMs, graph capture and timing.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"

namespace chain {

using namespace kf;

constexpr int kRows = 32;
constexpr int kSpinUs = 30;

struct Proj {
  const char* name;
  int m, k;  // out, in
};
// qwen3-0.6b: hidden 1024, 16 query / 8 KV heads of 128, MLP 3072.
constexpr Proj kProj[] = {{"qkv", 4096, 1024}, {"o", 1024, 2048}, {"gate_up", 6144, 1024}, {"down", 1024, 3072}};
// qwen3-8b: hidden 4096, 32 query / 8 KV heads of 128, MLP 12288.
constexpr Proj kProj8b[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate_up", 24576, 4096}, {"down", 4096, 12288}};

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Lets its dependents launch, spins, then copies src into x.
__global__ void late_writer(const __nv_bfloat16* src, __nv_bfloat16* x, int n, int spin_us) {
  asm volatile("griddepcontrol.launch_dependents;");
  const unsigned long long t0 = global_ns();
  while (global_ns() - t0 < 1000ull * spin_us) {
  }
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] = src[i];
}

// One bulk L2 prefetch per thread of its share of [p, p + bytes).
__device__ __forceinline__ void prefetch_l2(const void* p, size_t bytes) {
  const size_t threads = size_t(gridDim.x) * blockDim.x, t = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t chunk = (bytes / threads + 15) & ~size_t(15);
  const size_t begin = t * chunk;
  if (begin >= bytes) return;
  const uint32_t n = uint32_t(min(chunk, bytes - begin));
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(static_cast<const char*>(p) + begin), "r"(n)
               : "memory");
}

// Norm-like step kernel: x[r, j] = y[r, j % m] / 2 (one block per row).
// Prefetches [pre, pre + pre_bytes) into L2 first (its weights are no
// earlier kernel's output, so before the wait).
__global__ void fold(const __nv_bfloat16* y, int m, __nv_bfloat16* x, int k, int trigger, const void* pre,
                     size_t pre_bytes) {
  if (pre) prefetch_l2(pre, pre_bytes);
  kf::cuda::griddep_wait();
  if (trigger) asm volatile("griddepcontrol.launch_dependents;");
  const int r = blockIdx.x;
  for (int j = threadIdx.x; j < k; j += blockDim.x)
    x[size_t(r) * k + j] = __float2bfloat16(0.5f * __bfloat162float(y[size_t(r) * m + j % m]));
}

// Uniform values in [-0.05, 0.05) by element index (Backend::fill_uniform),
// complete before another stream reads them.
inline void fill(Backend& be, const Buffer& b, uint64_t seed) {
  be.fill_uniform(b.view(), seed, -0.05f, 0.05f);
  be.synchronize();
}

inline Tensor t2(Buffer& b, int64_t r, int64_t c) { return Tensor(b.view().data, DType::BF16, {r, c}, Device::CUDA); }

inline std::vector<uint16_t> host(const Buffer& b) {
  std::vector<uint16_t> h(b.view().numel());
  KF_CUDA(cudaMemcpy(h.data(), b.view().data, h.size() * 2, cudaMemcpyDeviceToHost));
  return h;
}

// Makes the edges from the capture's current dependencies into the next node
// captured on `st` programmatic (all must be kernel nodes).
inline void programmatic_into_next(cudaStream_t st) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaGraphNode_t* deps = nullptr;
  const cudaGraphEdgeData* edges = nullptr;
  size_t n = 0;
  KF_CUDA(cudaStreamGetCaptureInfo(st, &status, nullptr, nullptr, &deps, &edges, &n));
  if (status != cudaStreamCaptureStatusActive || n == 0) return;
  std::vector<cudaGraphNode_t> nodes(deps, deps + n);
  std::vector<cudaGraphEdgeData> data(n);
  for (cudaGraphEdgeData& d : data) {
    d = cudaGraphEdgeData{};
    d.from_port = cudaGraphKernelNodePortProgrammatic;
    d.type = cudaGraphDependencyTypeProgrammatic;
  }
  KF_CUDA(cudaStreamUpdateCaptureDependencies(st, nodes.data(), data.data(), n, cudaStreamSetCaptureDependencies));
}

inline cudaGraphExec_t capture(cudaStream_t st, const std::function<void()>& ops) {
  cudaGraph_t g = nullptr;
  KF_CUDA(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  ops();
  KF_CUDA(cudaStreamEndCapture(st, &g));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  KF_CUDA(e);
  return exec;
}

inline double replay_ms(cudaGraphExec_t exec, cudaStream_t st, int reps) {
  cudaEvent_t a, b;
  KF_CUDA(cudaEventCreate(&a));
  KF_CUDA(cudaEventCreate(&b));
  KF_CUDA(cudaGraphLaunch(exec, st));
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    KF_CUDA(cudaEventRecord(a, st));
    KF_CUDA(cudaGraphLaunch(exec, st));
    KF_CUDA(cudaEventRecord(b, st));
    KF_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    KF_CUDA(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, double(ms));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}

// What a chain sandbox's main starts from: replays to time (argv[1], default
// 20), the CUDA backend, a stream, and cuBLASLt plans that time their
// candidates (kf::cuda::Gemm with tune, as the step's GEMMs at first use).
struct Setup {
  int reps;
  std::unique_ptr<Backend> be;
  cudaStream_t st = nullptr;
  std::unique_ptr<kf::cuda::Gemm> lt;
  Setup(int argc, char** argv) : reps(argc > 1 ? std::atoi(argv[1]) : 20), be(make_cuda_backend(0)) {
    KF_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    lt = std::make_unique<kf::cuda::Gemm>(*be, st, /*num_sms=*/0, true, /*cutlass=*/false);  // cuBLASLt only
  }
  ~Setup() {
    lt.reset();
    cudaStreamDestroy(st);
  }
};

}  // namespace chain

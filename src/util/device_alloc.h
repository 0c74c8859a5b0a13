// Device memory hooks used by Buffer. CPU is implemented in tensor.cpp; CUDA by
// src/backend/cuda (or src/backend/no_cuda.cpp, which throws, in CPU-only builds).
#pragma once
#include <cstddef>

#include "util/tensor.h"

namespace kf {
void* cpu_alloc(size_t bytes);
void cpu_free(void* p);
void* cuda_alloc(size_t bytes);
void cuda_free(void* p);
bool cuda_available();  // a CUDA build with at least one visible device

inline void* device_alloc(Device d, size_t bytes) {
  return d == Device::CPU ? cpu_alloc(bytes) : cuda_alloc(bytes);
}
inline void device_free(Device d, void* p) {
  if (d == Device::CPU) cpu_free(p); else cuda_free(p);
}
}  // namespace kf

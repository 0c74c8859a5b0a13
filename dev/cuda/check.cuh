// The sandboxes' error check: a failed CUDA runtime call prints the call and
// its error, then exits (dev/cuda/*.cu are one-shot measurement programs).
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CK(x)                                                                                    \
  do {                                                                                           \
    cudaError_t ck_err_ = (x);                                                                   \
    if (ck_err_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(ck_err_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

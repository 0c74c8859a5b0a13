// Standalone driver for the CUDA benchmarks (dev/cuda/CMakeLists.txt):
// `kinfer_cuda_bench copy|attention|sample [options]` runs the same code as
// `kinfer bench copy|attention|sample`.
#include <cstdio>
#include <cstring>
#include <exception>

#include "bench.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: kinfer_cuda_bench copy|attention|sample [options]\n");
    return 2;
  }
  try {
    if (!std::strcmp(argv[1], "copy")) return kf::cli::bench_copy(argc - 1, argv + 1);
    if (!std::strcmp(argv[1], "attention")) return kf::cli::bench_attention(argc - 1, argv + 1);
    if (!std::strcmp(argv[1], "sample")) return kf::cli::bench_sample(argc - 1, argv + 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown benchmark '%s'\n", argv[1]);
  return 2;
}

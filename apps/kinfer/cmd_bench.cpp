// `kinfer bench NAME [options]`: dispatches to one benchmark.
#include <cstdio>
#include <string_view>

#include "bench.h"
#include "commands.h"

namespace kf::cli {
namespace {

struct Bench {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Bench kBenches[] = {
    {"decode", bench_decode, "decode tokens/s and effective GB/s of weight traffic"},
    {"copy", bench_copy, "device-to-device copy bandwidth (the GPU ceiling)"},
    {"attention", bench_attention, "paged decode attention: time per step, effective GB/s (CUDA)"},
    {"sample", bench_sample, "token sampling (top-k / top-p / min-p): us per decode step (CUDA)"},
    {"generate", bench_generate, "Best-of-N generation through the engine: tokens/s, KV bytes read per token"},
    {"tokenize", bench_tokenize, "tokenizer encode tokens/s on GSM8K + MATH500 texts (single thread)"},
    {"", nullptr, ""},  // sentinel; benchmarks are listed above it
};

void usage(FILE* out) {
  std::fprintf(out, "usage: kinfer bench NAME [options] [--json]   (kinfer bench NAME --help)\n\nbenchmarks:\n");
  for (const Bench& b : kBenches)
    if (b.run) std::fprintf(out, "  %-10s %s\n", b.name, b.summary);
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h") {
    usage(stdout);
    return 0;
  }
  for (const Bench& b : kBenches)
    if (b.run && name == b.name) return b.run(argc - 1, argv + 1);
  std::fprintf(stderr, "kinfer bench: unknown benchmark '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}

}  // namespace kf::cli

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

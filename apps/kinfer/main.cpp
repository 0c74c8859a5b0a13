// kinfer: test-time scaling inference engine. Dispatches to one subcommand.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string_view>

#include "commands.h"
#include "util/error.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"version", kf::cli::cmd_version, "build information (version, CUDA, BLAS)"},
    {"info", kf::cli::cmd_info, "model config, parameter counts, memory for weights and KV cache"},
    {"eval", kf::cli::cmd_eval, "evaluate on a math data set: N samples per problem, graded trace, summary"},
    {"regrade", kf::cli::cmd_regrade, "re-grade a trace; --budgets: long-CoT sweep by truncation"},
    {"grade", kf::cli::cmd_grade, "grade a response on stdin against --gold (answer extraction + equivalence)"},
    {"generate", kf::cli::cmd_generate, "sample a prompt n times (engine: paged KV, attention policy, sampling)"},
    {"tokenize", kf::cli::cmd_tokenize, "text -> token ids and pieces (--chat: through the chat template)"},
    {"detokenize", kf::cli::cmd_detokenize, "token ids -> text"},
    {"bench", kf::cli::cmd_bench, "benchmarks (decode, attention, copy, generate, tokenize) as JSON"},
    {"cost", kf::cli::cmd_cost, "Kinetics eFLOPs of N samples of L tokens (compute, memory, breakdown)"},
    {"frontier", kf::cli::cmd_frontier, "accuracy vs eFLOPs over traces (pass@N, maj@N, long-CoT budgets), Pareto frontier, plot"},
    {"plan", kf::cli::cmd_plan, "best model / N / length / attention within an eFLOPs budget"},
    {"serve", kf::cli::cmd_serve, "OpenAI-compatible server: completions, chat, streaming, Best-of-N, eFLOPs in usage"},
    {"merge", kf::cli::cmd_merge, "join the shard traces of eval --shard I/N into one trace (checks gaps, overlaps)"},
};

void usage(FILE* out) {
  std::fprintf(out,
               "kinfer: inference engine for test-time scaling (Kinetics eFLOPs, block top-k "
               "attention)\n\nusage: kinfer COMMAND [options]   (kinfer COMMAND --help for "
               "each)\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\n--model takes a GGUF file, an HF directory (config.json + safetensors), "
               "'default'\n(the embedded SmolLM2-135M-Instruct) or random:PRESET.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    usage(stdout);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (name == c.name) {
      try {
        return c.run(argc - 1, argv + 1);
      } catch (const kf::Error& e) {
        std::fprintf(stderr, "kinfer %s: error: %s\n", c.name, e.what());
        return 1;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "kinfer %s: internal error: %s\n", c.name, e.what());
        return 3;
      }
    }
  }
  std::fprintf(stderr, "kinfer: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}

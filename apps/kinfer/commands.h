// One function per subcommand, each in its own file (cmd_NAME.cpp). Each parses
// its own arguments with CLI11, supports --help and --json, and returns the
// process exit code.
#pragma once

namespace kf::cli {
int cmd_version(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_grade(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_regrade(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_cost(int argc, char** argv);
int cmd_frontier(int argc, char** argv);
int cmd_plan(int argc, char** argv);
int cmd_merge(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_detokenize(int argc, char** argv);
int cmd_serve(int argc, char** argv);
// Add one line per subcommand here and one row in main.cpp's kCommands.
}  // namespace kf::cli

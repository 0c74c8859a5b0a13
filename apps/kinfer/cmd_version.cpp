#include <CLI/CLI.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "backend/backend.h"

namespace kf::cli {

int cmd_version(int argc, char** argv) {
  CLI::App app{"Print kinfer's build information", "kinfer version"};
  bool json = false;
  app.add_flag("--json", json, "print JSON");
  CLI11_PARSE(app, argc, argv);
#ifdef KINFER_HAVE_CUDA
  const bool built_cuda = true;
#else
  const bool built_cuda = false;
#endif
  nlohmann::json j = {{"version", "0.1.0"},
                      {"cuda_built", built_cuda},
                      {"cuda_device", (cuda_device_count() > 0)},
                      {"cuda_device_supported", cuda_device_supported(0)}};
  if (json) {
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("kinfer 0.1.0 (CUDA backend: %s, device visible: %s, GPU 0 supported: %s)\n",
                built_cuda ? "built" : "not built", (cuda_device_count() > 0) ? "yes" : "no",
                cuda_device_supported(0) ? "yes" : "no");
  }
  return 0;
}

}  // namespace kf::cli

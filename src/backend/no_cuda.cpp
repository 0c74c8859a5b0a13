// Linked in builds without CUDA: every CUDA entry point explains itself.
#include <memory>

#include "backend/backend.h"

namespace kf {
int cuda_device_count() { return 0; }
bool cuda_device_supported(int) { return false; }
bool cuda_tp_available() { return false; }
std::unique_ptr<Backend> make_cuda_backend(int) {
  fail("--device cuda: this kinfer was built without CUDA (configure with -DKINFER_CUDA=ON on a machine with "
       "nvcc); use --device cpu");
}
}  // namespace kf

// Linked in builds without CUDA: every CUDA entry point explains itself.
#include <memory>

#include "backend/backend.h"
#include "util/device_alloc.h"

namespace kf {
void* cuda_alloc(size_t) { fail("this kinfer was built without CUDA (configure with -DKINFER_CUDA=ON)"); }
void cuda_free(void*) {}
bool cuda_available() { return false; }
std::unique_ptr<Backend> make_cuda_backend(int) {
  fail("--device cuda: this kinfer was built without CUDA (configure with -DKINFER_CUDA=ON on a machine with "
       "nvcc); use --device cpu");
}
}  // namespace kf

// NCCL for CudaBackend's tensor parallelism (internal to backend/cuda). In a
// build without NCCL every entry point explains itself, except that
// cuda_tp_available() says false.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "util/tensor.h"

namespace kf::cuda {

// One rank's communicator; the communicators of a group (made together) are
// destroyed together once no rank holds them.
class NcclRank {
 public:
  virtual ~NcclRank() = default;
};

// Communicators of one group over `devices` (ncclCommInitAll), rank i on
// devices[i]. NCCL_NVLS_ENABLE defaults to 0 (no NVLink multicast). Moves the
// calling thread's current device.
std::vector<std::shared_ptr<NcclRank>> nccl_group(const std::vector<int>& devices);
// In-place sum of x (BF16 or F32, contiguous) over the group, on `stream`.
// Throws once the group was aborted.
void nccl_all_reduce(NcclRank& rank, const Tensor& x, cudaStream_t stream);
// ncclCommAbort on every communicator of rank's group (pending all-reduces on
// the devices end), once; later all-reduces throw, naming `why`. Any thread.
void nccl_abort(NcclRank& rank, const std::string& why);

}  // namespace kf::cuda

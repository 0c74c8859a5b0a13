#include "backend/cuda/nccl.h"

#include <cstdlib>

#include "backend/backend.h"
#include "util/error.h"

#ifdef KINFER_HAVE_NCCL
#include <nccl.h>
#endif

namespace kf {

bool cuda_tp_available() {
#ifdef KINFER_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

namespace cuda {

#ifdef KINFER_HAVE_NCCL
namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("NCCL {}: {} ({})", what, ncclGetErrorString(r), ncclGetLastError(nullptr));
}

// The communicators of one group, destroyed together (as NCCL's
// single-process example does).
struct Comms {
  std::vector<ncclComm_t> comms;
  ~Comms() {
    for (ncclComm_t c : comms)
      if (c) ncclCommDestroy(c);
  }
};

struct Rank final : NcclRank {
  std::shared_ptr<Comms> group;
  ncclComm_t comm = nullptr;
};

}  // namespace

std::vector<std::shared_ptr<NcclRank>> nccl_group(const std::vector<int>& devices) {
  setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off unless the user set the variable
  auto group = std::make_shared<Comms>();
  group->comms.assign(devices.size(), nullptr);
  check_nccl(ncclCommInitAll(group->comms.data(), static_cast<int>(devices.size()), devices.data()),
             "communicator set-up (ncclCommInitAll)");
  std::vector<std::shared_ptr<NcclRank>> ranks;
  for (ncclComm_t c : group->comms) {
    auto r = std::make_shared<Rank>();
    r->group = group;
    r->comm = c;
    ranks.push_back(std::move(r));
  }
  return ranks;
}

void nccl_all_reduce(NcclRank& rank, const Tensor& x, cudaStream_t stream) {
  KF_CHECK(x.device == Device::CUDA && x.is_contiguous() && (x.dtype == DType::BF16 || x.dtype == DType::F32),
           "all_reduce: x must be a contiguous BF16 or F32 CUDA tensor");
  check_nccl(ncclAllReduce(x.data, x.data, static_cast<size_t>(x.numel()),
                           x.dtype == DType::BF16 ? ncclBfloat16 : ncclFloat32, ncclSum,
                           static_cast<Rank&>(rank).comm, stream),
             "all-reduce");
}

#else

std::vector<std::shared_ptr<NcclRank>> nccl_group(const std::vector<int>& devices) {
  fail("tensor parallelism over {} GPUs: this kinfer was built without NCCL (CMake found no nccl.h and libnccl; "
       "see the README, More than one GPU)", devices.size());
}

void nccl_all_reduce(NcclRank&, const Tensor&, cudaStream_t) { fail("all_reduce: built without NCCL"); }

#endif

}  // namespace cuda
}  // namespace kf

#include "backend/cuda/nccl.h"

#include <cstdlib>
#include <mutex>

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
// single-process example does), or aborted together after a rank failed.
// An abort never runs while a rank is inside an NCCL call on the group:
// `inflight` counts those calls, and the last one to return performs an
// abort that came meanwhile (a call that never returns, e.g. blocked on a
// failed peer inside NCCL, keeps the group from being aborted).
struct Comms {
  std::mutex mu;
  std::vector<ncclComm_t> comms;
  int inflight = 0;
  bool aborted = false;
  std::string why;
  void abort_comms_locked() {
    int dev = 0;
    const bool had_dev = cudaGetDevice(&dev) == cudaSuccess;
    for (ncclComm_t& c : comms) {
      if (c) ncclCommAbort(c);  // frees the communicator; its pending kernels end
      c = nullptr;
    }
    if (had_dev) cudaSetDevice(dev);  // NCCL may have moved the calling thread's device
  }
  ~Comms() {
    for (ncclComm_t c : comms)
      if (c) ncclCommDestroy(c);
  }
};

struct Rank final : NcclRank {
  std::shared_ptr<Comms> group;
  int index = 0;
};

}  // namespace

std::vector<std::shared_ptr<NcclRank>> nccl_group(const std::vector<int>& devices) {
  setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off unless the user set the variable
  auto group = std::make_shared<Comms>();
  group->comms.assign(devices.size(), nullptr);
  check_nccl(ncclCommInitAll(group->comms.data(), static_cast<int>(devices.size()), devices.data()),
             "communicator set-up (ncclCommInitAll)");
  std::vector<std::shared_ptr<NcclRank>> ranks;
  for (size_t i = 0; i < devices.size(); ++i) {
    auto r = std::make_shared<Rank>();
    r->group = group;
    r->index = static_cast<int>(i);
    ranks.push_back(std::move(r));
  }
  return ranks;
}

void nccl_all_reduce(NcclRank& rank, const Tensor& x, cudaStream_t stream) {
  KF_CHECK(x.device == Device::CUDA && x.is_contiguous() && (x.dtype == DType::BF16 || x.dtype == DType::F32),
           "all_reduce: x must be a contiguous BF16 or F32 CUDA tensor");
  Comms& g = *static_cast<Rank&>(rank).group;
  ncclComm_t comm = nullptr;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    KF_CHECK(!g.aborted, "tensor parallelism: the group was aborted after a rank failed: {}", g.why);
    comm = g.comms[static_cast<Rank&>(rank).index];
    ++g.inflight;
  }
  const ncclResult_t res = ncclAllReduce(x.data, x.data, static_cast<size_t>(x.numel()),
                                         x.dtype == DType::BF16 ? ncclBfloat16 : ncclFloat32, ncclSum, comm, stream);
  {
    std::lock_guard<std::mutex> lock(g.mu);
    if (--g.inflight == 0 && g.aborted) g.abort_comms_locked();
  }
  check_nccl(res, "all-reduce");
}

void nccl_abort(NcclRank& rank, const std::string& why) {
  Comms& g = *static_cast<Rank&>(rank).group;
  std::lock_guard<std::mutex> lock(g.mu);
  if (!g.aborted) {
    g.aborted = true;
    g.why = why;
  }
  if (g.inflight == 0) g.abort_comms_locked();
}

#else

std::vector<std::shared_ptr<NcclRank>> nccl_group(const std::vector<int>& devices) {
  fail("tensor parallelism over {} GPUs: this kinfer was built without NCCL (CMake found no nccl.h and libnccl; "
       "see the README, More than one GPU)", devices.size());
}

void nccl_all_reduce(NcclRank&, const Tensor&, cudaStream_t) { fail("all_reduce: built without NCCL"); }
void nccl_abort(NcclRank&, const std::string&) {}

#endif

}  // namespace cuda
}  // namespace kf

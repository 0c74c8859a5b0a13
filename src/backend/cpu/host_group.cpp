#include "backend/cpu/host_group.h"

#include <algorithm>

#include "util/error.h"

namespace kf {

HostGroup::HostGroup(int size) : size_(size), bufs_(size, nullptr), sizes_(size, 0) {
  KF_CHECK(size >= 1, "host group: size {} must be >= 1", size);
}

void HostGroup::barrier(bool first) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto check_aborted = [&] {
    KF_CHECK(!aborted_, "tensor parallelism: the group was aborted after a rank failed: {}", abort_why_);
  };
  check_aborted();
  const uint64_t phase = phase_;
  if (++arrived_ < size_) {
    cv_.wait(lock, [&] { return phase_ != phase || aborted_; });
    if (phase_ == phase) check_aborted();
    return;
  }
  if (first) {
    mismatch_ = std::any_of(sizes_.begin(), sizes_.end(), [&](int64_t n) { return n != sizes_[0]; });
    if (!mismatch_ && static_cast<int64_t>(sum_.size()) < sizes_[0]) sum_.resize(sizes_[0]);
  }
  arrived_ = 0;
  ++phase_;
  cv_.notify_all();
}

void HostGroup::abort(const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_) return;
  aborted_ = true;
  abort_why_ = why;
  cv_.notify_all();
}

void HostGroup::all_reduce(int rank, float* x, int64_t n) {
  KF_CHECK(rank >= 0 && rank < size_, "host group: rank {} outside [0, {})", rank, size_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    bufs_[rank] = x;
    sizes_[rank] = n;
  }
  barrier(true);  // every input is published (and the last call's sum was copied out)
  KF_CHECK(!mismatch_, "host group: the ranks all-reduce tensors of different sizes");
  // Each rank sums its share of the elements, in rank order.
  const int64_t b = n * rank / size_, e = n * (rank + 1) / size_;
  for (int64_t i = b; i < e; ++i) {
    float s = bufs_[0][i];
    for (int r = 1; r < size_; ++r) s += bufs_[r][i];
    sum_[i] = s;
  }
  barrier(false);  // the whole sum is there
  std::copy(sum_.begin(), sum_.begin() + n, x);
}

}  // namespace kf

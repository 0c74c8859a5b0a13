// HostGroup: the tensor-parallel collective of CPU backends (the reference
// the NCCL path is tested against; see make_tp_group in backend/backend.h).
// Each rank calls all_reduce from its own thread with its own buffer; the sum
// is taken in rank order (x_0 + x_1 + ...) for every element, so every rank
// gets the same bits.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace kf {

class HostGroup {
 public:
  explicit HostGroup(int size);
  int size() const { return size_; }
  // x [n] F32 of rank `rank`: returns when every rank's x holds the sum.
  // Throws once the group was aborted.
  void all_reduce(int rank, float* x, int64_t n);
  // Wakes every rank waiting in all_reduce (they throw, naming `why`), and
  // makes every later call throw.
  void abort(const std::string& why);

 private:
  // Waits until every rank has arrived; the last one to arrive runs the
  // phase's bookkeeping (checks the sizes agree, grows the sum buffer).
  void barrier(bool first);

  const int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t phase_ = 0;
  bool mismatch_ = false;
  bool aborted_ = false;
  std::string abort_why_;
  std::vector<float*> bufs_;
  std::vector<int64_t> sizes_;
  std::vector<float> sum_;  // grow-only
};

}  // namespace kf

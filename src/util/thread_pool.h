// ThreadPool: a fixed set of worker threads for data-parallel loops. Owned by
// whoever needs it (the CPU backend); no global pool.
//
// parallel_for(n, fn) splits [0, n) into at most size() contiguous chunks and
// runs fn(begin, end) on the workers and the calling thread, returning when all
// are done. Which chunk runs where is not specified, so fn must make each
// index's result independent of the split (the CPU ops do). The first
// exception thrown by fn is rethrown in the caller. A nested or concurrent
// call runs serially on its caller instead of deadlocking.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kf {

class ThreadPool {
 public:
  using RangeFn = std::function<void(int64_t begin, int64_t end)>;

  // n_threads counts the caller; 0 = std::thread::hardware_concurrency().
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Chunks hold at least min_chunk indices (fewer threads are used for small n).
  void parallel_for(int64_t n, const RangeFn& fn, int64_t min_chunk = 1);

 private:
  void worker_loop(int worker_index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  uint64_t generation_ = 0;  // bumped for each job, guarded by mu_
  bool stop_ = false;
  int pending_ = 0;          // worker chunks not yet finished, guarded by mu_
  std::exception_ptr error_;
  std::atomic<bool> busy_{false};

  // The current job (valid while pending_ > 0).
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0;
  int n_chunks_ = 0;
};

}  // namespace kf

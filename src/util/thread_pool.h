// ThreadPool: a fixed set of worker threads for data-parallel loops. Owned by
// whoever needs it (the CPU backend); no global pool.
//
// parallel_for(n, fn) splits [0, n) into at most size() contiguous chunks and
// runs fn(begin, end) on the workers and the calling thread, returning when all
// are done. parallel_for_dynamic(n, fn, grain) uses chunks of `grain` indices.
// Which index runs where is not specified, so fn must make each index's result
// independent of the split (the CPU ops do). The first exception thrown by fn
// is rethrown in the caller. A nested or concurrent call runs serially on its
// caller instead of deadlocking.
//
// Threads take chunks on demand, and the caller closes the job once every
// chunk is taken: a worker the OS has not scheduled yet (a busy machine) never
// holds the caller up, it just finds the job closed. Idle workers spin for a
// short while (kSpin) before they sleep, so the many small loops of a decode
// step do not each pay a wake-up.
#pragma once
#include <atomic>
#include <chrono>
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
  // How long an idle worker (or a caller waiting for workers) spins before it sleeps.
  static constexpr std::chrono::microseconds kSpin{300};

  // n_threads counts the caller; 0 = std::thread::hardware_concurrency().
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Chunks hold at least min_chunk indices (fewer threads are used for small n).
  void parallel_for(int64_t n, const RangeFn& fn, int64_t min_chunk = 1);
  // Chunks of `grain` indices, taken in order; serial when n <= grain.
  void parallel_for_dynamic(int64_t n, const RangeFn& fn, int64_t grain);

 private:
  void run(int64_t n, const RangeFn& fn, int64_t grain);
  void take_chunks();  // runs chunks of the open job until none are left
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  std::atomic<bool> stop_{false};
  // The open job's number (0 = none open); a worker joins by counting itself
  // in active_ and then reading it (both seq_cst, so the caller's close and
  // its read of active_ cannot miss a worker that joined).
  std::atomic<uint64_t> open_job_{0};
  std::atomic<int> active_{0};
  std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::exception_ptr error_;  // guarded by mu_
  std::atomic<bool> busy_{false};
  uint64_t jobs_ = 0;         // jobs started (the caller's)

  // The current job, written before open_job_ is set.
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  std::atomic<int64_t> next_{0};
};

}  // namespace kf

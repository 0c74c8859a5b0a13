// ThreadPool: a fixed set of worker threads for data-parallel loops. Owned by
// whoever needs it (the CPU backend); no global pool.
//
// parallel_for(n, fn) splits [0, n) into at most size() contiguous chunks and
// runs fn(begin, end) on the workers and the calling thread, returning when all
// are done. parallel_for_dynamic(n, fn, grain) hands out chunks of `grain`
// indices on demand instead, so a thread the OS delays (a busy machine) does
// less of the work. Which index runs where is not specified, so fn must make
// each index's result independent of the split (the CPU ops do). The first
// exception thrown by fn is rethrown in the caller. A nested or concurrent
// call runs serially on its caller instead of deadlocking.
//
// Workers spin for a short while (kSpin) after each job before they sleep, so
// the many small parallel loops of a decode step do not each pay a wake-up.
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
  // Threads take chunks of `grain` indices in order until none are left; runs
  // serially when n <= grain.
  void parallel_for_dynamic(int64_t n, const RangeFn& fn, int64_t grain);

 private:
  void run(int64_t n, const RangeFn& fn, int chunks, int64_t grain);
  void worker_loop(int worker_index);
  void work(int participant);  // this thread's share of the current job
  void wait_for_workers();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  std::atomic<uint64_t> generation_{0};  // bumped for each job
  std::atomic<bool> stop_{false};
  std::atomic<int> pending_{0};          // workers not yet done with the current job
  std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::exception_ptr error_;             // guarded by mu_
  std::atomic<bool> busy_{false};

  // The current job, written before generation_ is bumped.
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0;
  int n_chunks_ = 0;              // static split: chunk i runs on participant i
  int64_t grain_ = 0;             // dynamic: > 0, chunks taken from next_
  std::atomic<int64_t> next_{0};
};

}  // namespace kf

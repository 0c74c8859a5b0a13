#include "util/thread_pool.h"

#include <algorithm>

namespace kf {

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  workers_.reserve(n_threads - 1);
  for (int i = 0; i < n_threads - 1; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

// Chunk c of k covers [c*n/k, (c+1)*n/k): contiguous, sizes differ by at most one.
static void run_chunk(const ThreadPool::RangeFn& fn, int64_t n, int chunks, int chunk) {
  const int64_t begin = n * chunk / chunks, end = n * (chunk + 1) / chunks;
  if (begin < end) fn(begin, end);
}

void ThreadPool::worker_loop(int worker_index) {
  // Worker i runs chunk i + 1 (the caller runs chunk 0); idle if there are fewer chunks.
  const int chunk = worker_index + 1;
  uint64_t seen = 0;
  for (;;) {
    const RangeFn* fn = nullptr;
    int64_t n = 0;
    int chunks = 0;
    {  // the job is read under the same lock as its generation, so it is consistent
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      fn = fn_;
      n = n_;
      chunks = n_chunks_;
    }
    if (chunk < chunks) {
      std::exception_ptr err;
      try {
        run_chunk(*fn, n, chunks, chunk);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (err && !error_) error_ = err;
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const RangeFn& fn, int64_t min_chunk) {
  if (n <= 0) return;
  const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int chunks = static_cast<int>(std::min<int64_t>(size(), by_size));
  bool expected = false;
  if (chunks <= 1 || !busy_.compare_exchange_strong(expected, true)) {
    fn(0, n);  // small, nested or concurrent: run here
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    n_chunks_ = chunks;
    pending_ = chunks - 1;
    error_ = nullptr;
    ++generation_;
  }
  start_cv_.notify_all();
  std::exception_ptr err;
  try {
    run_chunk(fn, n, chunks, 0);
  } catch (...) {
    err = std::current_exception();
  }
  std::exception_ptr worker_err;
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    worker_err = error_;
    fn_ = nullptr;
  }
  busy_.store(false);
  if (err) std::rethrow_exception(err);
  if (worker_err) std::rethrow_exception(worker_err);
}

}  // namespace kf

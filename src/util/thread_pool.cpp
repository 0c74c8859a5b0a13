#include "util/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace kf {

namespace {

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Spins until done() or kSpin has passed; true when done() became true.
template <typename Done>
bool spin_until(const Done& done) {
  const auto deadline = std::chrono::steady_clock::now() + ThreadPool::kSpin;
  for (int i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return done();
  }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  workers_.reserve(n_threads - 1);
  for (int i = 0; i < n_threads - 1; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

// Participant p (0 = the caller, i + 1 = worker i) runs static chunk p, or
// takes dynamic chunks until none are left. Chunk c of k covers
// [c*n/k, (c+1)*n/k): contiguous, sizes differ by at most one.
void ThreadPool::work(int participant) {
  if (grain_ > 0) {
    for (;;) {
      const int64_t begin = next_.fetch_add(grain_);
      if (begin >= n_) return;
      (*fn_)(begin, std::min(n_, begin + grain_));
    }
  }
  if (participant >= n_chunks_) return;
  const int64_t begin = n_ * participant / n_chunks_, end = n_ * (participant + 1) / n_chunks_;
  if (begin < end) (*fn_)(begin, end);
}

void ThreadPool::worker_loop(int worker_index) {
  uint64_t seen = 0;
  for (;;) {
    // Wait for a new job: spin, then sleep. The sleeping_workers_ count and
    // the generation are both seq_cst, so the caller either sees this worker
    // asleep (and notifies under the lock) or this worker sees the new job.
    auto has_job = [&] { return generation_.load() != seen || stop_.load(); };
    if (!spin_until(has_job)) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_workers_.fetch_add(1);
      start_cv_.wait(lock, has_job);
      sleeping_workers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    seen = generation_.load();
    std::exception_ptr err;
    try {
      work(worker_index + 1);
    } catch (...) {
      err = std::current_exception();
    }
    if (err) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = err;
    }
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::wait_for_workers() {
  auto done = [&] { return pending_.load() == 0; };
  if (spin_until(done)) return;
  std::unique_lock<std::mutex> lock(mu_);
  caller_sleeping_.store(true);
  done_cv_.wait(lock, done);
  caller_sleeping_.store(false);
}

void ThreadPool::run(int64_t n, const RangeFn& fn, int chunks, int64_t grain) {
  bool expected = false;
  if (workers_.empty() || !busy_.compare_exchange_strong(expected, true)) {
    fn(0, n);  // no workers, nested or concurrent: run here
    return;
  }
  fn_ = &fn;
  n_ = n;
  n_chunks_ = chunks;
  grain_ = grain;
  next_.store(0);
  error_ = nullptr;
  pending_.store(static_cast<int>(workers_.size()));
  generation_.fetch_add(1);
  if (sleeping_workers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    start_cv_.notify_all();
  }
  std::exception_ptr err;
  try {
    work(0);
  } catch (...) {
    err = std::current_exception();
  }
  wait_for_workers();
  std::exception_ptr worker_err;
  {
    std::lock_guard<std::mutex> lock(mu_);
    worker_err = error_;
  }
  fn_ = nullptr;
  busy_.store(false);
  if (err) std::rethrow_exception(err);
  if (worker_err) std::rethrow_exception(worker_err);
}

void ThreadPool::parallel_for(int64_t n, const RangeFn& fn, int64_t min_chunk) {
  if (n <= 0) return;
  const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int chunks = static_cast<int>(std::min<int64_t>(size(), by_size));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  run(n, fn, chunks, 0);
}

void ThreadPool::parallel_for_dynamic(int64_t n, const RangeFn& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (n <= grain) {
    fn(0, n);
    return;
  }
  run(n, fn, 0, grain);
}

}  // namespace kf

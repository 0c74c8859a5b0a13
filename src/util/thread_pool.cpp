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
  for (int i = 0; i < n_threads - 1; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::take_chunks() {
  std::exception_ptr err;
  for (;;) {
    const int64_t begin = next_.fetch_add(grain_);
    if (begin >= n_) break;
    try {
      (*fn_)(begin, std::min(n_, begin + grain_));
    } catch (...) {
      if (!err) err = std::current_exception();
    }
  }
  if (err) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_) error_ = err;
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    // Wait for a job other than the last one joined: spin, then sleep. The
    // caller reads sleeping_workers_ after opening a job (both seq_cst): it
    // either sees this worker asleep and notifies, or this worker sees the job.
    auto has_job = [&] {
      const uint64_t j = open_job_.load();
      return (j != 0 && j != seen) || stop_.load();
    };
    if (!spin_until(has_job)) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_workers_.fetch_add(1);
      start_cv_.wait(lock, has_job);
      sleeping_workers_.fetch_sub(1);
    }
    if (stop_.load()) return;
    active_.fetch_add(1);
    const uint64_t job = open_job_.load();
    if (job != 0) {  // still open: its fields stay put until active_ drops to 0
      take_chunks();
      seen = job;
    }
    if (active_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::run(int64_t n, const RangeFn& fn, int64_t grain) {
  bool expected = false;
  if (workers_.empty() || !busy_.compare_exchange_strong(expected, true)) {
    fn(0, n);  // no workers, nested or concurrent: run here
    return;
  }
  fn_ = &fn;
  n_ = n;
  grain_ = grain;
  next_.store(0);
  error_ = nullptr;
  open_job_.store(++jobs_);
  if (sleeping_workers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    start_cv_.notify_all();
  }
  take_chunks();
  // Every chunk is taken: close the job, then wait for the workers inside it.
  open_job_.store(0);
  auto done = [&] { return active_.load() == 0; };
  if (!spin_until(done)) {
    std::unique_lock<std::mutex> lock(mu_);
    caller_sleeping_.store(true);
    done_cv_.wait(lock, done);
    caller_sleeping_.store(false);
  }
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lock(mu_);
    err = error_;
  }
  fn_ = nullptr;
  busy_.store(false);
  if (err) std::rethrow_exception(err);
}

void ThreadPool::parallel_for(int64_t n, const RangeFn& fn, int64_t min_chunk) {
  if (n <= 0) return;
  const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int64_t chunks = std::min<int64_t>(size(), by_size);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  run(n, fn, (n + chunks - 1) / chunks);
}

void ThreadPool::parallel_for_dynamic(int64_t n, const RangeFn& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  if (n <= grain) {
    fn(0, n);
    return;
  }
  run(n, fn, grain);
}

}  // namespace kf

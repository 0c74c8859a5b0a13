#include "engine/executor_group.h"

#include <fmt/format.h>

#include <condition_variable>
#include <exception>
#include <mutex>
#include <string>
#include <thread>

#include "util/error.h"

namespace kf {

void ExecutorGroup::check_policy(const ModelConfig& shard_cfg, const AttnPolicy& policy) {
  const TpShard& sh = shard_cfg.shard;
  KF_CHECK(!sh.kv_heads_copied() || policy.kind == AttnKind::Dense || policy.kind == AttnKind::Local,
           "--tp {}: each GPU holds a copy of one of the model's {} KV heads with only some of its query heads, and "
           "{} attention selects pages from the mean query of all of them; use --attn dense or local, or a --tp that "
           "divides {}", sh.size, sh.kv_heads, attn_kind_name(policy.kind), sh.kv_heads);
}

// One host thread per rank, bound to the rank's device, running the same job
// (a function of the rank) on every rank at once; run() returns when all are
// done and rethrows the error that came first. A rank that fails aborts the
// group's collectives (Backend::abort_tp_group), so peers waiting for it in an
// all-reduce fail too instead of waiting forever; the group then refuses
// every later job but the executors' teardown.
class ExecutorGroup::Threads {
 public:
  explicit Threads(const std::vector<ExecutorRank>& ranks) {
    for (size_t r = 0; r < ranks.size(); ++r) threads_.emplace_back([this, r, be = ranks[r].backend] { loop(r, *be); });
  }
  ~Threads() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

  void run(const std::function<void(int)>& job, bool teardown = false) {
    std::unique_lock<std::mutex> lock(mu_);
    KF_CHECK(teardown || failed_.empty(), "tensor parallelism: this group of {} ranks cannot run steps after a rank "
             "failed: {}", threads_.size(), failed_);
    job_ = &job;
    pending_ = static_cast<int>(threads_.size());
    ++generation_;
    start_cv_.notify_all();
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    std::exception_ptr first = first_error_;
    first_error_ = nullptr;
    if (first) std::rethrow_exception(first);
  }

 private:
  void loop(size_t rank, Backend& be) {
    uint64_t seen = 0;
    bool bound = false;
    for (;;) {
      const std::function<void(int)>* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
      }
      try {
        if (!bound) {
          be.bind_thread();
          bound = true;
        }
        (*job)(static_cast<int>(rank));
      } catch (const std::exception& e) {
        fail_rank(rank, be, e.what());
      } catch (...) {
        fail_rank(rank, be, "unknown error");
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  // In a rank's catch block: keeps the job's first error for run(); the
  // group's first failure aborts its collectives (peers may wait in one).
  void fail_rank(size_t rank, Backend& be, const char* what) {
    std::string why;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!first_error_) first_error_ = std::current_exception();
      if (!failed_.empty()) return;
      why = failed_ = fmt::format("rank {}: {}", rank, what);
    }
    be.abort_tp_group(why);
  }

  std::vector<std::thread> threads_;
  std::exception_ptr first_error_;  // of the current job; rethrown by run()
  std::string failed_;              // the first failure of any job: the group is unusable
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

ExecutorGroup::ExecutorGroup(std::vector<ExecutorRank> ranks, const ExecutorConfig& cfg)
    : ranks_(std::move(ranks)), execs_(ranks_.size()), handles_(ranks_.size(), 0), outputs_(ranks_.size(), nullptr) {
  KF_CHECK(!ranks_.empty(), "executor group: no ranks");
  const int n = static_cast<int>(ranks_.size());
  for (int r = 0; r < n; ++r) {
    const ExecutorRank& k = ranks_[r];
    KF_CHECK(k.model && k.backend, "executor group: rank {} has no model or backend", r);
    const TpShard& sh = k.model->config().shard;
    KF_CHECK(sh.size == n && sh.rank == r, "executor group: rank {} of {} holds model shard {} of {}", r, n, sh.rank,
             sh.size);
    KF_CHECK(k.backend->tp_size() == n && k.backend->tp_rank() == r,
             "executor group: rank {} of {} runs on {}, rank {} of a group of {} (make_tp_group)", r, n,
             k.backend->name(), k.backend->tp_rank(), k.backend->tp_size());
  }
  check_policy(ranks_[0].model->config(), cfg.policy);
  if (n == 1) {
    execs_[0] = std::make_unique<StepExecutor>(*ranks_[0].model, *ranks_[0].backend, cfg);
    return;
  }
  threads_ = std::make_unique<Threads>(ranks_);
  // Each rank's executor (its buffers, events, pinned staging) is made on its own bound thread.
  threads_->run([&](int r) { execs_[r] = std::make_unique<StepExecutor>(*ranks_[r].model, *ranks_[r].backend, cfg); });
  launch_job_ = [this](int r) { handles_[r] = execs_[r]->launch(); };
  collect_job_ = [this](int r) { outputs_[r] = &execs_[r]->collect(collect_handle_); };
  sync_job_ = [this](int r) { execs_[r]->backend().synchronize(); };
}

ExecutorGroup::~ExecutorGroup() {
  if (!threads_) return;
  // Executors hold device buffers and graphs: they go on their own threads.
  try {
    threads_->run([this](int r) { execs_[r].reset(); }, true);
  } catch (...) {
  }
}

void ExecutorGroup::begin() {
  for (auto& e : execs_) e->begin();
}

int ExecutorGroup::add_seq(std::span<const int> pages, int start, std::span<const int32_t> tokens,
                           std::span<const int32_t> slots, const AttnPolicy* policy) {
  int seq = 0;
  for (auto& e : execs_) seq = e->add_seq(pages, start, tokens, slots, policy);
  return seq;
}

int ExecutorGroup::add_logits(int seq, int row, const PenaltyRow* penalties) {
  int out = 0;
  for (auto& e : execs_) out = e->add_logits(seq, row, penalties);
  return out;
}

int ExecutorGroup::add_sample(int logits_row, const SampleRow& s) {
  int out = 0;
  for (auto& e : execs_) out = e->add_sample(logits_row, s);
  return out;
}

int ExecutorGroup::add_logprob(int logits_row, int32_t target, int k) {
  int out = 0;
  for (auto& e : execs_) out = e->add_logprob(logits_row, target, k);
  return out;
}

void ExecutorGroup::add_copy(int src_page, int dst_page) {
  for (auto& e : execs_) e->add_copy(src_page, dst_page);
}

void ExecutorGroup::download_logits() {
  for (auto& e : execs_) e->download_logits();
}

StepHandle ExecutorGroup::launch() {
  if (!threads_) return execs_[0]->launch();
  threads_->run(launch_job_);
  for (StepHandle h : handles_)
    KF_CHECK(h == handles_[0], "executor group: the ranks launched different step handles ({} and {})", handles_[0], h);
  return handles_[0];
}

const StepOutput& ExecutorGroup::collect(StepHandle h) {
  if (!threads_) return execs_[0]->collect(h);
  collect_handle_ = h;
  threads_->run(collect_job_);
  for (int r = 1; r < size(); ++r)
    KF_CHECK(outputs_[r]->tokens == outputs_[0]->tokens,
             "tensor parallelism: rank {} sampled other tokens than rank 0 (the all-reduce results differ)", r);
  return *outputs_[0];
}

void ExecutorGroup::synchronize() {
  if (!threads_) {
    execs_[0]->backend().synchronize();
    return;
  }
  threads_->run(sync_job_);
}

void ExecutorGroup::on_ranks(const std::function<void(int, StepExecutor&)>& fn) {
  if (!threads_) {
    fn(0, *execs_[0]);
    return;
  }
  threads_->run([&](int r) { fn(r, *execs_[r]); });
}

}  // namespace kf

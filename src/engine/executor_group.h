// ExecutorGroup: the engine's executor(s). One StepExecutor per
// tensor-parallel rank, each with its own model shard, backend and KV pool;
// the engine describes a step once and every rank launches it.
//
//   one rank (no tensor parallelism): the executor is called directly on the
//     caller's thread; nothing else happens.
//   N ranks: each rank has its own host thread, bound to its device
//     (Backend::bind_thread), where its executor is built, launches every
//     step and waits for it, so each rank's collectives (NCCL all-reduces
//     inside Model::forward) are issued from its own thread. The description
//     (add_seq, add_logits, ...) is copied to every rank's executor on the
//     caller's thread: host bookkeeping only. The all-reduces give every rank
//     the same bits, so every rank samples the same tokens; collect() returns
//     rank 0's (and checks that the others agree).
//
// The KV bookkeeping (pages, slots) lives in the engine and is the same for
// every rank: page p holds the same tokens on every rank, each rank the K and
// V of its own heads. Data parallelism (dist/replicas.h) runs one Engine, so
// one ExecutorGroup, per replica.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "engine/executor.h"

namespace kf {

// One rank of a group: a model (a shard of one, with several ranks) on its
// backend (rank r of make_tp_group, with several ranks).
struct ExecutorRank {
  const Model* model = nullptr;
  Backend* backend = nullptr;
};

class ExecutorGroup {
 public:
  ExecutorGroup(std::vector<ExecutorRank> ranks, const ExecutorConfig& cfg);
  ~ExecutorGroup();
  ExecutorGroup(const ExecutorGroup&) = delete;
  ExecutorGroup& operator=(const ExecutorGroup&) = delete;

  int size() const { return static_cast<int>(execs_.size()); }
  StepExecutor& rank(int r) { return *execs_[r]; }
  const StepExecutor& rank(int r) const { return *execs_[r]; }
  const ExecutorConfig& config() const { return execs_[0]->config(); }

  // StepExecutor's step API, for every rank (see engine/executor.h).
  void begin();
  int add_seq(std::span<const int> pages, int start, std::span<const int32_t> tokens, std::span<const int32_t> slots,
              const AttnPolicy* policy = nullptr);
  int add_logits(int seq, int row = -1, const PenaltyRow* penalties = nullptr);
  int add_sample(int logits_row, const SampleRow& s);
  int add_logprob(int logits_row, int32_t target, int k);
  void add_copy(int src_page, int dst_page);
  void download_logits();
  StepHandle launch();
  const StepOutput& collect(StepHandle h);  // rank 0's output

  // Waits for every rank's device work.
  void synchronize();
  // Throws when `policy` cannot run on these shards (blocktopk and topk with
  // KV heads copied over ranks: TpShard::kv_heads_copied).
  static void check_policy(const ModelConfig& shard_cfg, const AttnPolicy& policy);

  // Runs fn(rank, executor) on every rank's thread at once and waits
  // (benchmarks: synthetic contexts, collective timings). The first error is rethrown.
  void on_ranks(const std::function<void(int, StepExecutor&)>& fn);

 private:
  class Threads;
  std::vector<ExecutorRank> ranks_;
  std::vector<std::unique_ptr<StepExecutor>> execs_;
  std::unique_ptr<Threads> threads_;  // null with one rank
  // The jobs of a step, built once (no allocation per step).
  std::function<void(int)> launch_job_, collect_job_, sync_job_;
  std::vector<StepHandle> handles_;
  std::vector<const StepOutput*> outputs_;
  StepHandle collect_handle_ = 0;
};

}  // namespace kf

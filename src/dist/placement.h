// Placement: which devices a run uses and how they are grouped. A replica is
// one Engine: one GPU, or `tp` GPUs running the model's tensor-parallel
// shards (heads and MLP split, NCCL all-reduces); replicas split the requests
// (data parallelism, dist/replicas.h). GPUs [0, 1, 2, 3] with tp 2 are two
// replicas, {0, 1} and {2, 3}. On the CPU, replicas are for tests: several
// CPU engines give bit-identical results to one.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/executor_group.h"
#include "model/model.h"

namespace kf::dist {

struct Placement {
  Device device = Device::CPU;
  std::vector<int> gpus;  // CUDA ordinals; replica i runs on gpus[i*tp, (i+1)*tp)
  int tp = 1;             // GPUs per replica (tensor parallelism)
  int cpu_replicas = 1;   // CPU engines (tests of the data-parallel path)
  int cpu_threads = 0;    // threads per CPU replica (0 = all cores shared out)
  bool cpu_blas = false;  // CPU: OpenBLAS matmul (not batch-invariant; benchmarks)
  WeightFormat weight_format = WeightFormat::Auto;  // how the CPU stores matrices (model/weights.h)
  int replicas() const { return device == Device::CUDA ? static_cast<int>(gpus.size()) / tp : cpu_replicas; }
  std::string describe() const;  // "cuda:0,1 (2 replicas)", "cuda:0,1 (tp 2)", "cpu"
};

// The CLI's flags, as given (see add_generate_options in apps/kinfer).
struct PlacementFlags {
  std::string device = "cpu";  // cpu | cuda
  std::string devices;         // "0,1": GPU ordinals (implies cuda)
  int num_gpus = 0;            // GPUs 0..n-1 (implies cuda)
  int tp = 1;
  int replicas = 1;            // CPU only
  int threads = 0;             // CPU threads in all (0 = all cores)
};

// Checks the flags against the `visible` GPUs and whether NCCL is built in;
// every error names the flag (a missing GPU, a GPU named twice, --tp that
// does not divide the GPUs, --tp on the CPU, --replicas on GPUs, ...).
Placement make_placement(const PlacementFlags& f, int visible_gpus, bool nccl);

// One replica's backends and models: rank r's model (shard r of tp) on
// backend r, the backends in one tensor-parallel group.
struct Replica {
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Model>> models;
  std::vector<ExecutorRank> ranks() const;
  Backend& backend() const { return *backends[0]; }
  const Model& model() const { return *models[0]; }
};

// Makes every replica's backends and loads the model (or its shards) on them,
// each device from its own thread, then forms the tensor-parallel groups.
std::vector<Replica> load_replicas(const Placement& p, const std::string& model_spec);

}  // namespace kf::dist

#include "dist/placement.h"

#include <algorithm>
#include <exception>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <set>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "util/error.h"

namespace kf::dist {

std::string Placement::describe() const {
  if (device == Device::CPU) return cpu_replicas > 1 ? fmt::format("cpu ({} replicas)", cpu_replicas) : "cpu";
  std::string s = fmt::format("cuda:{}", fmt::join(gpus, ","));
  if (tp > 1) s += fmt::format(" (tp {})", tp);
  if (replicas() > 1) s += fmt::format(" ({} replicas)", replicas());
  return s;
}

namespace {

std::vector<int> parse_gpus(const std::string& s) {
  std::vector<int> out;
  try {
    out = parse_layer_list(s);  // the same "0,1,5" syntax
  } catch (const Error&) {
    out.clear();
  }
  KF_CHECK(!out.empty(), "--devices '{}': expected GPU numbers separated by commas, e.g. 0,1", s);
  return out;
}

std::string visible_list(int visible) {
  if (visible == 0) return "no GPU is visible";
  std::vector<int> ids(visible);
  for (int i = 0; i < visible; ++i) ids[i] = i;
  return fmt::format("{} visible: {}", visible, fmt::join(ids, ", "));
}

}  // namespace

Placement make_placement(const PlacementFlags& f, int visible, bool nccl) {
  KF_CHECK(f.device == "cpu" || f.device == "cuda", "--device must be cpu or cuda (got '{}')", f.device);
  KF_CHECK(f.tp >= 1, "--tp must be >= 1 (got {})", f.tp);
  KF_CHECK(f.replicas >= 1, "--replicas must be >= 1 (got {})", f.replicas);
  KF_CHECK(f.num_gpus >= 0, "--num-gpus must be >= 1 (got {})", f.num_gpus);
  KF_CHECK(f.devices.empty() || f.num_gpus == 0, "give --devices or --num-gpus, not both");
  Placement p;
  const bool cuda = f.device == "cuda" || !f.devices.empty() || f.num_gpus > 0;
  if (!cuda) {
    KF_CHECK(f.tp == 1, "--tp {}: tensor parallelism splits a model over GPUs (NCCL); the CPU backend runs whole "
             "models: use --device cuda", f.tp);
    p.cpu_replicas = f.replicas;
    p.cpu_threads = f.threads > 0 ? std::max(1, f.threads / f.replicas) : 0;
    return p;
  }
  KF_CHECK(f.replicas == 1, "--replicas is for CPU engines; on GPUs one replica runs per GPU (or per --tp GPUs): "
           "use --devices or --num-gpus");
  p.device = Device::CUDA;
  p.tp = f.tp;
  if (!f.devices.empty()) {
    p.gpus = parse_gpus(f.devices);
  } else {
    const int n = f.num_gpus > 0 ? f.num_gpus : f.tp;  // --device cuda alone: GPU 0 (or the first --tp GPUs)
    for (int i = 0; i < n; ++i) p.gpus.push_back(i);
  }
  std::set<int> seen;
  for (int g : p.gpus) {
    KF_CHECK(seen.insert(g).second, "--devices {}: GPU {} is named twice", f.devices, g);
    KF_CHECK(visible > 0, "--device cuda: {} here; use --device cpu", visible_list(visible));
    KF_CHECK(g < visible, "GPU {} does not exist ({}){}", g, visible_list(visible),
             f.num_gpus > 0 ? fmt::format(": --num-gpus {} asks for more", f.num_gpus) : std::string());
  }
  KF_CHECK(static_cast<int>(p.gpus.size()) % p.tp == 0,
           "--tp {} with {} GPUs: each replica takes {} GPUs, so the number of GPUs must be a multiple of {}", p.tp,
           p.gpus.size(), p.tp, p.tp);
  KF_CHECK(p.tp == 1 || nccl, "--tp {}: this kinfer was built without NCCL, so tensor parallelism is unavailable "
           "(rebuild with NCCL: see the README, More than one GPU); data parallelism (--devices) works", p.tp);
  return p;
}

std::vector<ExecutorRank> Replica::ranks() const {
  std::vector<ExecutorRank> out;
  for (size_t r = 0; r < models.size(); ++r) out.push_back(ExecutorRank{models[r].get(), backends[r].get()});
  return out;
}

std::vector<Replica> load_replicas(const Placement& p, const std::string& model_spec) {
  const int n_rep = p.replicas(), tp = p.device == Device::CUDA ? p.tp : 1;
  std::vector<Replica> reps(n_rep);
  for (Replica& r : reps) {
    r.backends.resize(tp);
    r.models.resize(tp);
  }
  // One thread per device: its backend, then its model (shard) on it.
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n_rep) * tp);
  std::vector<std::thread> threads;
  for (int i = 0; i < n_rep; ++i)
    for (int k = 0; k < tp; ++k)
      threads.emplace_back([&, i, k] {
        try {
          Replica& r = reps[i];
          if (p.device == Device::CUDA) {
            r.backends[k] = make_cuda_backend(p.gpus[static_cast<size_t>(i) * tp + k]);
          } else {
            CpuOptions opt;
            opt.use_blas = p.cpu_blas;
            opt.n_threads = p.cpu_threads > 0 ? p.cpu_threads
                                              : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / n_rep);
            r.backends[k] = make_cpu_backend(opt);
          }
          r.backends[k]->bind_thread();
          r.models[k] = std::make_unique<Model>(Model::load(model_spec, *r.backends[k], TpShard{k, tp}, p.weight_format));
        } catch (...) {
          errors[static_cast<size_t>(i) * tp + k] = std::current_exception();
        }
      });
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  for (Replica& r : reps) {
    std::vector<Backend*> group;
    for (auto& b : r.backends) group.push_back(b.get());
    make_tp_group(group);
  }
  return reps;
}

}  // namespace kf::dist

#include "backend/backend.h"

#include <algorithm>
#include <set>

#include "util/error.h"

namespace kf {

namespace {
// The CPU's "graph": the ops themselves, run again on replay.
struct CallGraph final : Graph {
  std::function<void()> ops;
};
}  // namespace

std::unique_ptr<Graph> Backend::record(std::function<void()> ops) {
  ops();
  auto g = std::make_unique<CallGraph>();
  g->ops = std::move(ops);
  return g;
}

void Backend::check_projection(const char* op, const Tensor& in, const Tensor& w, const Tensor& x,
                               const Tensor* norm_w, const Tensor& out) {
  KF_CHECK(w.ndim == 2 && in.dim(-1) == w.dim(1), "{}: in {} does not fit w {}", op, in.shape_str(), w.shape_str());
  const int64_t d = w.dim(0), n = in.numel() / std::max<int64_t>(w.dim(1), 1);
  const bool apart = n == 0 || (x.data != out.data && in.data != out.data);
  KF_CHECK(x.dim(-1) == d && x.numel() == n * d && out.numel() == n * d && apart,
           "{}: x {} and out {} are not [{}, {}] and apart from each other and from in (w {})", op, x.shape_str(),
           out.shape_str(), n, d, w.shape_str());
  KF_CHECK(!norm_w || norm_w->numel() == d, "{}: norm weight {} is not [{}]", op, norm_w->shape_str(), d);
}

void Backend::check_mlp(const Tensor& h, const Tensor& w_gate_up, const Tensor& w_down, const Tensor& gate_up,
                        const Tensor& ffn, const Tensor& x, const Tensor* norm_w, const Tensor& out) {
  KF_CHECK(w_gate_up.ndim == 2 && w_down.ndim == 2 && w_gate_up.dim(0) == 2 * w_down.dim(1) &&
               w_gate_up.dim(1) == w_down.dim(0),
           "mlp: w_gate_up {} and w_down {} are not [2f, d] and [d, f]", w_gate_up.shape_str(), w_down.shape_str());
  const int64_t d = w_down.dim(0), f = w_down.dim(1), n = h.numel() / std::max<int64_t>(d, 1);
  KF_CHECK(h.dim(-1) == d && out.numel() == n * d && gate_up.numel() == n * 2 * f && ffn.numel() == n * f,
           "mlp: h {}, gate_up {}, ffn {}, out {} do not fit w_down {}", h.shape_str(), gate_up.shape_str(),
           ffn.shape_str(), out.shape_str(), w_down.shape_str());
  check_projection("mlp", ffn, w_down, x, norm_w, out);
}

void Backend::add_residual(const Tensor& x, const Tensor& y, const Tensor* norm_w, float eps, const Tensor& out) {
  if (tp_size() > 1) all_reduce(y);  // each rank holds a partial sum of y
  if (norm_w) add_rmsnorm(x, y, *norm_w, eps, out);
  else add(x, y);
}

void Backend::matmul_add_rmsnorm(const Tensor& in, const Tensor& w, const Tensor& x, const Tensor* norm_w, float eps,
                                 const Tensor& out) {
  check_projection("matmul_add_rmsnorm", in, w, x, norm_w, out);
  matmul(in, w, nullptr, out);
  add_residual(x, out, norm_w, eps, out);
}

void Backend::mlp(const Tensor& h, const Tensor& w_gate_up, const Tensor& w_down, const Tensor& gate_up,
                  const Tensor& ffn, const Tensor& x, const Tensor* norm_w, float eps, const Tensor& out) {
  check_mlp(h, w_gate_up, w_down, gate_up, ffn, x, norm_w, out);
  matmul(h, w_gate_up, nullptr, gate_up);
  silu_mul(gate_up, ffn);
  matmul_add_rmsnorm(ffn, w_down, x, norm_w, eps, out);
}

void Backend::replay(Graph& graph) {
  auto* g = dynamic_cast<CallGraph*>(&graph);
  KF_CHECK(g != nullptr, "{}: replay of a graph recorded by another backend", name());
  g->ops();
}

void Backend::form_tp_group(const std::vector<Backend*>& ranks) {
  fail("tensor parallelism: {} has no collectives ({} ranks asked)", name(), ranks.size());
}

void make_tp_group(const std::vector<Backend*>& ranks) {
  KF_CHECK(!ranks.empty(), "tensor parallelism: a group needs at least one rank");
  std::set<const Backend*> seen;
  std::set<int> gpus;
  for (const Backend* b : ranks) {
    KF_CHECK(b != nullptr && seen.insert(b).second, "tensor parallelism: a backend is named twice in one group");
    KF_CHECK(b->device() == ranks[0]->device(), "tensor parallelism: {} and {} cannot form one group", ranks[0]->name(),
             b->name());
    KF_CHECK(b->tp_size() == 1, "tensor parallelism: {} is already in a group", b->name());
    if (b->device() == Device::CUDA)
      KF_CHECK(gpus.insert(b->device_index()).second, "tensor parallelism: GPU {} is named twice in one group",
               b->device_index());
  }
  if (ranks.size() == 1) return;  // a group of one: all_reduce stays a no-op
  ranks[0]->form_tp_group(ranks);
}

void download_f32(Backend& be, const Tensor& src, float* dst, std::vector<uint16_t>& staging) {
  if (src.dtype == DType::F32) {
    be.download(dst, src);
    return;
  }
  KF_CHECK(src.dtype == DType::BF16, "download_f32: {} tensor, expected F32 or BF16", dtype_name(src.dtype));
  const size_t n = static_cast<size_t>(src.numel());
  if (staging.size() < n) staging.resize(n);
  be.download(staging.data(), src);
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(staging[i]);
}

}  // namespace kf

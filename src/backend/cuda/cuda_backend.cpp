// CudaBackend: the Backend interface on one NVIDIA GPU. bf16 activations and
// weights, fp32 accumulation; GEMMs through cuBLASLt, everything else through
// the kernels in this folder. All work goes to one stream the backend owns, so
// a decode step can be captured into a CUDA graph. Scratch (attention splits,
// page lists) grows on first use and is reused, so steady-state steps do not
// allocate.
//
// Devices: allocation binds the backend's GPU by itself; every other call
// (streams, events, cuBLASLt, graphs, kernel launches) runs on the calling
// thread's current device, which must be this backend's: a thread that drives
// it calls bind_thread() first (replicas and tensor-parallel ranks run one
// thread per backend). KINFER_CUDA_SYNC=1 also checks the binding at every op.
//
// Tensor parallelism: make_tp_group puts backends in one NCCL communicator
// (ncclCommInitAll); all_reduce is an in-place ncclAllReduce on the backend's
// stream, so decode graphs capture it.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_util.h"
#include "backend/cuda/op_profile.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/nccl.h"
#include "backend/cuda/op_args.h"
#include "backend/cuda/switches.h"

namespace kf {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// The kernels are built for sm_90a alone (CMAKE_CUDA_ARCHITECTURES).
static bool supported(const cudaDeviceProp& prop) { return prop.major == 9 && prop.minor == 0; }

bool cuda_device_supported(int device) {
  cudaDeviceProp prop{};
  if (device < 0 || device >= cuda_device_count() || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return supported(prop);
}

namespace {

using cuda::bf16_t;

using cuda::bptr;
using cuda::iptr;
using cuda::need;
using cuda::pool_of;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int dev) : dev_(dev) {
    device_index_ = dev;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      cudaGetLastError();
      fail("--device cuda: no usable NVIDIA GPU here ({}); use --device cpu",
           e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device visible");
    }
    KF_CHECK(dev >= 0 && dev < n, "CUDA device {} does not exist ({} visible)", dev, n);
    KF_CUDA(cudaSetDevice(dev));
    cudaDeviceProp prop{};
    KF_CUDA(cudaGetDeviceProperties(&prop, dev));
    num_sms_ = prop.multiProcessorCount;
    name_ = fmt::format("cuda:{} ({}, sm_{}{}, {} SMs)", dev, prop.name, prop.major, prop.minor, num_sms_);
    // Say so before the first launch fails.
    KF_CHECK(supported(prop), "{}: this kinfer has CUDA kernels for sm_90a (H100/H200) only; use --device cpu or "
             "rebuild for this GPU", name_);
    sw_ = cuda::Switches::from_env();  // first: a refused value fails before any resource is made
    KF_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    gemm_ = std::make_unique<cuda::Gemm>(*this, stream_, num_sms_, sw_.gemm_tune, sw_.gemm_cutlass);
    KF_CUDA(cudaDeviceGetAttribute(&max_smem_, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (!sw_.noted.empty()) name_ += " with " + sw_.noted;
    mlp_barrier_ = Buffer(DType::U8, {4}, *this);
    KF_CUDA(cudaMemsetAsync(mlp_barrier_.view().data, 0, 4, stream_));
  }
  ~CudaBackend() override {
    cudaSetDevice(dev_);
    if (stream_) cudaStreamSynchronize(stream_);
    gemm_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::CUDA; }
  void bind_thread() override { KF_CUDA(cudaSetDevice(dev_)); }
  // On this backend's GPU whatever GPU is current (replicas share a process).
  void* allocate(size_t bytes) override {
    KF_CUDA(cudaSetDevice(dev_));
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the error state of a failed allocation
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("out of GPU memory on cuda:{}: {:.2f} GB asked, {:.2f} GB free of {:.2f} GB ({})", dev_, bytes / 1e9,
           free_b / 1e9, total_b / 1e9, cudaGetErrorString(e));
    }
    return p;
  }
  Memory memory() const override {
    KF_CUDA(cudaSetDevice(dev_));
    size_t free_b = 0, total_b = 0;
    KF_CUDA(cudaMemGetInfo(&free_b, &total_b));
    return {static_cast<int64_t>(free_b), static_cast<int64_t>(total_b)};
  }
  void deallocate(void* p) noexcept override {
    if (!p) return;
    {
      std::lock_guard<std::mutex> lock(interleaved_mu_);
      interleaved_.erase(p);
    }
    cudaSetDevice(dev_);
    cudaFree(p);
  }
  std::string name() const override { return name_; }
  cudaStream_t stream() const { return stream_; }

  void upload(const Tensor& dst, const void* host) override {
    KF_CHECK(dst.device == Device::CUDA, "upload: destination is not a CUDA tensor");
    KF_CUDA(cudaMemcpyAsync(dst.data, host, dst.nbytes(), cudaMemcpyHostToDevice, stream_));
  }
  void download(void* host, const Tensor& src) override {
    download_async(host, src);
    sync("download");
  }
  void download_async(void* host, const Tensor& src) override {
    KF_CHECK(src.device == Device::CUDA, "download: source is not a CUDA tensor");
    KF_CUDA(cudaMemcpyAsync(host, src.data, src.nbytes(), cudaMemcpyDeviceToHost, stream_));
  }
  void synchronize() override { sync("synchronize"); }
  Allocator& pinned() override { return pinned_; }

  struct CudaEvent final : Event {
    cudaEvent_t e = nullptr;
    ~CudaEvent() override {
      if (e) cudaEventDestroy(e);
    }
  };
  std::unique_ptr<Event> make_event() override {
    check_bound("make_event");
    auto ev = std::make_unique<CudaEvent>();
    KF_CUDA(cudaEventCreate(&ev->e));
    return ev;
  }
  void record(Event& e) override { KF_CUDA(cudaEventRecord(static_cast<CudaEvent&>(e).e, stream_)); }
  void wait(Event& e) override {
    const cudaError_t err = cudaEventSynchronize(static_cast<CudaEvent&>(e).e);
    if (err != cudaSuccess) fail_fault("waiting for a step", err);
  }
  double ms_between(Event& a, Event& b) override {
    float ms = 0.f;
    KF_CUDA(cudaEventElapsedTime(&ms, static_cast<CudaEvent&>(a).e, static_cast<CudaEvent&>(b).e));
    return ms;
  }

  struct CudaGraph final : Graph {
    cudaGraphExec_t exec = nullptr;
    ~CudaGraph() override {
      if (exec) cudaGraphExecDestroy(exec);
    }
  };
  // Runs the ops once for real (scratch grows and GEMM plans are chosen
  // outside the capture), then records the same ops; the recording is not
  // executed now.
  std::unique_ptr<Graph> record(std::function<void()> ops) override {
    check_bound("graph recording");
    ops();
    cudaGraph_t graph = nullptr;
    KF_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    try {
      ops();
    } catch (...) {
      capturing_ = false;
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    capturing_ = false;
    KF_CUDA(cudaStreamEndCapture(stream_, &graph));
    auto g = std::make_unique<CudaGraph>();
    const cudaError_t e = cudaGraphInstantiate(&g->exec, graph, 0);
    cudaGraphDestroy(graph);
    KF_CUDA(e);
    return g;
  }
  void replay(Graph& graph) override {
    auto* g = dynamic_cast<CudaGraph*>(&graph);
    KF_CHECK(g != nullptr, "{}: replay of a graph recorded by another backend", name_);
    KF_CUDA(cudaGraphLaunch(g->exec, stream_));
    if (sw_.sync_checks) sync("a recorded decode step");
  }
  uint64_t scratch_epoch() const override { return scratch_generation_; }

  void fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi, const FillIndex& at) override {
    need(t, DType::BF16, "fill_uniform");
    cuda::fill_uniform(bptr(t), t.numel(), seed, lo, hi, stream_, t.ndim > 0 ? t.dim(-1) : 1, at.row0, at.col0,
                       at.full_cols);
  }

  void all_reduce(const Tensor& x) override {
    if (!nccl_) return;
    OpScope op(this, "all_reduce", [&] { return x.shape_str(); });
    cuda::nccl_all_reduce(*nccl_, x, stream_);
    op.done();
  }
  void abort_tp_group(const std::string& why) override {
    if (nccl_) cuda::nccl_abort(*nccl_, why);
  }

  void embed(const Tensor& table, const Tensor& ids, const Tensor& out) override {
    OpScope op(this, "embed", [&] { return fmt::format("ids {} table {}", ids.shape_str(), table.shape_str()); });
    need(table, DType::BF16, "embed table");
    need(ids, DType::I32, "embed ids");
    need(out, DType::BF16, "embed out");
    const int n = static_cast<int>(ids.numel()), d = static_cast<int>(table.dim(-1));
    KF_CHECK(out.numel() == static_cast<int64_t>(n) * d, "embed: out {} != [{}, {}]", out.shape_str(), n, d);
    cuda::embed(bptr(table), table.dim(0), iptr(ids), bptr(out), n, d, stream_);
    op.done();
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    need(x, DType::BF16, "matmul x");
    need(w, DType::BF16, "matmul w");
    KF_CHECK(y.dtype == DType::BF16 || y.dtype == DType::F32, "matmul: y must be BF16 or F32, got {}",
             dtype_name(y.dtype));
    need(y, y.dtype, "matmul y");
    KF_CHECK(w.ndim == 2, "matmul: w must be 2-D, got {}", w.shape_str());
    const int64_t k = w.dim(1), m = w.dim(0);  // in, out
    KF_CHECK(x.dim(-1) == k, "matmul: x {} does not match w {}", x.shape_str(), w.shape_str());
    const int64_t n = x.numel() / k;
    KF_CHECK(y.numel() == n * m, "matmul: y {} != [{}, {}]", y.shape_str(), n, m);
    if (bias) {
      need(*bias, DType::BF16, "matmul bias");
      KF_CHECK(bias->numel() == m, "matmul: bias {} != [{}]", bias->shape_str(), m);
      KF_CHECK(y.dtype == DType::BF16, "matmul: a bias needs a BF16 output");
    }
    if (n == 0) return;
    OpScope op(this, "matmul", [&] { return fmt::format("{}x{}, {} rows", m, k, n); });
    gemm_->run(x, w, bias, y, capturing_);
    op.done();
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override {
    OpScope op(this, "rmsnorm", [&] { return x.shape_str(); });
    need(x, DType::BF16, "rmsnorm x");
    need(weight, DType::BF16, "rmsnorm weight");
    need(y, DType::BF16, "rmsnorm y");
    const int64_t d = weight.numel();
    KF_CHECK(x.dim(-1) == d && y.numel() == x.numel(), "rmsnorm: x {}, weight {}, y {}", x.shape_str(),
             weight.shape_str(), y.shape_str());
    cuda::rmsnorm(bptr(x), bptr(weight), bptr(y), static_cast<int>(x.numel() / d), static_cast<int>(d), eps,
                  stream_);
    op.done();
  }

  void add(const Tensor& x, const Tensor& y) override {
    OpScope op(this, "add", [&] { return x.shape_str(); });
    need(x, DType::BF16, "add x");
    need(y, DType::BF16, "add y");
    KF_CHECK(x.numel() == y.numel(), "add: {} vs {}", x.shape_str(), y.shape_str());
    cuda::add(bptr(x), bptr(y), x.numel(), stream_);
    op.done();
  }

  void rope(const Tensor& x, const Tensor& positions, const RopeParams& p) override {
    need(x, DType::BF16, "rope x");
    need(positions, DType::I32, "rope positions");
    KF_CHECK(x.ndim == 3 && positions.numel() == x.dim(0), "rope: x {} positions {}", x.shape_str(),
             positions.shape_str());
    const int hd = static_cast<int>(x.dim(2));
    cuda::rope(bptr(x), iptr(positions), static_cast<int>(x.dim(0)), static_cast<int>(x.dim(1)), hd,
               p.rotary_dim > 0 ? p.rotary_dim : hd, p.inv_freq, stream_);
  }

  void add_rmsnorm(const Tensor& x, const Tensor& y, const Tensor& weight, float eps, const Tensor& out) override {
    OpScope op(this, "add_rmsnorm", [&] { return x.shape_str(); });
    need(x, DType::BF16, "add_rmsnorm x");
    need(y, DType::BF16, "add_rmsnorm y");
    need(weight, DType::BF16, "add_rmsnorm weight");
    need(out, DType::BF16, "add_rmsnorm out");
    const int64_t d = weight.numel();
    KF_CHECK(x.dim(-1) == d && y.numel() == x.numel() && out.numel() == x.numel() && x.data != out.data,
             "add_rmsnorm: x {}, y {}, weight {}, out {} (out may not alias x)", x.shape_str(), y.shape_str(),
             weight.shape_str(), out.shape_str());
    cuda::add_rmsnorm(bptr(x), bptr(y), bptr(weight), bptr(out), static_cast<int>(x.numel() / d),
                      static_cast<int>(d), eps, stream_);
    op.done();
  }

  void silu_mul(const Tensor& gate_up, const Tensor& out) override {
    OpScope op(this, "silu_mul", [&] { return gate_up.shape_str(); });
    need(gate_up, DType::BF16, "silu_mul gate_up");
    need(out, DType::BF16, "silu_mul out");
    const int64_t f = out.dim(-1);
    KF_CHECK(gate_up.numel() == 2 * out.numel() && gate_up.dim(-1) == 2 * f,
             "silu_mul: gate_up {} is not [rows, 2 x {}] for out {}", gate_up.shape_str(), f, out.shape_str());
    cuda::silu_mul(bptr(gate_up), bptr(out), out.numel(), f, stream_);
    op.done();
  }

  // Rows interleaved by 8 (cuda::interleave_gate_up), so the decode GEMM
  // ends in silu_mul (gemm_cutlass.h); mlp() knows them by address. In place
  // through a scratch copy, so the weights stay where they were allocated.
  Buffer pack_mlp_gate_up(Buffer w) override {
    const Tensor& t = w.view();
    if (!sw_.silu_epilogue || sw_.fused_mlp || t.dtype != DType::BF16 || t.ndim != 2 || t.dim(0) % 16 != 0)
      return pack_weight(std::move(w));
    {
      Buffer scratch(DType::BF16, {t.dim(0), t.dim(1)}, *this);
      cuda::interleave_gate_up(bptr(t), bptr(scratch.view()), t.dim(0) / 2, t.dim(1), stream_);
      KF_CUDA(cudaMemcpyAsync(t.data, scratch.view().data, t.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    }  // cudaFree waits for the copies
    std::lock_guard<std::mutex> lock(interleaved_mu_);
    interleaved_.insert(t.data);
    return w;
  }
  bool interleaved(const Tensor& w_gate_up) {
    std::lock_guard<std::mutex> lock(interleaved_mu_);
    return interleaved_.count(w_gate_up.data) != 0;
  }

  // With KINFER_MLP_FUSED=1, the fused kernel (mlp.cu) where its plan
  // applies (a decode batch of a model whose MLP weights fit in shared
  // memory); otherwise the three ops. Off by default: in a decode step it
  // measured no faster (docs/cuda.md "A fused decode MLP").
  void mlp(const Tensor& h, const Tensor& w_gate_up, const Tensor& w_down, const Tensor& gate_up, const Tensor& ffn,
           const Tensor& x, const Tensor* norm_w, float eps, const Tensor& out) override {
    check_mlp(h, w_gate_up, w_down, gate_up, ffn, x, norm_w, out);
    const int64_t d = w_down.dim(0), f = w_down.dim(1), n = d > 0 ? h.numel() / d : 0;
    if (interleaved(w_gate_up)) {
      // Decode batches: one GEMM with silu_mul in its epilogue; larger ones
      // cuBLASLt's GEMM, then silu_mul on the interleaved rows.
      need(ffn, DType::BF16, "mlp ffn");
      if (n > 0) {
        const bool epilogue = gemm_->runs_silu_mul(h, w_gate_up, ffn);
        OpScope op(this, "gate_up_silu_mul", [&] {
          return fmt::format("{}x{}, {} rows, {}", 2 * f, d, n, epilogue ? "silu_mul in the GEMM" : "then silu_mul");
        });
        if (epilogue) {
          gemm_->run_silu_mul(h, w_gate_up, ffn);
        } else {
          need(gate_up, DType::BF16, "mlp gate_up");
          gemm_->run(h, w_gate_up, nullptr, gate_up, capturing_);
          cuda::silu_mul_interleaved(bptr(gate_up), bptr(ffn), n * f, f, stream_);
        }
        op.done();
      }
      matmul_add_rmsnorm(ffn, w_down, x, norm_w, eps, out);
      return;
    }
    cuda::MlpPlan plan;
    if (sw_.fused_mlp && n > 0 && h.dtype == DType::BF16 && w_gate_up.dtype == DType::BF16 &&
        w_down.dtype == DType::BF16 && ffn.dtype == DType::BF16 && out.dtype == DType::BF16 &&
        ffn.data != h.data && ffn.data != out.data &&
        cuda::aligned16({h.data, w_gate_up.data, w_down.data, ffn.data, out.data}))
      plan = cuda::mlp_decode_plan(static_cast<int>(n), static_cast<int>(d), static_cast<int>(f), num_sms_,
                                   max_smem_);
    if (plan.grid == 0) {
      Backend::mlp(h, w_gate_up, w_down, gate_up, ffn, x, norm_w, eps, out);
      return;
    }
    {
      OpScope op(this, "mlp", [&] { return fmt::format("{} rows, d {}, f {}, fused", n, d, f); });
      // Sized for the most rows the kernel takes, so another batch size does not re-record graphs.
      float* partial = static_cast<float*>(
          grow(mlp_partial_, DType::F32, cuda::mlp_partial_floats(plan, cuda::kMlpMaxRows, static_cast<int>(d))));
      auto launch = [&](bool pdl) {
        return cuda::mlp_decode(plan, bptr(h), bptr(w_gate_up), bptr(w_down), bptr(ffn), partial, bptr(out),
                                static_cast<unsigned*>(mlp_barrier_.view().data), static_cast<int>(n),
                                static_cast<int>(d), static_cast<int>(f), pdl, stream_);
      };
      cudaError_t e = launch(mlp_pdl_);
      if (e != cudaSuccess && mlp_pdl_ && !capturing_) {  // a driver without PDL on cooperative launches
        cudaGetLastError();
        mlp_pdl_ = false;
        e = launch(false);
      }
      cuda::check(e, "mlp_decode_kernel");
      op.done();
    }
    add_residual(x, out, norm_w, eps, out);
  }

  // Decode-sized batches (<= kSplitKMaxRows rows) on one GPU: the GEMM's K
  // in slices (one strided batched GEMM, CUTLASS's or cuBLASLt's), fp32
  // partial products that the norm kernel adds, so no reduction kernel runs
  // between the GEMM and the norm and small projections fill more SMs.
  // KINFER_SPLIT_K=S forces S slices for every projection (0: never split).
  void matmul_add_rmsnorm(const Tensor& in, const Tensor& w, const Tensor& x, const Tensor* norm_w, float eps,
                          const Tensor& out) override {
    check_projection("matmul_add_rmsnorm", in, w, x, norm_w, out);
    const int64_t k = w.dim(1), d = w.dim(0), n = k > 0 ? in.numel() / k : 0;
    const int slices = sw_.split_k >= 0 ? sw_.split_k : (w.nbytes() <= kSplitKAutoBytes ? kSplitKAutoSlices : 0);
    const bool split = slices > 1 && tp_size() == 1 && n > 0 && n <= kSplitKMaxRows && k % (8 * slices) == 0 &&
                       d % 8 == 0 && in.dtype == DType::BF16 && w.dtype == DType::BF16 && x.dtype == DType::BF16 &&
                       out.dtype == DType::BF16 && (!norm_w || norm_w->dtype == DType::BF16) &&
                       cuda::aligned16({in.data, w.data, x.data, out.data, norm_w ? norm_w->data : nullptr});
    if (!split) {
      Backend::matmul_add_rmsnorm(in, w, x, norm_w, eps, out);
      return;
    }
    OpScope op(this, "matmul_add_rmsnorm", [&] { return fmt::format("{}x{}, {} rows, {} K slices", d, k, n, slices); });
    // Sized for the most rows, so another batch size does not re-record graphs.
    void* parts = grow(split_partial_, DType::F32, int64_t(slices) * kSplitKMaxRows * d);
    gemm_->run_split_k(in, w, slices, Tensor(parts, DType::F32, {slices, n, d}, Device::CUDA), capturing_);
    cuda::add_partials_rmsnorm(bptr(x), static_cast<const float*>(parts), slices, norm_w ? bptr(*norm_w) : nullptr,
                               bptr(out), static_cast<int>(n), static_cast<int>(d), eps, stream_);
    op.done();
  }

  void qkv_rope_write(const Tensor& qkv, const Tensor* q_norm, const Tensor* k_norm, float eps,
                      const Tensor& positions, const RopeParams& rope_p, const KvLayer& kv, const Tensor& slots,
                      const Tensor& q_out) override {
    launch_qkv(cuda::qkv_args(qkv, q_norm, k_norm, eps, positions, rope_p, kv, slots, q_out), qkv, kv);
  }

  // Both ops; where the fused sparse attention kernel serves the whole batch
  // it writes the page summaries (cuda::summaries_in_attention), so no
  // summary kernel runs between the two (KINFER_ATTN_SUMMARIES=0: it does).
  void qkv_attention(const Tensor& qkv, const Tensor* q_norm, const Tensor* k_norm, float eps,
                     const Tensor& positions, const RopeParams& rope_p, const KvLayer& kv, const Tensor& slots,
                     const Tensor& q, const AttnBatch& batch, const AttnPolicy& policy, float scale,
                     const Tensor& out, PageSelection* sel) override {
    cuda::QkvArgs qa = cuda::qkv_args(qkv, q_norm, k_norm, eps, positions, rope_p, kv, slots, q);
    cuda::AttnArgs a = cuda::attn_args(q, kv, batch, policy, scale, out, sel);
    a.summary_slots = qa.slots;
    qa.summaries = !(sw_.attn_summaries && qa.n == a.n_rows && cuda::summaries_in_attention(a));
    if (qa.summaries) a.summary_slots = nullptr;
    launch_qkv(qa, qkv, kv);
    launch_attention(a, q, kv, batch, policy);
  }

  void kv_write(const KvLayer& kv, const Tensor& k, const Tensor& v, const Tensor& slots) override {
    const cuda::KvPool pool = pool_of(kv);
    need(k, DType::BF16, "kv_write k");
    need(v, DType::BF16, "kv_write v");
    need(slots, DType::I32, "kv_write slots");
    KF_CHECK(k.ndim == 3 && k.shape == v.shape && k.dim(1) == pool.n_kv_heads && k.dim(2) == pool.head_dim,
             "kv_write: k {} v {} do not match pool {}", k.shape_str(), v.shape_str(), kv.k.shape_str());
    KF_CHECK(slots.numel() == k.dim(0), "kv_write: {} slots for {} rows", slots.numel(), k.dim(0));
    cuda::kv_write(pool, bptr(k), bptr(v), iptr(slots), static_cast<int>(k.dim(0)), stream_);
  }

  void kv_copy_pages(const KvLayer& kv, const Tensor& src, const Tensor& dst) override {
    const cuda::KvPool pool = pool_of(kv);
    need(src, DType::I32, "kv_copy_pages src");
    need(dst, DType::I32, "kv_copy_pages dst");
    KF_CHECK(src.numel() == dst.numel(), "kv_copy_pages: {} sources, {} destinations", src.numel(), dst.numel());
    cuda::kv_copy_pages(pool, iptr(src), iptr(dst), static_cast<int>(src.numel()), stream_);
  }

  void attention(const Tensor& q, const KvLayer& kv, const AttnBatch& batch, const AttnPolicy& policy,
                 float scale, const Tensor& out, PageSelection* sel) override {
    launch_attention(cuda::attn_args(q, kv, batch, policy, scale, out, sel), q, kv, batch, policy);
  }

  void sample(const Tensor& logits, const SampleArgs& a, const Tensor& tokens) override {
    OpScope op(this, "sample", [&] { return fmt::format("{} rows of {}", tokens.numel(), logits.shape_str()); });
    KF_CHECK(logits.device == Device::CUDA && (logits.dtype == DType::BF16 || logits.dtype == DType::F32) &&
                 logits.is_contiguous() && logits.ndim == 2,
             "sample: logits must be a contiguous [rows, vocab] BF16 or F32 CUDA tensor, got {} {}",
             dtype_name(logits.dtype), logits.shape_str());
    const int64_t m = tokens.numel(), vocab = logits.dim(1);
    need(tokens, DType::I32, "sample tokens");
    need(a.logit_row, DType::I32, "sample logit_row");
    need(a.forced, DType::I32, "sample forced");
    need(a.top_k, DType::I32, "sample top_k");
    need(a.temperature, DType::F32, "sample temperature");
    need(a.top_p, DType::F32, "sample top_p");
    need(a.min_p, DType::F32, "sample min_p");
    need(a.uniform, DType::F32, "sample uniform");
    for (const Tensor* t : {&a.logit_row, &a.forced, &a.top_k, &a.temperature, &a.top_p, &a.min_p, &a.uniform})
      KF_CHECK(t->numel() == m, "sample: {} values for {} rows", t->numel(), m);
    cuda::SampleRows r;
    r.logit_row = iptr(a.logit_row);
    r.forced = iptr(a.forced);
    r.temperature = static_cast<const float*>(a.temperature.data);
    r.top_k = iptr(a.top_k);
    r.top_p = static_cast<const float*>(a.top_p.data);
    r.min_p = static_cast<const float*>(a.min_p.data);
    r.uniform = static_cast<const float*>(a.uniform.data);
    uint32_t* scratch = static_cast<uint32_t*>(
        grow(sample_cand_, DType::I32, cuda::sample_scratch_words(static_cast<int>(m), static_cast<int>(vocab))));
    const uint64_t generation = scratch_generation_;
    uint32_t* arrived = static_cast<uint32_t*>(grow(sample_arrived_, DType::I32, m));
    if (scratch_generation_ != generation) KF_CUDA(cudaMemsetAsync(arrived, 0, m * sizeof(uint32_t), stream_));
    cuda::sample(logits.data, logits.dtype == DType::BF16, static_cast<int>(m), static_cast<int>(vocab), r,
                 iptr(tokens), scratch, arrived, num_sms_, stream_, sw_.sample_sub_chunks);
    op.done();
  }

  void apply_penalties(const Tensor& logits, const PenaltyArgs& a, const AttnBatch& batch,
                       const Tensor& token_pool) override {
    OpScope op(this, "apply_penalties", [&] { return logits.shape_str(); });
    need(logits, DType::F32, "apply_penalties logits");
    KF_CHECK(logits.ndim == 2, "apply_penalties: logits must be [rows, vocab], got {}", logits.shape_str());
    const int64_t m = logits.dim(0);
    for (const Tensor* t : {&a.seq, &a.prompt_len}) need(*t, DType::I32, "apply_penalties seq/prompt_len");
    for (const Tensor* t : {&a.repetition, &a.presence, &a.frequency}) need(*t, DType::F32, "apply_penalties penalty");
    for (const Tensor* t : {&a.seq, &a.prompt_len, &a.repetition, &a.presence, &a.frequency})
      KF_CHECK(t->numel() == m, "apply_penalties: {} values for {} rows", t->numel(), m);
    need(token_pool, DType::I32, "apply_penalties token_pool");
    KF_CHECK(token_pool.ndim == 2, "apply_penalties: token_pool must be [pages, page_size]");
    cuda::PenaltyArgs p;
    p.logits = static_cast<float*>(logits.data);
    p.rows = static_cast<int>(m);
    p.vocab = static_cast<int>(logits.dim(1));
    p.seq = iptr(a.seq);
    p.prompt_len = iptr(a.prompt_len);
    p.repetition = static_cast<const float*>(a.repetition.data);
    p.presence = static_cast<const float*>(a.presence.data);
    p.frequency = static_cast<const float*>(a.frequency.data);
    p.page_table = iptr(batch.page_table);
    p.ctx_len = iptr(batch.ctx_len);
    p.max_pages = batch.max_pages;
    p.token_pool = iptr(token_pool);
    p.page_size = static_cast<int>(token_pool.dim(1));
    p.bits = static_cast<uint32_t*>(grow(penalty_bits_, DType::I32, cuda::penalty_scratch_words(p.rows, p.vocab)));
    cuda::apply_penalties(p, stream_);
    op.done();
  }

  void resolve_tokens(const Tensor& ids, const Tensor& prev, const Tensor& slots, const Tensor& token_pool) override {
    OpScope op(this, "resolve_tokens", [&] { return ids.shape_str(); });
    need(ids, DType::I32, "resolve_tokens ids");
    need(prev, DType::I32, "resolve_tokens prev");
    need(slots, DType::I32, "resolve_tokens slots");
    need(token_pool, DType::I32, "resolve_tokens token_pool");
    KF_CHECK(slots.numel() == ids.numel(), "resolve_tokens: {} slots for {} rows", slots.numel(), ids.numel());
    cuda::resolve_tokens(iptr(ids), iptr(prev), iptr(slots), static_cast<int>(ids.numel()), iptr(token_pool),
                         token_pool.numel(), stream_);
    op.done();
  }

  void copy_rows(const Tensor& t, const Tensor& src, const Tensor& dst) override {
    OpScope op(this, "copy_rows", [&] { return t.shape_str(); });
    KF_CHECK(t.device == Device::CUDA && t.ndim == 2 && t.is_contiguous(), "copy_rows: t must be a 2-D CUDA tensor");
    need(src, DType::I32, "copy_rows src");
    need(dst, DType::I32, "copy_rows dst");
    KF_CHECK(src.numel() == dst.numel(), "copy_rows: {} sources, {} destinations", src.numel(), dst.numel());
    cuda::copy_rows(t.data, static_cast<int64_t>(dtype_bytes(t.dtype, t.dim(1))), iptr(src), iptr(dst),
                    static_cast<int>(src.numel()), stream_);
    op.done();
  }

 protected:
  void form_tp_group(const std::vector<Backend*>& ranks) override {
    std::vector<CudaBackend*> members;
    std::vector<int> devs;
    for (Backend* b : ranks) {
      auto* cb = dynamic_cast<CudaBackend*>(b);
      KF_CHECK(cb != nullptr, "tensor parallelism: {} cannot join a group of CUDA backends", b->name());
      members.push_back(cb);
      devs.push_back(cb->dev_);
    }
    std::vector<std::shared_ptr<cuda::NcclRank>> comms = cuda::nccl_group(devs);
    for (size_t i = 0; i < members.size(); ++i) {
      members[i]->nccl_ = comms[i];
      members[i]->tp_rank_ = static_cast<int>(i);
      members[i]->tp_size_ = static_cast<int>(members.size());
    }
    KF_CUDA(cudaSetDevice(dev_));  // ncclCommInitAll moved this thread's current device
  }

 private:

  // qkv_rope_write's launch, as its op.
  void launch_qkv(const cuda::QkvArgs& qa, const Tensor& qkv, const KvLayer& kv) {
    OpScope op(this, "qkv_rope_write", [&] { return fmt::format("qkv {} pool {}", qkv.shape_str(), kv.k.shape_str()); });
    cuda::qkv_rope_write(qa, stream_);
    op.done();
  }

  // attention's launch, as its op: grows the scratch this call needs.
  void launch_attention(const cuda::AttnArgs& a, const Tensor& q, const KvLayer& kv, const AttnBatch& batch,
                        const AttnPolicy& policy) {
    OpScope op(this, "attention", [&] {
      return fmt::format("{}, q {}, {} sequences x {} pages, pool {}{}", attn_kind_name(policy.kind), q.shape_str(),
                         batch.n_seqs, batch.max_pages, kv.k.shape_str(),
                         a.summary_slots ? ", with the page summaries" : "");
    });
    cuda::AttnArgs args = a;  // with this backend's switches
    args.stage_known = sw_.stage_known;
    args.bulk_dense = sw_.bulk_dense;
    args.decode_splits = sw_.decode_splits;
    args.sparse_warp = sw_.sparse_warp;
    const cuda::ScratchSize z = cuda::attention_scratch(args, num_sms_);
    cuda::AttnScratch s;
    s.part_acc = static_cast<float*>(grow(part_acc_, DType::F32, z.part_acc));
    s.part_ml = static_cast<float*>(grow(part_ml_, DType::F32, z.part_ml));
    s.list = static_cast<int32_t*>(grow(list_, DType::I32, z.list));
    s.list_count = static_cast<int32_t*>(grow(list_count_, DType::I32, z.list_count));
    s.list_mask = static_cast<uint32_t*>(grow(list_mask_, DType::I32, z.list_mask));
    s.keys = static_cast<uint32_t*>(grow(keys_, DType::I32, z.keys));
    cuda::attention(args, s, num_sms_, stream_);
    op.done();
  }

  // Throws when the calling thread's current device is not this backend's.
  void check_bound(const char* what) const {
    int cur = -1;
    KF_CUDA(cudaGetDevice(&cur));
    KF_CHECK(cur == dev_, "{} on {} from a thread bound to GPU {}: call Backend::bind_thread() first", what, name_,
             cur);
  }

  // Scratch that only grows (the first steps allocate, later ones reuse). A
  // reallocation moves the scratch, so recorded graphs are stale after it.
  void* grow(Buffer& b, DType t, int64_t n) {
    if (n <= 0) return b.empty() ? nullptr : b.view().data;
    if (b.empty() || b.view().numel() < n) {
      KF_CHECK(!capturing_, "CUDA graph capture: scratch must not grow while recording (run the ops once first)");
      b = Buffer(t, {n}, *this);
      ++scratch_generation_;
    }
    return b.view().data;
  }

 public:
  // Op timing for `kinfer bench decode --profile` (op_profile.h).
  void set_profiling(bool on) { profile_.on = on; }
  std::string profile_json() { return profile_.json(stream_); }

 private:
  // Around every op: CUDA events when profiling (bench decode --profile), and
  // with KINFER_CUDA_SYNC=1 a wait for the device once the op is issued, so a
  // fault is reported with this op's name and shapes, not by a later library
  // call. `describe` (the shapes) only runs when one of them is on.
  template <typename Describe>
  struct OpScope {
    CudaBackend* be;
    const char* op;
    Describe describe;
    int idx = -1;
    OpScope(CudaBackend* b, const char* name, Describe d) : be(b), op(name), describe(std::move(d)) {
      if (be->sw_.sync_checks) be->check_bound(op);
      if (!be->profile_.on || be->capturing_) return;
      idx = be->profile_.begin(fmt::format("{} {}", op, describe()), be->stream_);
    }
    // Call when the op's launches are issued.
    void done() {
      if (idx >= 0) be->profile_.end(idx, be->stream_);
      idx = -1;
      if (!be->sw_.sync_checks || be->capturing_) return;
      const cudaError_t e = cudaStreamSynchronize(be->stream_);
      if (e != cudaSuccess) be->fail_fault(fmt::format("{} ({})", op, describe()), e);
    }
    ~OpScope() {
      if (idx >= 0) be->profile_.end(idx, be->stream_);
    }
    OpScope(const OpScope&) = delete;
    OpScope& operator=(const OpScope&) = delete;
  };
  [[noreturn]] void fail_fault(const std::string& where, cudaError_t e) {
    cudaGetLastError();
    fail("CUDA fault in {} on {}: {} (kinfer cannot continue on this GPU; KINFER_CUDA_SYNC=1 names the op that "
         "caused it)", where, name_, cudaGetErrorString(e));
  }
  void sync(const char* what) {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) fail_fault(what, e);
  }

  cuda::OpProfile profile_;

  int dev_ = 0;
  int num_sms_ = 0;
  int max_smem_ = 0;        // opt-in shared memory per block
  static constexpr int kSplitKMaxRows = 64;
  // By default a projection is split in 4 when its weights are at most 16 MiB
  // (H200: Qwen3-0.6B's o and down 2-3% faster steps; 1.7B's o neutral; the
  // larger ones of 1.7B-8B neutral to 1% slower split; docs/cuda.md).
  static constexpr size_t kSplitKAutoBytes = size_t(16) << 20;
  static constexpr int kSplitKAutoSlices = 4;
  cuda::Switches sw_;       // from the environment (switches.h)
  Buffer split_partial_;    // matmul_add_rmsnorm()'s fp32 split-K partial products (grows)
  std::mutex interleaved_mu_;  // deallocate() may run on another thread
  std::unordered_set<const void*> interleaved_;  // gate|up matrices from pack_mlp_gate_up
  bool mlp_pdl_ = true;     // ... launched with programmatic dependent launch
  Buffer mlp_barrier_;      // the fused MLP's grid-barrier counter (4 bytes, zeroed)
  Buffer mlp_partial_;      // ... and its partial sums (grows)
  uint64_t scratch_generation_ = 0;
  bool capturing_ = false;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::Gemm> gemm_;  // cuBLASLt plans (gemm.cpp)
  Buffer part_acc_, part_ml_, list_, list_count_, list_mask_, keys_, penalty_bits_, sample_cand_,
      sample_arrived_;  // sample(): a counter per row, zero between calls
  std::shared_ptr<cuda::NcclRank> nccl_;  // tensor parallelism: this rank's communicator

  // Page-locked host memory (cudaMallocHost) for the executor's overlapped copies.
  struct PinnedAllocator final : Allocator {
    Device device() const override { return Device::CPU; }
    void* allocate(size_t bytes) override {
      void* p = nullptr;
      const cudaError_t e = cudaMallocHost(&p, bytes);
      if (e != cudaSuccess) {
        cudaGetLastError();
        fail("cudaMallocHost of {} bytes failed: {}", bytes, cudaGetErrorString(e));
      }
      return p;
    }
    void deallocate(void* p) noexcept override {
      if (p) cudaFreeHost(p);
    }
  };
  PinnedAllocator pinned_;

 public:
  void token_logprobs(const Tensor& logits, const Tensor& rows, const Tensor& targets, const Tensor& sampled, int k,
                      const Tensor& values, const Tensor& ids) override {
    OpScope op(this, "token_logprobs", [&] { return fmt::format("{} rows of {}", rows.numel(), logits.shape_str()); });
    KF_CHECK(logits.device == Device::CUDA && (logits.dtype == DType::BF16 || logits.dtype == DType::F32) &&
                 logits.is_contiguous() && logits.ndim == 2,
             "token_logprobs: logits must be a contiguous [rows, vocab] BF16 or F32 CUDA tensor, got {} {}",
             dtype_name(logits.dtype), logits.shape_str());
    const int64_t m = rows.numel();
    need(rows, DType::I32, "token_logprobs rows");
    need(targets, DType::I32, "token_logprobs targets");
    need(sampled, DType::I32, "token_logprobs sampled");
    need(values, DType::F32, "token_logprobs values");
    need(ids, DType::I32, "token_logprobs ids");
    KF_CHECK(targets.numel() == m && values.numel() == m * (k + 1) && ids.numel() == m * (k + 1),
             "token_logprobs: {} entries need targets [{}] and values/ids [{}, {}]", m, m, m, k + 1);
    cuda::token_logprobs(logits.data, logits.dtype == DType::BF16, static_cast<int>(logits.dim(1)), iptr(rows),
                         iptr(targets), iptr(sampled), static_cast<int>(m), k, static_cast<float*>(values.data),
                         iptr(ids), stream_);
    op.done();
  }
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

void cuda_profile(Backend& b, bool on) {
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  KF_CHECK(cb != nullptr, "not a CUDA backend: {}", b.name());
  cb->set_profiling(on);
}

std::string cuda_profile_json(Backend& b) {
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  KF_CHECK(cb != nullptr, "not a CUDA backend: {}", b.name());
  return cb->profile_json();
}

void* stream_of(Backend& b) {
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  KF_CHECK(cb != nullptr, "not a CUDA backend: {}", b.name());
  return cb->stream();
}

}  // namespace kf

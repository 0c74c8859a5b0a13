// CudaBackend: the Backend interface on one NVIDIA GPU. bf16 activations and
// weights, fp32 accumulation; GEMMs through cuBLASLt, everything else through
// the kernels in this folder. All work goes to one stream the backend owns, so
// a decode step can be captured into a CUDA graph. Scratch (attention splits,
// page lists) grows on first use and is reused, so steady-state steps do not
// allocate.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_util.h"
#include "backend/cuda/kernels.h"

namespace kf {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

namespace {

using cuda::bf16_t;

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt error in {}: status {}", what, static_cast<int>(s));
}

void need(const Tensor& t, DType dt, const char* what) {
  KF_CHECK(t.device == Device::CUDA, "{}: expected a CUDA tensor", what);
  KF_CHECK(t.dtype == dt, "{}: expected {}, got {}", what, dtype_name(dt), dtype_name(t.dtype));
  KF_CHECK(t.is_contiguous(), "{}: must be contiguous ({})", what, t.shape_str());
}

bf16_t* bptr(const Tensor& t) { return static_cast<bf16_t*>(t.data); }
int32_t* iptr(const Tensor& t) { return static_cast<int32_t*>(t.data); }

// Largest power of two (<= 256) that divides every address.
int alignment(std::initializer_list<const void*> ps) {
  uintptr_t bits = 256;
  for (const void* p : ps)
    if (p) bits |= reinterpret_cast<uintptr_t>(p);
  return static_cast<int>(bits & (~bits + 1));
}

// One cached cuBLASLt plan per GEMM shape: descriptors and the chosen algorithm.
struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

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
    KF_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const char* tune = std::getenv("KINFER_GEMM_TUNE");
    tune_gemms_ = tune && std::string(tune) == "1";
    check_lt(cublasLtCreate(&lt_), "cublasLtCreate");
    lt_ws_ = Buffer(DType::U8, {kLtWorkspace}, *this);
  }
  ~CudaBackend() override {
    if (stream_) cudaStreamSynchronize(stream_);
    destroy_graphs();
    plans_.clear();
    if (lt_) cublasLtDestroy(lt_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::CUDA; }
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
    KF_CHECK(src.device == Device::CUDA, "download: source is not a CUDA tensor");
    KF_CUDA(cudaMemcpyAsync(host, src.data, src.nbytes(), cudaMemcpyDeviceToHost, stream_));
    KF_CUDA(cudaStreamSynchronize(stream_));
  }
  void synchronize() override { KF_CUDA(cudaStreamSynchronize(stream_)); }

  void replay(uint64_t key, const std::function<void()>& ops) override {
    auto it = graphs_.find(key);
    if (it != graphs_.end() && it->second.generation == scratch_generation_) {
      KF_CUDA(cudaGraphLaunch(it->second.exec, stream_));
      return;
    }
    if (it != graphs_.end()) {
      cudaGraphExecDestroy(it->second.exec);
      graphs_.erase(it);
    }
    // Run once for real (scratch grows and GEMM plans are chosen outside the
    // capture), then record the same ops; the recording is not executed now.
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
    Graph g;
    g.generation = scratch_generation_;
    const cudaError_t e = cudaGraphInstantiate(&g.exec, graph, 0);
    cudaGraphDestroy(graph);
    KF_CUDA(e);
    graphs_[key] = g;
  }
  void clear_graphs() override { destroy_graphs(); }

  void fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi) override {
    need(t, DType::BF16, "fill_uniform");
    cuda::fill_uniform(bptr(t), t.numel(), seed, lo, hi, stream_);
  }

  void embed(const Tensor& table, const Tensor& ids, const Tensor& out) override {
    const ProfScope prof(this, "embed");
    need(table, DType::BF16, "embed table");
    need(ids, DType::I32, "embed ids");
    need(out, DType::BF16, "embed out");
    const int n = static_cast<int>(ids.numel()), d = static_cast<int>(table.dim(-1));
    KF_CHECK(out.numel() == static_cast<int64_t>(n) * d, "embed: out {} != [{}, {}]", out.shape_str(), n, d);
    cuda::embed(bptr(table), iptr(ids), bptr(out), n, d, stream_);
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    need(x, DType::BF16, "matmul x");
    need(w, DType::BF16, "matmul w");
    need(y, DType::BF16, "matmul y");
    KF_CHECK(w.ndim == 2, "matmul: w must be 2-D, got {}", w.shape_str());
    const int64_t k = w.dim(1), m = w.dim(0);  // in, out
    KF_CHECK(x.dim(-1) == k, "matmul: x {} does not match w {}", x.shape_str(), w.shape_str());
    const int64_t n = x.numel() / k;
    KF_CHECK(y.numel() == n * m, "matmul: y {} != [{}, {}]", y.shape_str(), n, m);
    if (bias) {
      need(*bias, DType::BF16, "matmul bias");
      KF_CHECK(bias->numel() == m, "matmul: bias {} != [{}]", bias->shape_str(), m);
    }
    if (n == 0) return;
    const int al = alignment({x.data, w.data, y.data, bias ? bias->data : nullptr});
    const ProfScope prof(this, fmt::format("matmul {}x{}", m, k));
    GemmPlan& p = plan(m, n, k, bias, al, x, w, y);
    check_lt(run_gemm(p, bias, x, w, y, p.algo), "cublasLtMatmul");
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override {
    const ProfScope prof(this, "rmsnorm");
    need(x, DType::BF16, "rmsnorm x");
    need(weight, DType::BF16, "rmsnorm weight");
    need(y, DType::BF16, "rmsnorm y");
    const int64_t d = weight.numel();
    KF_CHECK(x.dim(-1) == d && y.numel() == x.numel(), "rmsnorm: x {}, weight {}, y {}", x.shape_str(),
             weight.shape_str(), y.shape_str());
    cuda::rmsnorm(bptr(x), bptr(weight), bptr(y), static_cast<int>(x.numel() / d), static_cast<int>(d), eps,
                  stream_);
  }

  void add(const Tensor& x, const Tensor& y) override {
    const ProfScope prof(this, "add");
    need(x, DType::BF16, "add x");
    need(y, DType::BF16, "add y");
    KF_CHECK(x.numel() == y.numel(), "add: {} vs {}", x.shape_str(), y.shape_str());
    cuda::add(bptr(x), bptr(y), x.numel(), stream_);
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
    const ProfScope prof(this, "add_rmsnorm");
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
  }

  void silu_mul(const Tensor& gate_up, const Tensor& out) override {
    const ProfScope prof(this, "silu_mul");
    need(gate_up, DType::BF16, "silu_mul gate_up");
    need(out, DType::BF16, "silu_mul out");
    const int64_t f = out.dim(-1);
    KF_CHECK(gate_up.numel() == 2 * out.numel() && gate_up.dim(-1) == 2 * f,
             "silu_mul: gate_up {} is not [rows, 2 x {}] for out {}", gate_up.shape_str(), f, out.shape_str());
    cuda::silu_mul(bptr(gate_up), bptr(out), out.numel(), f, stream_);
  }

  void qkv_rope_write(const Tensor& qkv, const Tensor* q_norm, const Tensor* k_norm, float eps,
                      const Tensor& positions, const RopeParams& rope_p, const KvLayer& kv, const Tensor& slots,
                      const Tensor& q_out) override {
    const ProfScope prof(this, "qkv_rope_write");
    const cuda::KvPool pool = pool_of(kv);
    need(qkv, DType::BF16, "qkv_rope_write qkv");
    need(q_out, DType::BF16, "qkv_rope_write q_out");
    need(positions, DType::I32, "qkv_rope_write positions");
    need(slots, DType::I32, "qkv_rope_write slots");
    KF_CHECK(q_out.ndim == 3 && q_out.dim(2) == pool.head_dim, "qkv_rope_write: q_out {} for pool {}",
             q_out.shape_str(), kv.k.shape_str());
    const int64_t n = q_out.dim(0), hq = q_out.dim(1), width = (hq + 2 * pool.n_kv_heads) * pool.head_dim;
    KF_CHECK(qkv.numel() == n * width && qkv.dim(-1) == width, "qkv_rope_write: qkv {} is not [{}, {}]",
             qkv.shape_str(), n, width);
    KF_CHECK(positions.numel() == n && slots.numel() == n, "qkv_rope_write: {} positions, {} slots for {} rows",
             positions.numel(), slots.numel(), n);
    for (const Tensor* w : {q_norm, k_norm})
      if (w) {
        need(*w, DType::BF16, "qkv_rope_write norm weight");
        KF_CHECK(w->numel() == pool.head_dim, "qkv_rope_write: norm weight {} for head_dim {}", w->shape_str(),
                 pool.head_dim);
      }
    cuda::qkv_rope_write(bptr(qkv), q_norm ? bptr(*q_norm) : nullptr, k_norm ? bptr(*k_norm) : nullptr, eps,
                         iptr(positions), rope_p.inv_freq, rope_p.rotary_dim > 0 ? rope_p.rotary_dim : pool.head_dim,
                         pool, iptr(slots), bptr(q_out), static_cast<int>(n), static_cast<int>(hq), stream_);
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
    const ProfScope prof(this, std::string("attention ") + attn_kind_name(policy.kind));
    cuda::AttnArgs a;
    a.kv = pool_of(kv);
    need(q, DType::BF16, "attention q");
    need(out, DType::BF16, "attention out");
    KF_CHECK(q.ndim == 3 && out.shape == q.shape && q.dim(2) == a.kv.head_dim,
             "attention: q {} out {} pool {}", q.shape_str(), out.shape_str(), kv.k.shape_str());
    KF_CHECK(q.dim(1) % a.kv.n_kv_heads == 0, "attention: {} query heads, {} KV heads", q.dim(1),
             a.kv.n_kv_heads);
    KF_CHECK(policy.local_pages >= 1 && policy.topk_pages >= 0, "attention: bad policy (local {}, topk {})",
             policy.local_pages, policy.topk_pages);
    need(batch.q_start, DType::I32, "attention q_start");
    need(batch.ctx_len, DType::I32, "attention ctx_len");
    need(batch.page_table, DType::I32, "attention page_table");
    KF_CHECK(batch.q_start.numel() == batch.n_seqs + 1 && batch.ctx_len.numel() == batch.n_seqs &&
                 batch.page_table.numel() == static_cast<int64_t>(batch.n_seqs) * batch.max_pages,
             "attention: batch tensors do not match {} sequences x {} pages", batch.n_seqs, batch.max_pages);
    cuda::check_attention_shape(a.kv.head_dim, static_cast<int>(q.dim(1) / a.kv.n_kv_heads));
    a.q = bptr(q);
    a.out = bptr(out);
    a.q_start = iptr(batch.q_start);
    a.ctx_len = iptr(batch.ctx_len);
    a.page_table = iptr(batch.page_table);
    a.n_seqs = batch.n_seqs;
    a.max_pages = batch.max_pages;
    a.n_rows = static_cast<int>(q.dim(0));
    a.n_heads = static_cast<int>(q.dim(1));
    a.kind = static_cast<int>(policy.kind);
    a.local_pages = policy.local_pages;
    a.topk_pages = policy.topk_pages;
    a.scale = scale;
    if (sel) {
      const int64_t pairs = static_cast<int64_t>(batch.n_seqs) * a.kv.n_kv_heads;
      need(sel->pages, DType::I32, "PageSelection pages");
      need(sel->counts, DType::I32, "PageSelection counts");
      KF_CHECK(sel->pages.numel() == pairs * batch.max_pages && sel->counts.numel() == pairs,
               "PageSelection: pages {} counts {} for {} sequences", sel->pages.shape_str(),
               sel->counts.shape_str(), batch.n_seqs);
      a.sel_pages = iptr(sel->pages);
      a.sel_counts = iptr(sel->counts);
    }
    const cuda::ScratchSize z = cuda::attention_scratch(a, num_sms_);
    cuda::AttnScratch s;
    s.part_acc = static_cast<float*>(grow(part_acc_, DType::F32, z.part_acc));
    s.part_ml = static_cast<float*>(grow(part_ml_, DType::F32, z.part_ml));
    s.list = static_cast<int32_t*>(grow(list_, DType::I32, z.list));
    s.list_count = static_cast<int32_t*>(grow(list_count_, DType::I32, z.list_count));
    s.list_mask = static_cast<uint32_t*>(grow(list_mask_, DType::I32, z.list_mask));
    s.keys = static_cast<uint32_t*>(grow(keys_, DType::I32, z.keys));
    cuda::attention(a, s, num_sms_, stream_);
  }

  void sample(const Tensor& logits, const SampleArgs& a, const Tensor& tokens) override {
    const ProfScope prof(this, "sample");
    KF_CHECK(logits.device == Device::CUDA && (logits.dtype == DType::BF16 || logits.dtype == DType::F32) &&
                 logits.is_contiguous() && logits.ndim == 2,
             "sample: logits must be a contiguous [m, vocab] BF16 or F32 CUDA tensor, got {} {}",
             dtype_name(logits.dtype), logits.shape_str());
    const int64_t m = logits.dim(0), vocab = logits.dim(1);
    need(tokens, DType::I32, "sample tokens");
    need(a.top_k, DType::I32, "sample top_k");
    need(a.temperature, DType::F32, "sample temperature");
    need(a.top_p, DType::F32, "sample top_p");
    need(a.min_p, DType::F32, "sample min_p");
    need(a.uniform, DType::F32, "sample uniform");
    for (const Tensor* t : {&tokens, &a.top_k, &a.temperature, &a.top_p, &a.min_p, &a.uniform})
      KF_CHECK(t->numel() == m, "sample: {} values for {} rows", t->numel(), m);
    cuda::SampleRows r;
    r.temperature = static_cast<const float*>(a.temperature.data);
    r.top_k = iptr(a.top_k);
    r.top_p = static_cast<const float*>(a.top_p.data);
    r.min_p = static_cast<const float*>(a.min_p.data);
    r.uniform = static_cast<const float*>(a.uniform.data);
    cuda::sample(logits.data, logits.dtype == DType::BF16, static_cast<int>(m), static_cast<int>(vocab), r,
                 iptr(tokens), stream_);
  }

 private:
  static constexpr int64_t kLtWorkspace = 32 << 20;

  cuda::KvPool pool_of(const KvLayer& kv) const {
    need(kv.k, DType::BF16, "kv.k");
    need(kv.v, DType::BF16, "kv.v");
    KF_CHECK(kv.k.ndim == 4 && kv.v.shape == kv.k.shape, "KV pool: k {} v {}", kv.k.shape_str(), kv.v.shape_str());
    KF_CHECK(kv.summary.device == Device::CUDA &&
                 (kv.summary.dtype == DType::F32 || kv.summary.dtype == DType::BF16),
             "KV pool: summary must be a CUDA F32 or BF16 tensor");
    cuda::KvPool p;
    p.k = bptr(kv.k);
    p.v = bptr(kv.v);
    p.summary = kv.summary.data;
    p.summary_bf16 = kv.summary.dtype == DType::BF16;
    p.n_pages = static_cast<int>(kv.k.dim(0));
    p.n_kv_heads = static_cast<int>(kv.k.dim(1));
    p.page_size = static_cast<int>(kv.k.dim(2));
    p.head_dim = static_cast<int>(kv.k.dim(3));
    KF_CHECK(kv.summary.numel() == static_cast<int64_t>(p.n_pages) * p.n_kv_heads * p.head_dim,
             "KV pool: summary {} does not match {}", kv.summary.shape_str(), kv.k.shape_str());
    return p;
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

  // Column-major view: Y[m, n] = W^T[m, k] * X[k, n]; row-major w [m, k] is col-major [k, m].
  cublasStatus_t run_gemm(GemmPlan& p, const Tensor* bias, const Tensor& x, const Tensor& w, const Tensor& y,
                          const cublasLtMatmulAlgo_t& algo) {
    if (bias) {
      const cublasStatus_t st =
          cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias->data, sizeof(void*));
      if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    const float alpha = 1.f, beta = 0.f;
    return cublasLtMatmul(lt_, p.desc, &alpha, w.data, p.a, x.data, p.b, &beta, y.data, p.c, y.data, p.c, &algo,
                          lt_ws_.view().data, kLtWorkspace, stream_);
  }

  // The plan for a GEMM shape: cuBLASLt's first heuristic candidate. With
  // KINFER_GEMM_TUNE=1 the first call of a shape times the top 8 candidates
  // on the real operands and keeps the fastest (not yet measured on a GPU).
  GemmPlan& plan(int64_t m, int64_t n, int64_t k, const Tensor* bias_t, int align, const Tensor& x, const Tensor& w,
                 const Tensor& y) {
    const bool bias = bias_t != nullptr;
    const auto key = std::make_tuple(m, n, k, bias, align);
    auto it = plans_.find(key);
    if (it != plans_.end()) return *it->second;
    auto p = std::make_unique<GemmPlan>();
    check_lt(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "transa");
    check_lt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "transb");
    if (bias) {
      const cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
      const cudaDataType_t bt = CUDA_R_16BF;
      check_lt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep), "epilogue");
      check_lt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt),
               "bias type");
    }
    check_lt(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, k, m, k), "layout w");
    check_lt(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, k, n, k), "layout x");
    check_lt(cublasLtMatrixLayoutCreate(&p->c, CUDA_R_16BF, m, n, m), "layout y");
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference");
    const uint64_t ws = kLtWorkspace;
    const uint32_t al = static_cast<uint32_t>(align);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al);
    constexpr int kCandidates = 8;
    cublasLtMatmulHeuristicResult_t res[kCandidates]{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(lt_, p->desc, p->a, p->b, p->c, p->c, pref, tune_gemms_ ? kCandidates : 1, res, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    check_lt(st, "cublasLtMatmulAlgoGetHeuristic");
    KF_CHECK(found > 0, "cuBLASLt found no algorithm for a {}x{}x{} bf16 GEMM (alignment {})", m, n, k, align);
    p->algo = res[0].algo;
    if (found > 1 && !capturing_) {  // time each candidate: 2 warm-up and 5 timed runs
      cudaEvent_t a, b;
      KF_CUDA(cudaEventCreate(&a));
      KF_CUDA(cudaEventCreate(&b));
      float best = 1e30f;
      for (int i = 0; i < found; ++i) {
        bool ok = true;
        for (int r = 0; r < 2 && ok; ++r) ok = run_gemm(*p, bias_t, x, w, y, res[i].algo) == CUBLAS_STATUS_SUCCESS;
        KF_CUDA(cudaEventRecord(a, stream_));
        for (int r = 0; r < 5 && ok; ++r) ok = run_gemm(*p, bias_t, x, w, y, res[i].algo) == CUBLAS_STATUS_SUCCESS;
        KF_CUDA(cudaEventRecord(b, stream_));
        KF_CUDA(cudaEventSynchronize(b));
        float ms = 0.f;
        KF_CUDA(cudaEventElapsedTime(&ms, a, b));
        if (ok && ms < best) {
          best = ms;
          p->algo = res[i].algo;
        }
      }
      cudaEventDestroy(a);
      cudaEventDestroy(b);
    }
    return *plans_.emplace(key, std::move(p)).first->second;
  }

 public:
  // Op timing for `kinfer bench decode --profile`: CUDA events around every
  // op (outside graph recording), summed per op name by profile_json().
  void set_profiling(bool on) { profiling_ = on; }
  std::string profile_json() {
    KF_CUDA(cudaStreamSynchronize(stream_));
    std::map<std::string, std::pair<double, int>> sum;
    for (Span& sp : spans_) {
      float ms = 0.f;
      KF_CUDA(cudaEventElapsedTime(&ms, sp.a, sp.b));
      sum[sp.name].first += ms;
      sum[sp.name].second += 1;
      cudaEventDestroy(sp.a);
      cudaEventDestroy(sp.b);
    }
    spans_.clear();
    std::string out = "{";
    for (const auto& [name, v] : sum)
      out += fmt::format("{}\"{}\": {{\"ms\": {:.4f}, \"calls\": {}}}", out.size() > 1 ? ", " : "", name, v.first,
                         v.second);
    return out + "}";
  }

 private:
  struct Span {
    std::string name;
    cudaEvent_t a = nullptr, b = nullptr;
  };
  struct ProfScope {
    CudaBackend* be;
    int idx = -1;
    ProfScope(CudaBackend* b, std::string name) : be(b) {
      if (!be->profiling_ || be->capturing_) return;
      Span sp{std::move(name)};
      cudaEventCreate(&sp.a);
      cudaEventCreate(&sp.b);
      cudaEventRecord(sp.a, be->stream_);
      be->spans_.push_back(sp);
      idx = static_cast<int>(be->spans_.size()) - 1;
    }
    ~ProfScope() {
      if (idx >= 0) cudaEventRecord(be->spans_[idx].b, be->stream_);
    }
    ProfScope(const ProfScope&) = delete;
    ProfScope& operator=(const ProfScope&) = delete;
  };
  bool profiling_ = false;
  bool tune_gemms_ = false;
  std::vector<Span> spans_;

  // One recorded decode step: replayable while no scratch was reallocated since.
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    uint64_t generation = 0;
  };
  void destroy_graphs() {
    for (auto& [key, g] : graphs_)
      if (g.exec) cudaGraphExecDestroy(g.exec);
    graphs_.clear();
  }

  int dev_ = 0;
  int num_sms_ = 0;
  std::map<uint64_t, Graph> graphs_;
  uint64_t scratch_generation_ = 0;
  bool capturing_ = false;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  Buffer lt_ws_;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool, int>, std::unique_ptr<GemmPlan>> plans_;
  Buffer part_acc_, part_ml_, list_, list_count_, list_mask_, keys_;

 public:
  void token_logprobs(const Tensor& logits, const Tensor& rows, const Tensor& targets, const Tensor& sampled, int k,
                      const Tensor& values, const Tensor& ids) override {
    const ProfScope prof(this, "token_logprobs");
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
  }
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

void cuda_fill_uniform(const Tensor& t, uint64_t seed, float lo, float hi) {
  KF_CHECK(t.device == Device::CUDA && t.dtype == DType::BF16, "cuda_fill_uniform: expected a CUDA BF16 tensor");
  cuda::fill_uniform(bptr(t), t.numel(), seed, lo, hi, nullptr);
  KF_CUDA(cudaDeviceSynchronize());
}

CudaTimer::CudaTimer() {
  KF_CUDA(cudaEventCreate(reinterpret_cast<cudaEvent_t*>(&start_)));
  KF_CUDA(cudaEventCreate(reinterpret_cast<cudaEvent_t*>(&stop_)));
}
CudaTimer::~CudaTimer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}
void CudaTimer::start(Backend& b) { KF_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(start_), static_cast<cudaStream_t>(stream_of(b)))); }
double CudaTimer::stop_ms(Backend& b) {
  KF_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(stop_), static_cast<cudaStream_t>(stream_of(b))));
  KF_CUDA(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)));
  float ms = 0.f;
  KF_CUDA(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)));
  return ms;
}

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

double cuda_copy_ms(const Tensor& dst, const Tensor& src, int iters) {
  KF_CHECK(dst.device == Device::CUDA && src.device == Device::CUDA && dst.nbytes() == src.nbytes(),
           "cuda_copy_ms: two CUDA tensors of equal size");
  cudaEvent_t a, b;
  KF_CUDA(cudaEventCreate(&a));
  KF_CUDA(cudaEventCreate(&b));
  KF_CUDA(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, nullptr));  // warm-up
  KF_CUDA(cudaEventRecord(a, nullptr));
  for (int i = 0; i < iters; ++i)
    KF_CUDA(cudaMemcpyAsync(dst.data, src.data, src.nbytes(), cudaMemcpyDeviceToDevice, nullptr));
  KF_CUDA(cudaEventRecord(b, nullptr));
  KF_CUDA(cudaEventSynchronize(b));
  float ms = 0.f;
  KF_CUDA(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / iters;
}

int64_t cuda_free_bytes() {
  size_t free_b = 0, total_b = 0;
  KF_CUDA(cudaMemGetInfo(&free_b, &total_b));
  return static_cast<int64_t>(free_b);
}

std::string cuda_device_name(int device) {
  cudaDeviceProp prop{};
  KF_CUDA(cudaGetDeviceProperties(&prop, device));
  return fmt::format("{} ({} SMs, {} MB L2)", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
}

}  // namespace kf

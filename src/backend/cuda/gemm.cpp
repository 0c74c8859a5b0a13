// GEMMs (gemm.h): CUTLASS's for decode-sized batches, cuBLASLt's otherwise.
// cuBLASLt's column-major view: Y[m, n] = Wᵀ[m, k] · X[k, n]; row-major
// w [m, k] is column-major [k, m].
#include "backend/cuda/gemm.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "backend/cuda/gemm_cutlass.h"
#include "backend/cuda/kernels.h"

namespace kf::cuda {

#ifndef KINFER_HAVE_CUTLASS
// Built without CUTLASS (CMake did not find it): every GEMM is cuBLASLt's.
bool cutlass_gemm_built() { return false; }
bool cutlass_gemm_supported(int64_t, int64_t, int64_t, int, const void*, const void*, const void*) { return false; }
cudaError_t cutlass_gemm_prepare() { return cudaSuccess; }
const char* cutlass_gemm(const void*, const void*, void*, int64_t, int64_t, int64_t, int, cudaStream_t) {
  return "this kinfer was built without CUTLASS";
}
const char* cutlass_gemm_split_k(const void*, const void*, float*, int64_t, int64_t, int64_t, int, int,
                                 cudaStream_t) {
  return "this kinfer was built without CUTLASS";
}
const char* cutlass_gemm_silu_mul(const void*, const void*, void*, int64_t, int64_t, int64_t, int, cudaStream_t) {
  return "this kinfer was built without CUTLASS";
}
#endif

namespace {

constexpr int64_t kWorkspace = 32 << 20;
constexpr int kCandidates = 8;

const char* status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed (often an earlier kernel's fault: rerun with KINFER_CUDA_SYNC=1)";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
  }
}

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt {}: {} (status {})", what, status_name(s), static_cast<int>(s));
}

// Largest power of two (<= 256) that divides every address.
int alignment(std::initializer_list<const void*> ps) {
  uintptr_t bits = 256;
  for (const void* p : ps)
    if (p) bits |= reinterpret_cast<uintptr_t>(p);
  return static_cast<int>(bits & (~bits + 1));
}

// Events for timing, destroyed on every path.
struct EventPair {
  cudaEvent_t a = nullptr, b = nullptr;
  EventPair() {
    KF_CUDA(cudaEventCreate(&a));
    KF_CUDA(cudaEventCreate(&b));
  }
  ~EventPair() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
};

}  // namespace

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

Gemm::Gemm(Allocator& device_memory, cudaStream_t stream, int num_sms, bool tune, bool cutlass)
    : mem_(device_memory),
      stream_(stream),
      tune_(tune),
      cutlass_(cutlass && cutlass_gemm_built()),
      num_sms_(num_sms) {
  check_lt(cublasLtCreate(&lt_), "cublasLtCreate");
  workspace_ = Buffer(DType::U8, {kWorkspace}, mem_);
  if (cutlass_) KF_CUDA(cutlass_gemm_prepare());
}

Gemm::~Gemm() {
  plans_.clear();
  if (lt_) cublasLtDestroy(lt_);
}

void Gemm::run(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y, bool capturing) {
  execute(x, w, bias, 1, y, capturing);
}

void Gemm::run_split_k(const Tensor& x, const Tensor& w, int slices, const Tensor& partials, bool capturing) {
  const int64_t k = w.dim(1), m = w.dim(0), n = x.numel() / k;
  KF_CHECK(slices >= 1 && k % (8 * slices) == 0 && partials.dtype == DType::F32 && partials.numel() >= slices * n * m,
           "split-K GEMM: k {} in {} slices, partials {} {}", k, slices, dtype_name(partials.dtype),
           partials.shape_str());
  execute(x, w, nullptr, slices, partials, capturing);
}

bool Gemm::runs_cutlass(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y, int slices) const {
  const int64_t k = w.dim(1), m = w.dim(0), n = k > 0 ? x.numel() / k : 0;
  return cutlass_ && !bias && x.dtype == DType::BF16 && w.dtype == DType::BF16 &&
         y.dtype == (slices > 1 ? DType::F32 : DType::BF16) &&
         cutlass_gemm_supported(m, n, k, slices, x.data, w.data, y.data);
}

bool Gemm::runs_silu_mul(const Tensor& x, const Tensor& w, const Tensor& ffn) const {
  return w.dim(0) % 16 == 0 && ffn.dtype == DType::BF16 && ffn.numel() * 2 == x.numel() / w.dim(1) * w.dim(0) &&
         runs_cutlass(x, w, nullptr, ffn, 1);
}

void Gemm::run_silu_mul(const Tensor& x, const Tensor& w, const Tensor& ffn) {
  const int64_t k = w.dim(1), m = w.dim(0), n = x.numel() / k;
  KF_CHECK(runs_silu_mul(x, w, ffn), "gate|up GEMM with silu_mul: CUTLASS's kernel does not take {} rows x [{}, {}]",
           n, m, k);
  if (n == 0) return;
  if (const char* err = cutlass_gemm_silu_mul(x.data, w.data, ffn.data, n, m, k, num_sms_, stream_))
    fail("CUTLASS gate|up GEMM with silu_mul of {} rows x [{}, {}] failed: {}", n, m, k, err);
}

void Gemm::execute(const Tensor& x, const Tensor& w, const Tensor* bias, int slices, const Tensor& y,
                   bool capturing) {
  const int64_t k = w.dim(1), m = w.dim(0), n = x.numel() / k;  // in, out, rows
  if (n == 0) return;
  if (runs_cutlass(x, w, bias, y, slices)) {
    const char* err = slices > 1 ? cutlass_gemm_split_k(x.data, w.data, static_cast<float*>(y.data), n, m, k, slices,
                                                        num_sms_, stream_)
                                 : cutlass_gemm(x.data, w.data, y.data, n, m, k, num_sms_, stream_);
    if (err)
      fail("CUTLASS GEMM of {} rows x [{}, {}]{} failed: {}", n, m, k,
           slices > 1 ? fmt::format(" in {} K slices", slices) : "", err);
    return;
  }
  const int al = alignment({x.data, w.data, y.data, bias ? bias->data : nullptr});
  GemmPlan& p = plan(m, n, k, bias, al, slices, x, w, y, capturing);
  const cublasStatus_t st = launch(p, bias, x, w, y, p.algo);
  if (st != CUBLAS_STATUS_SUCCESS)
    fail("cuBLASLt matmul of {} rows x [{}, {}] ({} out{}) failed: {} (status {})", n, m, k, dtype_name(y.dtype),
         slices > 1 ? fmt::format(", {} K slices", slices) : "", status_name(st), static_cast<int>(st));
}

cublasStatus_t Gemm::launch(GemmPlan& p, const Tensor* bias, const Tensor& x, const Tensor& w, const Tensor& y,
                            const cublasLtMatmulAlgo_t& algo) {
  if (bias) {
    const cublasStatus_t st =
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias->data, sizeof(void*));
    if (st != CUBLAS_STATUS_SUCCESS) return st;
  }
  const float alpha = 1.f, beta = 0.f;
  return cublasLtMatmul(lt_, p.desc, &alpha, w.data, p.a, x.data, p.b, &beta, y.data, p.c, y.data, p.c, &algo,
                        workspace_.view().data, kWorkspace, stream_);
}

GemmPlan& Gemm::plan(int64_t m, int64_t n, int64_t k, const Tensor* bias_t, int align, int slices, const Tensor& x,
                     const Tensor& w, const Tensor& y, bool capturing) {
  const bool bias = bias_t != nullptr;
  const bool f32_out = y.dtype == DType::F32;
  const Key key = std::make_tuple(m, n, k, bias, align, f32_out, slices);
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
  // Split K: entry s of the batch is the s-th k/slices columns of w and x
  // (both keep their leading dimension k) and its own [n, m] output.
  const int64_t ks = k / slices;
  check_lt(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, ks, m, k), "layout w");
  check_lt(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, ks, n, k), "layout x");
  check_lt(cublasLtMatrixLayoutCreate(&p->c, f32_out ? CUDA_R_32F : CUDA_R_16BF, m, n, m), "layout y");
  if (slices > 1) {
    const int32_t count = slices;
    const int64_t mn = m * n;
    for (cublasLtMatrixLayout_t l : {p->a, p->b, p->c})
      check_lt(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
               "batch count");
    for (auto [l, stride] : {std::pair{p->a, ks}, std::pair{p->b, ks}, std::pair{p->c, mn}})
      check_lt(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                sizeof stride),
               "batch stride");
  }
  cublasLtMatmulPreference_t pref = nullptr;
  check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const uint64_t ws = kWorkspace;
  const uint32_t al = static_cast<uint32_t>(align);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al);
  cublasLtMatmulHeuristicResult_t res[kCandidates]{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(lt_, p->desc, p->a, p->b, p->c, p->c, pref, tune_ ? kCandidates : 1, res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  check_lt(st, "cublasLtMatmulAlgoGetHeuristic");
  KF_CHECK(found > 0, "cuBLASLt found no algorithm for a {}x{}x{} bf16 GEMM (alignment {})", m, n, k, align);
  p->algo = res[0].algo;
  if (found > 1 && !capturing) time_candidates(*p, res, found, bias_t, x, w, y);
  return *plans_.emplace(key, std::move(p)).first->second;
}

// Each candidate: one warm-up, then 5 runs, each after L2 is flushed (in a
// decode step the weights come from HBM: a GEMM whose weights stay in L2
// between back-to-back runs would rank the candidates wrongly).
void Gemm::time_candidates(GemmPlan& p, const cublasLtMatmulHeuristicResult_t* res, int found, const Tensor* bias,
                           const Tensor& x, const Tensor& w, const Tensor& y) {
  int dev = 0, l2 = 0;
  KF_CUDA(cudaGetDevice(&dev));
  KF_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
  Buffer flush(DType::U8, {std::max<int64_t>(2 * static_cast<int64_t>(l2), 1 << 20)}, mem_);
  EventPair ev;
  float best = 1e30f;
  for (int i = 0; i < found; ++i) {
    if (launch(p, bias, x, w, y, res[i].algo) != CUBLAS_STATUS_SUCCESS) continue;
    float total = 0.f;
    bool ok = true;
    for (int r = 0; r < 5 && ok; ++r) {
      KF_CUDA(cudaMemsetAsync(flush.view().data, r, flush.view().nbytes(), stream_));
      KF_CUDA(cudaEventRecord(ev.a, stream_));
      ok = launch(p, bias, x, w, y, res[i].algo) == CUBLAS_STATUS_SUCCESS;
      KF_CUDA(cudaEventRecord(ev.b, stream_));
      KF_CUDA(cudaEventSynchronize(ev.b));
      float ms = 0.f;
      KF_CUDA(cudaEventElapsedTime(&ms, ev.a, ev.b));
      total += ms;
    }
    if (ok && total < best) {
      best = total;
      p.algo = res[i].algo;
    }
  }
}

}  // namespace kf::cuda

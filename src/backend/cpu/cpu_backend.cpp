#include "backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>

#include "backend/cpu/attention.h"
#include "util/thread_pool.h"

// The batch-invariance argument below relies on each product being rounded
// before it is added: no fused multiply-add contraction. Baseline x86-64 has no
// FMA; clang is told explicitly, and a GCC build with FMA enabled is refused.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__FMA__)
#error "cpu_backend.cpp must be built without FMA (-mfma/-march=...) to stay batch-invariant"
#endif

namespace kf {
namespace {

// ---- checks ------------------------------------------------------------------

void check_f32(const Tensor& t, const char* op, const char* what) {
  KF_CHECK(t.device == Device::CPU && t.dtype == DType::F32 && t.is_contiguous(),
           "cpu {}: {} must be a contiguous F32 CPU tensor (got {} {} on {})", op, what,
           dtype_name(t.dtype), t.shape_str(), t.device == Device::CPU ? "CPU" : "CUDA");
}

void check_i32(const Tensor& t, const char* op, const char* what, int64_t n) {
  KF_CHECK(t.device == Device::CPU && t.dtype == DType::I32 && t.is_contiguous() && t.numel() == n,
           "cpu {}: {} must be {} contiguous I32 values on the CPU (got {} {})", op, what, n,
           dtype_name(t.dtype), t.shape_str());
}

// [rows, last] view of a tensor's memory, last = the size of its last dim.
int64_t last_dim(const Tensor& t) { return t.ndim == 0 ? 1 : t.dim(-1); }

// ---- matmul ------------------------------------------------------------------

// 4 floats; GCC/clang vector extensions compile to SSE on baseline x86-64 and
// act lane-wise with IEEE semantics (no reassociation).
using v4 = float __attribute__((vector_size(16)));

inline v4 load4(const float* p) {
  v4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

constexpr int kTileRows = 3;  // rows of x per micro-tile
constexpr int kTileCols = 4;  // rows of w (outputs) per micro-tile

// y[r, c] = x[r, :] . w[c, :] (+ bias[c]) for an R x C tile. Each element is
// computed by the same sequence of roundings whatever R and C are: that is the
// batch-invariance contract of the header.
template <int R, int C>
void micro_tile(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t in,
                const float* bias, float* y, int64_t ldy) {
  v4 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = v4{0.f, 0.f, 0.f, 0.f};
  int64_t k = 0;
  for (; k + 4 <= in; k += 4) {
    v4 xv[R];
    for (int r = 0; r < R; ++r) xv[r] = load4(x + r * ldx + k);
    for (int c = 0; c < C; ++c) {
      const v4 wv = load4(w + c * ldw + k);
      for (int r = 0; r < R; ++r) acc[r][c] += xv[r] * wv;
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      float s = (acc[r][c][0] + acc[r][c][1]) + (acc[r][c][2] + acc[r][c][3]);
      for (int64_t t = k; t < in; ++t) s += x[r * ldx + t] * w[c * ldw + t];
      if (bias) s += bias[c];
      y[r * ldy + c] = s;
    }
  }
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, const float*, float*,
                        int64_t);
constexpr TileFn kTiles[kTileRows][kTileCols] = {
    {micro_tile<1, 1>, micro_tile<1, 2>, micro_tile<1, 3>, micro_tile<1, 4>},
    {micro_tile<2, 1>, micro_tile<2, 2>, micro_tile<2, 3>, micro_tile<2, 4>},
    {micro_tile<3, 1>, micro_tile<3, 2>, micro_tile<3, 3>, micro_tile<3, 4>},
};

// Weight rows per cache block: about 192 KiB of w stays hot while every row of
// x streams past it.
int64_t cols_per_block(int64_t in) {
  const int64_t cols = (192 * 1024) / (4 * std::max<int64_t>(in, 1));
  return std::max<int64_t>(kTileCols, cols / kTileCols * kTileCols);
}

// Output columns [c0, c1) of y = x w^T (+ bias); x [n, in], w [out, in], y [n, out].
void matmul_cols(const float* x, const float* w, const float* bias, float* y, int64_t n, int64_t in,
                 int64_t out, int64_t c0, int64_t c1) {
  const int64_t block = cols_per_block(in);
  for (int64_t cb = c0; cb < c1; cb += block) {
    const int64_t ce = std::min(cb + block, c1);
    for (int64_t r = 0; r < n; r += kTileRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kTileRows, n - r));
      int64_t c = cb;
      if (rows == 1)  // decode: 8 weight rows stream at once (memory-bound)
        for (; c + 8 <= ce; c += 8)
          micro_tile<1, 8>(x + r * in, in, w + c * in, in, in, bias ? bias + c : nullptr, y + r * out + c, out);
      for (; c < ce; c += kTileCols) {
        const int cols = static_cast<int>(std::min<int64_t>(kTileCols, ce - c));
        kTiles[rows - 1][cols - 1](x + r * in, in, w + c * in, in, in, bias ? bias + c : nullptr,
                                   y + r * out + c, out);
      }
    }
  }
}

// ---- the backend -------------------------------------------------------------

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuOptions& opt) : pool_(opt.n_threads), use_blas_(opt.use_blas) {}

  Device device() const override { return Device::CPU; }
  std::string name() const override {
    return fmt::format("cpu ({} threads{})", pool_.size(), use_blas_ ? ", OpenBLAS matmul" : "");
  }

  void upload(const Tensor& dst, const void* host) override {
    KF_CHECK(dst.device == Device::CPU, "cpu upload: destination is not a CPU tensor");
    if (dst.data != host) std::memcpy(dst.data, host, dst.nbytes());
  }
  void download(void* host, const Tensor& src) override {
    KF_CHECK(src.device == Device::CPU, "cpu download: source is not a CPU tensor");
    if (src.data != host) std::memcpy(host, src.data, src.nbytes());
  }

  void embed(const Tensor& table, const Tensor& ids, const Tensor& out) override {
    check_f32(table, "embed", "table");
    check_f32(out, "embed", "out");
    KF_CHECK(table.ndim == 2, "cpu embed: table must be [vocab, d], got {}", table.shape_str());
    const int64_t vocab = table.dim(0), d = table.dim(1), n = ids.numel();
    check_i32(ids, "embed", "ids", n);
    KF_CHECK(out.numel() == n * d, "cpu embed: out {} does not hold {} rows of {}", out.shape_str(),
             n, d);
    const int32_t* id = ids.ptr<int32_t>();
    const float* src = table.ptr<float>();
    float* dst = out.ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      KF_CHECK(id[i] >= 0 && id[i] < vocab, "cpu embed: id {} at row {} is outside [0, {})", id[i],
               i, vocab);
      std::memcpy(dst + i * d, src + int64_t(id[i]) * d, d * sizeof(float));
    }
  }

  void matmul(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& y) override {
    check_f32(x, "matmul", "x");
    check_f32(w, "matmul", "w");
    check_f32(y, "matmul", "y");
    KF_CHECK(w.ndim == 2, "cpu matmul: w must be [out, in], got {}", w.shape_str());
    const int64_t out = w.dim(0), in = w.dim(1);
    KF_CHECK(last_dim(x) == in && x.numel() % in == 0, "cpu matmul: x {} does not match w {}",
             x.shape_str(), w.shape_str());
    const int64_t n = x.numel() / in;
    KF_CHECK(y.numel() == n * out, "cpu matmul: y {} is not [{}, {}]", y.shape_str(), n, out);
    const float* b = nullptr;
    if (bias) {
      check_f32(*bias, "matmul", "bias");
      KF_CHECK(bias->numel() == out, "cpu matmul: bias {} is not [{}]", bias->shape_str(), out);
      b = bias->ptr<float>();
    }
    if (n == 0 || out == 0) return;
    const float *xp = x.ptr<float>(), *wp = w.ptr<float>();
    float* yp = y.ptr<float>();
    if (use_blas_) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(out),
                  static_cast<int>(in), 1.f, xp, static_cast<int>(in), wp, static_cast<int>(in), 0.f,
                  yp, static_cast<int>(out));
      if (b)
        for (int64_t r = 0; r < n; ++r)
          for (int64_t c = 0; c < out; ++c) yp[r * out + c] += b[c];
      return;
    }
    // Threads split the output columns in whole micro-tiles; tiny products stay serial.
    const int64_t tiles = (out + kTileCols - 1) / kTileCols;
    const int64_t min_tiles = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, n * in * kTileCols));
    pool_.parallel_for(
        tiles,
        [&](int64_t t0, int64_t t1) {
          matmul_cols(xp, wp, b, yp, n, in, out, t0 * kTileCols, std::min(out, t1 * kTileCols));
        },
        min_tiles);
  }

  void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override {
    check_f32(x, "rmsnorm", "x");
    check_f32(y, "rmsnorm", "y");
    check_f32(weight, "rmsnorm", "weight");
    const int64_t d = weight.numel();
    KF_CHECK(last_dim(x) == d && y.numel() == x.numel(), "cpu rmsnorm: x {}, weight {}, y {} differ",
             x.shape_str(), weight.shape_str(), y.shape_str());
    const int64_t rows = x.numel() / d;
    const float *xp = x.ptr<float>(), *wp = weight.ptr<float>();
    float* yp = y.ptr<float>();
    for_rows(rows, d, [&](int64_t r) {
      const float* xr = xp + r * d;
      float* yr = yp + r * d;
      double ss = 0;  // per-row sum in index order: independent of the batch
      for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
      const float inv = 1.f / std::sqrt(static_cast<float>(ss / d) + eps);
      for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] * inv) * wp[i];
    });
  }

  void add(const Tensor& x, const Tensor& y) override {
    check_f32(x, "add", "x");
    check_f32(y, "add", "y");
    KF_CHECK(x.numel() == y.numel(), "cpu add: x {} and y {} differ", x.shape_str(), y.shape_str());
    float* xp = x.ptr<float>();
    const float* yp = y.ptr<float>();
    const int64_t n = x.numel();
    pool_.parallel_for(
        n, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; ++i) xp[i] += yp[i]; }, 1 << 14);
  }

  void rope(const Tensor& x, const Tensor& positions, const RopeParams& p) override {
    check_f32(x, "rope", "x");
    KF_CHECK(x.ndim == 3, "cpu rope: x must be [n, heads, head_dim], got {}", x.shape_str());
    const int64_t n = x.dim(0), heads = x.dim(1), hd = x.dim(2);
    check_i32(positions, "rope", "positions", n);
    const int rot = p.rotary_dim > 0 ? p.rotary_dim : static_cast<int>(hd);
    KF_CHECK(rot % 2 == 0 && rot <= hd && rot <= kMaxRotary && p.inv_freq,
             "cpu rope: rotary_dim {} must be even, <= head_dim {} and <= {}, with inv_freq set", rot,
             hd, kMaxRotary);
    const int half = rot / 2;
    const int32_t* pos = positions.ptr<int32_t>();
    float* xp = x.ptr<float>();
    for_rows(n, heads * hd, [&](int64_t r) {
      float cs[kMaxRotary / 2], sn[kMaxRotary / 2];
      for (int i = 0; i < half; ++i) {
        // As HF: the angle is a float product, then cos/sin of it.
        const float angle = static_cast<float>(pos[r]) * p.inv_freq[i];
        cs[i] = static_cast<float>(std::cos(double(angle)));
        sn[i] = static_cast<float>(std::sin(double(angle)));
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = xp + (r * heads + h) * hd;
        for (int i = 0; i < half; ++i) {  // rotate_half: pairs (i, i + half)
          const float a = v[i], b = v[i + half];
          v[i] = a * cs[i] - b * sn[i];
          v[i + half] = b * cs[i] + a * sn[i];
        }
      }
    });
  }

  void silu_mul(const Tensor& gate, const Tensor& up, const Tensor& out) override {
    check_f32(gate, "silu_mul", "gate");
    check_f32(up, "silu_mul", "up");
    check_f32(out, "silu_mul", "out");
    KF_CHECK(gate.numel() == up.numel() && gate.numel() == out.numel(),
             "cpu silu_mul: gate {}, up {}, out {} differ", gate.shape_str(), up.shape_str(),
             out.shape_str());
    const float *g = gate.ptr<float>(), *u = up.ptr<float>();
    float* o = out.ptr<float>();
    pool_.parallel_for(
        gate.numel(),
        [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) o[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
        },
        1 << 12);
  }

  void kv_write(const KvLayer& kv, const Tensor& k, const Tensor& v, const Tensor& slots) override {
    cpu_kv_write(kv, k, v, slots);
  }
  void kv_copy_pages(const KvLayer& kv, const Tensor& src, const Tensor& dst) override {
    cpu_kv_copy_pages(kv, src, dst);
  }
  void attention(const Tensor& q, const KvLayer& kv, const AttnBatch& batch, const AttnPolicy& policy,
                 float scale, const Tensor& out, PageSelection* sel) override {
    const ParallelFor pf = [this](int64_t n, const std::function<void(int64_t)>& fn) {
      pool_.parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) fn(i);
      });
    };
    cpu_attention(q, kv, batch, policy, scale, out, sel, attn_ws_, pf);
  }

 private:
  static constexpr int kMaxRotary = 1024;

  // Runs fn(r) for rows [0, rows) of `width` floats each, threaded when large.
  template <typename Fn>
  void for_rows(int64_t rows, int64_t width, const Fn& fn) {
    const int64_t min_rows = std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, width));
    pool_.parallel_for(
        rows, [&](int64_t b, int64_t e) { for (int64_t r = b; r < e; ++r) fn(r); }, min_rows);
  }

  ThreadPool pool_;
  bool use_blas_ = false;
  CpuAttnWorkspace attn_ws_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const CpuOptions& opt) {
  CpuOptions o = opt;
  if (!o.use_blas) {
    const char* env = std::getenv("KINFER_CPU_BLAS");
    o.use_blas = env && std::string(env) == "1";
  }
  return std::make_unique<CpuBackend>(o);
}

std::unique_ptr<Backend> make_cpu_backend(int n_threads) {
  CpuOptions o;
  o.n_threads = n_threads;
  return make_cpu_backend(o);
}

}  // namespace kf
